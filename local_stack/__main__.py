"""`lki-stack up|down|status|logs|env`: the local stack, detached, in `.stack/` by default."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from local_stack import tools
from local_stack.stack import Stack, StackError


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lki-stack", description=__doc__)
    p.add_argument("--dir", default=str(tools.REPO_ROOT / ".stack"), help="stack directory (default: .stack)")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the stack detached (idempotent)")
    up.add_argument("--slot", type=int, default=0, help="port slot: ports 20000+100*slot… (default 0)")
    up.add_argument("--namespace", default="livekit-ingress")
    up.add_argument("--no-control-plane", action="store_true", help="do not run the operator and the shim")
    up.add_argument("--manifest", action="append", default=[], help="extra manifest to apply after the CRDs")
    down = sub.add_parser("down", help="stop the stack (idempotent)")
    down.add_argument(
        "--purge", action="store_true", help="also delete the stack directory (etcd data, logs)"
    )
    sub.add_parser("status", help="components, pids, health (JSON)")
    logs = sub.add_parser("logs", help="tail of every component's log")
    logs.add_argument("-n", type=int, default=30)
    logs.add_argument("components", nargs="*")
    sub.add_parser("env", help="print the env file to `source`")
    a = p.parse_args(argv)
    root = Path(a.dir)

    try:
        if a.cmd == "up":
            if (root / "stack.json").exists():
                old = Stack.load(root, log=_say)
                stack = old if any(old.is_running(n) for n in old.names()) else _new(root, a)
            else:
                stack = _new(root, a)
            stack.start()
            _say(f"==> stack up in {stack.startup_seconds.get('total', 0):.1f}s")
            print(stack.usage())
        elif a.cmd == "down":
            if (root / "stack.json").exists():
                Stack.load(root, log=_say).stop()
            if a.purge and root.exists():
                shutil.rmtree(root)
                _say(f"==> removed {root}")
            _say("==> stack down")
        elif a.cmd == "status":
            if not (root / "stack.json").exists():
                print(json.dumps({"stack": None}))
                return 1
            status = Stack.load(root).status()
            print(json.dumps(status, indent=1))
            return 0 if all(s["healthy"] for s in status.values()) else 1
        elif a.cmd == "logs":
            print(Stack.load(root).tail_logs(a.components or None, a.n))
        elif a.cmd == "env":
            print(Stack.load(root).env_file.read_text(), end="")
    except StackError as exc:
        _say(f"error: {exc}")
        return 1
    return 0


def _new(root: Path, a: argparse.Namespace) -> Stack:
    return Stack(
        root,
        a.slot,
        namespace=a.namespace,
        control_plane=not a.no_control_plane,
        manifests=a.manifest,
        log=_say,
    )


if __name__ == "__main__":
    sys.exit(main())
