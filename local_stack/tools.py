"""Where the local stack's tools live: the per-user cache that tools/install.sh fills.

Versions come from tools/versions.env (KEY=VALUE lines), the single place they are pinned.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VERSIONS_FILE = REPO_ROOT / "tools" / "versions.env"
VENV_BIN = REPO_ROOT / ".venv" / "bin"


class ToolNotFound(RuntimeError):
    """A binary the stack needs is neither in the cache nor on PATH."""


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines; blank lines, comments and `export ` prefixes allowed; quotes stripped."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    return parse_env_file(path.read_text())


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("LKI_CACHE"):
        return Path(env["LKI_CACHE"])
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".cache")
    return Path(base) / "livekit-ingress-k8s"


def tool_dirs(
    versions: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> list[Path]:
    """The bin dirs install.sh fills, in PATH order (they may not exist yet)."""
    v = read_versions() if versions is None else versions
    bin_dir = cache_dir(environ) / "bin"
    return [
        bin_dir / f"kubernetes-{v['KUBERNETES_VERSION']}",
        bin_dir / f"livekit-server-{v['LIVEKIT_SERVER_VERSION']}",
        bin_dir / f"helm-{v['HELM_VERSION']}",
    ]


def search_path(extra_first: list[Path] | None = None, base_path: str | None = None) -> str:
    """A PATH value: extra dirs, the venv's bin, the tool dirs, then the inherited PATH."""
    dirs = [str(d) for d in (extra_first or [])]
    dirs += [str(VENV_BIN)] + [str(d) for d in tool_dirs()]
    inherited = os.environ.get("PATH", "") if base_path is None else base_path
    seen: set[str] = set()
    out: list[str] = []
    for d in dirs + [p for p in inherited.split(os.pathsep) if p]:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return os.pathsep.join(out)


def find_tool(name: str) -> Path:
    """A binary by name: the venv, then the cached tool dirs, then the inherited PATH.

    kubectl is deliberately not taken from /usr/bin (on some machines that is a cloud-SDK
    dispatcher, not kubectl).
    """
    for d in [VENV_BIN, *tool_dirs()]:
        candidate = d / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    if name != "kubectl":
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ToolNotFound(f"{name} not found; run `bash tools/install.sh` (cache: {cache_dir()})")


def go_sdk_check_binary(environ: Mapping[str, str] | None = None) -> Path | None:
    """The Go SDK check program built by install.sh (keyed by a hash of its sources), if any.

    The hash matches install.sh's: sha256 of go.mod, go.sum (if present), then the *.go
    files in byte order, first 12 hex digits.
    """
    import hashlib

    src = REPO_ROOT / "tests" / "go_sdk"
    if not (src / "go.mod").exists():
        return None
    files = [src / "go.mod"]
    if (src / "go.sum").exists():
        files.append(src / "go.sum")
    files += sorted(src.glob("*.go"), key=lambda p: p.name.encode())
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]
    binary = cache_dir(environ) / "bin" / f"go-sdk-check-{digest}" / "go-sdk-check"
    return binary if binary.exists() else None
