"""The local stack: etcd, kube-apiserver, kube-controller-manager, livekit-server, the
process node, and the project's control plane (operator, shim), as local processes.

One `Stack` per directory; its ports come from a slot number (`Ports.for_slot`), so a
`make up` stack (slot 0, in `.stack/`) and test stacks (slots 1…, in tmp dirs) run side
by side. Every component runs in its own session with its output in
`<dir>/logs/<component>.log` and a pid file in `<dir>/pids/`, so a later process (such as
`lki-stack down`) can find and stop it.

    stack = Stack(Path(".stack")).start()      # blocks until everything is healthy
    stack.kill_component("operator")            # SIGKILL
    stack.start_component("operator")           # and back
    stack.stop()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from local_stack import tools
from local_stack.procs import ProcessRegistry, ProcRef, terminate

API_KEY = "devkey"
API_SECRET = "secret"
DEFAULT_NAMESPACE = "livekit-ingress"
LIVEKIT_SECRET = "livekit-api"  # what media pods join rooms with (operator setting LIVEKIT_SECRET_NAME)
MEDIA_SA = "lki-media"  # the media pods' ServiceAccount (operator setting MEDIA_SERVICE_ACCOUNT)
BASE_PORT = 20000
SLOT_STRIDE = 100
MAX_SLOT = 14


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Ports:
    """Every port of one stack, consecutive from a base (all on 127.0.0.1)."""

    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    livekit: int
    livekit_rtc_tcp: int  # reserved: livekit-server runs with ICE-TCP off (see livekit_config)
    livekit_rtc_udp: int
    shim: int
    operator_health: int
    node_health: int
    rtmp: int
    whip: int
    operator_metrics: int
    whip_udp: int  # the front door's WHIP media relay

    @classmethod
    def from_base(cls, base: int) -> Ports:
        return cls(*(base + i for i in range(len(fields(cls)))))

    @classmethod
    def for_slot(cls, slot: int) -> Ports:
        if not 0 <= slot <= MAX_SLOT:
            raise ValueError(f"slot must be within 0..{MAX_SLOT}")
        return cls.from_base(BASE_PORT + SLOT_STRIDE * slot)

    def all(self) -> dict[str, int]:
        return asdict(self)

    def busy(self) -> list[int]:
        """Ports someone already listens on (TCP; UDP for the rtc port)."""
        out = []
        for name, port in self.all().items():
            kind = socket.SOCK_DGRAM if name in ("livekit_rtc_udp", "whip_udp") else socket.SOCK_STREAM
            with socket.socket(socket.AF_INET, kind) as s:
                if kind == socket.SOCK_STREAM:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    out.append(port)
        return out


def pod_cidr_for_slot(slot: int) -> str:
    """127.0.16.0/20 for slot 0, 127.0.32.0/20 for slot 1, … (127.0.0.0/20 holds the host IP)."""
    return str(ipaddress.IPv4Network(f"127.0.{16 * (slot + 1)}.0/20"))


def pod_cidr_for_base(port_base: int) -> str:
    """For stacks on an explicit port base: 127.<n>.0.0/20, clear of the slots' 127.0.x.y."""
    return str(ipaddress.IPv4Network(f"127.{1 + (port_base // SLOT_STRIDE) % 250}.0.0/20"))


@dataclass
class Component:
    """How to run and check one process of the stack."""

    name: str
    argv: list[str]
    env: dict[str, str]
    health: Callable[[], bool]
    timeout: float = 60.0
    grace: float = 10.0
    cwd: Path | None = None


@dataclass
class StackOptions:
    """What `Stack` persists in `<dir>/stack.json` (so `lki-stack down` can rebuild it)."""

    slot: int = 0
    port_base: int | None = None
    namespace: str = DEFAULT_NAMESPACE
    control_plane: bool = True
    node_name: str = "process-node"
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    pod_credentials: str = "serviceaccount"
    extra_env: dict[str, str] = field(default_factory=dict)
    manifests: list[str] = field(default_factory=list)


def _http_ok(url: str, token: str | None = None, ca: Path | None = None, insecure: bool = False) -> bool:
    ctx: ssl.SSLContext | None = None
    if url.startswith("https"):
        if insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _run(argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, **kw)


class Stack:
    """A local stack rooted at `root`. Not thread-safe; one controller process at a time."""

    ORDER = (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "livekit-server",
        "process-node",
        "operator",
        "shim",
        "frontdoor",
    )
    CONTROL_PLANE = ("operator", "shim", "frontdoor")

    def __init__(
        self,
        root: Path | str,
        slot: int = 0,
        *,
        port_base: int | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        control_plane: bool = True,
        node_name: str = "process-node",
        backoff: tuple[float, float] = (10.0, 300.0),
        pod_credentials: str = "serviceaccount",
        extra_env: Mapping[str, str] | None = None,
        manifests: Sequence[Path | str] = (),
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.options = StackOptions(
            slot=slot,
            port_base=port_base,
            namespace=namespace,
            control_plane=control_plane,
            node_name=node_name,
            backoff_base=backoff[0],
            backoff_max=backoff[1],
            pod_credentials=pod_credentials,
            extra_env=dict(extra_env or {}),
            manifests=[str(Path(m).resolve()) for m in manifests],
        )
        if port_base is None:
            self.ports = Ports.for_slot(slot)
            self.pod_cidr = pod_cidr_for_slot(slot)
        else:
            self.ports = Ports.from_base(port_base)
            self.pod_cidr = pod_cidr_for_base(port_base)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._popen: dict[str, subprocess.Popen[bytes]] = {}
        self._extra: dict[str, Component] = {}
        self.startup_seconds: dict[str, float] = {}

    @classmethod
    def load(cls, root: Path | str, log: Callable[[str], None] | None = None) -> Stack:
        """The stack whose settings were saved in `root` by an earlier `start()`."""
        path = Path(root) / "stack.json"
        if not path.exists():
            raise StackError(f"no stack in {root} (missing stack.json)")
        o = StackOptions(**json.loads(path.read_text()))
        return cls(
            root,
            o.slot,
            port_base=o.port_base,
            namespace=o.namespace,
            control_plane=o.control_plane,
            node_name=o.node_name,
            backoff=(o.backoff_base, o.backoff_max),
            pod_credentials=o.pod_credentials,
            extra_env=o.extra_env,
            manifests=o.manifests,
            log=log,
        )

    # --- paths, URLs, environment ---------------------------------------------------------

    @property
    def namespace(self) -> str:
        return self.options.namespace

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def pod_logs_dir(self) -> Path:
        return self.root / "logs" / "pods"

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def node_state_dir(self) -> Path:
        return self.root / "process-node"

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def livekit_url(self) -> str:
        """Where LiveKit API clients go: the shim (Ingress API; other services proxied)."""
        return f"http://127.0.0.1:{self.ports.shim}"

    @property
    def livekit_server_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.livekit}"

    @property
    def livekit_ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ports.livekit}"

    @property
    def rtmp_base_url(self) -> str:
        return f"rtmp://127.0.0.1:{self.ports.rtmp}/x"

    @property
    def whip_base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.whip}/w"

    @property
    def admin_token(self) -> str:
        path = self.pki_dir / "admin.token"
        if not path.exists():
            raise StackError("stack PKI not created yet")
        return path.read_text().strip()

    def log_path(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def pod_log_path(self, namespace: str, pod: str, container: str) -> Path:
        return self.pod_logs_dir / f"{namespace}_{pod}_{container}.log"

    @property
    def path(self) -> str:
        """PATH for clients: .venv/bin, the cached tools, then the inherited PATH."""
        return tools.search_path()

    @property
    def env(self) -> dict[str, str]:
        """What a client of the stack needs (also written to `<dir>/env`)."""
        return {
            "LIVEKIT_URL": self.livekit_url,
            "LIVEKIT_API_KEY": API_KEY,
            "LIVEKIT_API_SECRET": API_SECRET,
            "LIVEKIT_SERVER_URL": self.livekit_server_url,
            "KUBECONFIG": str(self.kubeconfig),
            "INGRESS_NAMESPACE": self.namespace,
            "RTMP_BASE_URL": self.rtmp_base_url,
            "WHIP_BASE_URL": self.whip_base_url,
            "LKI_STACK_DIR": str(self.root),
            "PATH": self.path,
        }

    def client_env(self) -> dict[str, str]:
        """os.environ overlaid with `env`: for subprocesses of tests (kubectl, helm, SDKs)."""
        return {**os.environ, **self.env}

    def control_plane_env(self) -> dict[str, str]:
        """The environment of the operator and the shim (see ingress_operator/config.py)."""
        return {
            **self._base_env(),
            "KUBECONFIG": str(self.kubeconfig),
            "INGRESS_NAMESPACE": self.namespace,
            "LIVEKIT_API_KEY": API_KEY,
            "LIVEKIT_API_SECRET": API_SECRET,
            "LIVEKIT_SERVER_URL": self.livekit_server_url,
            "SHIM_HOST": "127.0.0.1",
            "SHIM_PORT": str(self.ports.shim),
            "RTMP_BASE_URL": self.rtmp_base_url,
            "WHIP_BASE_URL": self.whip_base_url,
            "OPERATOR_HEALTH_PORT": str(self.ports.operator_health),
            "OPERATOR_METRICS_PORT": str(self.ports.operator_metrics),
            "OPERATOR_BIND": "127.0.0.1",
            "FRONTDOOR_BIND": "127.0.0.1",
            "FRONTDOOR_RTMP_PORT": str(self.ports.rtmp),
            "FRONTDOOR_HTTP_PORT": str(self.ports.whip),
            "FRONTDOOR_WHIP_UDP_PORT": str(self.ports.whip_udp),
            "LIVEKIT_SECRET_NAME": LIVEKIT_SECRET,
            # The process node runs the media pod's command as a process: the venv's script.
            "MEDIA_COMMAND": json.dumps([str(tools.VENV_BIN / "lki-media")]),
            **self.options.extra_env,
        }

    def _base_env(self) -> dict[str, str]:
        keep = ("HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "SSL_CERT_FILE", "SSL_CERT_DIR")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env["PATH"] = self.path
        env["PYTHONUNBUFFERED"] = "1"
        env["LKI_STACK_DIR"] = str(self.root)
        return env

    # --- components ---------------------------------------------------------------------------

    def add_component(self, component: Component) -> None:
        """Run one more process with the stack (started after the built-ins, stopped first)."""
        self._extra[component.name] = component

    def names(self) -> list[str]:
        order = [n for n in self.ORDER if self.options.control_plane or n not in self.CONTROL_PLANE]
        return order + list(self._extra)

    def component(self, name: str) -> Component:
        if name in self._extra:
            return self._extra[name]
        builders: dict[str, Callable[[], Component]] = {
            "etcd": self._etcd,
            "kube-apiserver": self._apiserver,
            "kube-controller-manager": self._controller_manager,
            "livekit-server": self._livekit,
            "process-node": self._process_node,
            "operator": lambda: self._ours("operator", "lki-operator", self.ports.operator_health),
            "shim": lambda: self._ours("shim", "lki-shim", self.ports.shim),
            "frontdoor": lambda: self._ours("frontdoor", "lki-frontdoor", self.ports.whip),
        }
        if name not in builders:
            raise KeyError(f"unknown component {name!r}; known: {', '.join(self.names())}")
        return builders[name]()

    def _etcd(self) -> Component:
        p = self.ports
        peer = f"http://127.0.0.1:{p.etcd_peer}"
        client = f"http://127.0.0.1:{p.etcd}"
        return Component(
            "etcd",
            [
                str(tools.find_tool("etcd")),
                "--name=lki",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=lki={peer}",
                "--logger=zap",
                "--log-outputs=stderr",
                "--log-level=warn",
            ],
            self._base_env(),
            lambda: _http_ok(f"{client}/health"),
            timeout=30,
            grace=5,
        )

    def _apiserver(self) -> Component:
        pki = self.pki_dir
        p = self.ports
        return Component(
            "kube-apiserver",
            [
                str(tools.find_tool("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{p.etcd}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={p.apiserver}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=RBAC",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                f"--cert-dir={pki / 'apiserver-certs'}",
            ],
            self._base_env(),
            lambda: _http_ok(f"{self.apiserver_url}/readyz", self.admin_token, pki / "ca.crt"),
            timeout=90,
            grace=10,
        )

    def _controller_manager(self) -> Component:
        pki = self.pki_dir
        kc = str(self.kubeconfig)
        return Component(
            "kube-controller-manager",
            [
                str(tools.find_tool("kube-controller-manager")),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports.controller_manager}",
                f"--cert-dir={pki / 'controller-manager-certs'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--profiling=false",
            ],
            self._base_env(),
            lambda: _http_ok(f"https://127.0.0.1:{self.ports.controller_manager}/healthz", insecure=True),
            timeout=60,
            grace=5,
        )

    def livekit_config(self) -> dict[str, Any]:
        p = self.ports
        return {
            "port": p.livekit,
            "bind_addresses": ["127.0.0.1"],
            # Media on loopback only: without the interface and IP filters livekit-server also
            # binds its UDP port on the machine's other interfaces, and its ICE-TCP port can only
            # bind all of them (0 turns it off; UDP on loopback needs no fallback).
            "rtc": {
                "tcp_port": 0,
                "udp_port": p.livekit_rtc_udp,
                "use_external_ip": False,
                "node_ip": "127.0.0.1",
                "enable_loopback_candidate": True,
                "interfaces": {"includes": ["lo"]},
                "ips": {"includes": ["127.0.0.1/32"]},
            },
            "keys": {API_KEY: API_SECRET},
            "logging": {"level": "info", "json": True},
        }

    def _livekit(self) -> Component:
        cfg = self.root / "livekit.yaml"
        return Component(
            "livekit-server",
            [str(tools.find_tool("livekit-server")), "--dev", f"--config={cfg}"],
            self._base_env(),
            lambda: _http_ok(f"{self.livekit_server_url}/"),
            timeout=30,
            grace=5,
        )

    def _process_node(self) -> Component:
        o = self.options
        return Component(
            "process-node",
            [
                str(tools.VENV_BIN / "lki-process-node"),
                f"--kubeconfig={self.kubeconfig}",
                f"--state-dir={self.node_state_dir}",
                f"--log-dir={self.pod_logs_dir}",
                f"--node-name={o.node_name}",
                f"--pod-cidr={self.pod_cidr}",
                f"--health-port={self.ports.node_health}",
                f"--backoff-base={o.backoff_base}",
                f"--backoff-max={o.backoff_max}",
                f"--pod-credentials={o.pod_credentials}",
            ],
            {**self._base_env(), **self.options.extra_env},
            lambda: _http_ok(f"http://127.0.0.1:{self.ports.node_health}/healthz"),
            timeout=60,
            grace=10,
        )

    def _ours(self, name: str, script: str, health_port: int) -> Component:
        """One of the project's own control-plane processes (operator, shim, front door)."""
        return Component(
            name,
            [str(tools.VENV_BIN / script)],
            self.control_plane_env(),
            lambda: _http_ok(f"http://127.0.0.1:{health_port}/healthz"),
            timeout=60,
            grace=10,
            cwd=tools.REPO_ROOT,
        )

    # --- process control --------------------------------------------------------------------

    def _pid_file(self, name: str) -> Path:
        return self.root / "pids" / f"{name}.json"

    def proc(self, name: str) -> ProcRef | None:
        """The component's process if it is running."""
        try:
            data = json.loads(self._pid_file(name).read_text())
        except (FileNotFoundError, ValueError):
            return None
        ref = ProcRef(pid=int(data["pid"]), ticks=data.get("ticks"), name=name)
        self._reap()
        return ref if ref.alive() else None

    def pid(self, name: str) -> int | None:
        ref = self.proc(name)
        return ref.pid if ref else None

    def is_running(self, name: str) -> bool:
        return self.proc(name) is not None

    def healthy(self, name: str) -> bool:
        return self.is_running(name) and self.component(name).health()

    def _reap(self) -> None:
        for p in self._popen.values():
            p.poll()

    def _forget(self, name: str) -> None:
        """Collect the exit status of our child `name` (it was signalled already)."""
        popen = self._popen.pop(name, None)
        if popen is None:
            return
        try:
            popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=5)

    def start_component(self, name: str, wait: bool = True) -> ProcRef:
        """Start one component (no-op if it runs) and wait until it is healthy."""
        ref = self.proc(name)
        if ref is not None:
            if wait:
                self.wait_healthy(name)
            return ref
        comp = self.component(name)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._pid_file(name).parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log_path(name), "ab") as out:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            out.write(f"\n=== {stamp} starting {name}: {shlex.join(comp.argv)}\n".encode())
            out.flush()
            popen = subprocess.Popen(
                comp.argv,
                env=comp.env,
                cwd=comp.cwd or self.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._popen[name] = popen
        ref = ProcRef.of(popen.pid, name=name)
        self._pid_file(name).write_text(json.dumps({"pid": ref.pid, "ticks": ref.ticks, "argv": comp.argv}))
        if wait:
            self.wait_healthy(name)
            self.startup_seconds[name] = round(time.monotonic() - started, 2)
        return ref

    def wait_healthy(self, name: str, timeout: float | None = None) -> None:
        comp = self.component(name)
        deadline = time.monotonic() + (timeout or comp.timeout)
        while True:
            if not self.is_running(name):
                raise StackError(f"{name} exited during startup\n{self.tail_logs([name], 40)}")
            if comp.health():
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{name} not healthy after {timeout or comp.timeout:g}s\n{self.tail_logs([name], 40)}"
                )
            time.sleep(0.1)

    def stop_component(self, name: str, grace: float | None = None) -> None:
        """SIGTERM its process group, SIGKILL after `grace` seconds; no-op if not running."""
        ref = self.proc(name)
        if ref is not None:
            terminate([ref], self.component(name).grace if grace is None else grace, reap=self._reap)
        self._forget(name)
        with contextlib.suppress(FileNotFoundError):
            self._pid_file(name).unlink()
        if name == "process-node":
            ProcessRegistry.kill_leftovers(self.node_state_dir / "processes.json")

    def kill_component(self, name: str) -> None:
        """SIGKILL (the process group), as a crash would; leaves the pid file to show it died."""
        ref = self.proc(name)
        if ref is None:
            return
        ref.signal_group(signal.SIGKILL)
        for _ in range(250):
            self._reap()
            if not ref.alive():
                break
            time.sleep(0.02)
        self._forget(name)

    def restart_component(self, name: str) -> ProcRef:
        self.stop_component(name)
        return self.start_component(name)

    async def astart_component(self, name: str) -> ProcRef:
        return await asyncio.to_thread(self.start_component, name)

    async def astop_component(self, name: str, grace: float | None = None) -> None:
        await asyncio.to_thread(self.stop_component, name, grace)

    async def akill_component(self, name: str) -> None:
        await asyncio.to_thread(self.kill_component, name)

    # --- the whole stack ----------------------------------------------------------------------

    def start(self) -> Stack:
        """Start (or complete) the stack; returns when every component is healthy."""
        t0 = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "stack.json").write_text(json.dumps(asdict(self.options), indent=1))
        busy = [p for p in self.ports.busy() if not any(self.is_running(n) for n in self.names())]
        if busy:
            raise StackError(f"ports already in use: {busy} (another stack in slot {self.options.slot}?)")
        self._ensure_pki()
        self._write_kubeconfig()
        (self.root / "livekit.yaml").write_text(yaml.safe_dump(self.livekit_config(), sort_keys=False))
        self.write_env_file()
        try:
            for name in self.names():
                if self.is_running(name):
                    self.log(f"    {name}: already running (pid {self.pid(name)})")
                    self.wait_healthy(name)
                    continue
                self.log(f"==> starting {name}")
                self.start_component(name)
                self.log(f"    {name}: healthy in {self.startup_seconds.get(name, 0):.1f}s")
                if name == "kube-apiserver":
                    self.bootstrap()
                elif name == "kube-controller-manager":
                    self.wait_service_accounts()
        except BaseException:
            self.log(f"!!  stack start failed; logs in {self.logs_dir}")
            raise
        self.startup_seconds["total"] = round(time.monotonic() - t0, 2)
        return self

    def stop(self) -> None:
        """Stop every component (reverse order); idempotent."""
        known = self.names()
        leftovers = [p.stem for p in (self.root / "pids").glob("*.json") if p.stem not in known]
        for name in list(reversed(known)) + leftovers:
            if name in leftovers:
                ref = self.proc(name)
                if ref:
                    terminate([ref], 5.0, reap=self._reap)
                with contextlib.suppress(FileNotFoundError):
                    self._pid_file(name).unlink()
                continue
            if self.is_running(name):
                self.log(f"==> stopping {name}")
            self.stop_component(name)
        ProcessRegistry.kill_leftovers(self.node_state_dir / "processes.json")

    def status(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in self.names():
            ref = self.proc(name)
            out[name] = {
                "pid": ref.pid if ref else None,
                "running": ref is not None,
                "healthy": bool(ref) and self.component(name).health(),
                "log": str(self.log_path(name)),
            }
        return out

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- cluster bootstrap --------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the stack's kubectl against it (output captured as text)."""
        argv = [str(tools.find_tool("kubectl")), f"--kubeconfig={self.kubeconfig}", *args]
        res = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, env=self.client_env()
        )
        if check and res.returncode != 0:
            raise StackError(f"{shlex.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def bootstrap(self) -> None:
        """CRDs (Established), the ingress namespace, extra manifests; idempotent."""
        crd_files = sorted((tools.REPO_ROOT / "crds").glob("*.y*ml"))
        if crd_files:
            args = [a for f in crd_files for a in ("-f", str(f))]
            self.kubectl("apply", "--server-side", "--force-conflicts", *args)
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", *args)
            self.log(f"    CRDs applied: {', '.join(f.name for f in crd_files)}")
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        self.kubectl("apply", "-f", "-", input=json.dumps(ns))
        self.kubectl("apply", "-f", "-", input=json.dumps(self.media_objects()))
        for m in self.options.manifests:
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", m)

    def media_objects(self) -> dict[str, Any]:
        """What media pods need in the ingress namespace (the Helm chart makes the same): the
        LiveKit key they join rooms with, and a ServiceAccount that may write ingress status."""
        ns = self.namespace
        meta = {"namespace": ns, "labels": {"app.kubernetes.io/name": "livekit-ingress"}}
        return {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": LIVEKIT_SECRET, **meta},
                    "stringData": {"apiKey": API_KEY, "apiSecret": API_SECRET},
                },
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": MEDIA_SA, **meta}},
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": MEDIA_SA, **meta},
                    "rules": [
                        {
                            "apiGroups": ["ingress.lkop.dev"],
                            "resources": ["livekitingresses"],
                            "verbs": ["get"],
                        },
                        {
                            "apiGroups": ["ingress.lkop.dev"],
                            "resources": ["livekitingresses/status"],
                            "verbs": ["get", "patch"],
                        },
                    ],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": MEDIA_SA, **meta},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": MEDIA_SA},
                    "subjects": [{"kind": "ServiceAccount", "name": MEDIA_SA, "namespace": ns}],
                },
            ],
        }

    def wait_service_accounts(self, within: float = 60.0) -> None:
        """Until the controller manager made the `default` ServiceAccounts pods need."""
        deadline = time.monotonic() + within
        for ns in dict.fromkeys(["default", self.namespace]):
            while self.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode != 0:
                if time.monotonic() > deadline:
                    raise StackError(f"no default ServiceAccount in {ns} after {within:g}s")
                time.sleep(0.2)

    # --- files ------------------------------------------------------------------------------------

    def _ensure_pki(self) -> None:
        """A CA, the apiserver's serving cert (SAN IP:127.0.0.1), service-account keys, a token."""
        pki = self.pki_dir
        pki.mkdir(parents=True, exist_ok=True)
        openssl = shutil.which("openssl")
        if openssl is None:
            raise StackError("openssl not found (bash tools/install.sh apt)")

        def ossl(*args: str | Path) -> None:
            _run([openssl, *map(str, args)])

        if not (pki / "ca.crt").exists():
            ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                 "-subj", "/CN=lki-local-ca", "-keyout", pki / "ca.key", "-out", pki / "ca.crt")  # fmt: skip
        if not (pki / "apiserver.crt").exists():
            ext = pki / "apiserver.ext"
            ext.write_text(
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,"
                "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
                "DNS:kubernetes.default.svc.cluster.local\n"
            )
            ossl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
                 "-keyout", pki / "apiserver.key", "-out", pki / "apiserver.csr")  # fmt: skip
            ossl("x509", "-req", "-in", pki / "apiserver.csr", "-days", "3650", "-extfile", ext,
                 "-CA", pki / "ca.crt", "-CAkey", pki / "ca.key", "-CAcreateserial",
                 "-out", pki / "apiserver.crt")  # fmt: skip
        if not (pki / "sa.key").exists():
            ossl("genrsa", "-out", pki / "sa.key", "2048")
            ossl("rsa", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub")
        if not (pki / "admin.token").exists():
            token = secrets.token_urlsafe(32)
            (pki / "admin.token").write_text(token + "\n")
            (pki / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
        for f in pki.iterdir():
            if f.suffix in (".key", ".token", ".csv"):
                f.chmod(0o600)

    def _write_kubeconfig(self) -> None:
        ca = base64.b64encode((self.pki_dir / "ca.crt").read_bytes()).decode()
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "lki-local",
                    "cluster": {"server": self.apiserver_url, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.admin_token}}],
            "contexts": [
                {
                    "name": "lki-local",
                    "context": {"cluster": "lki-local", "user": "admin", "namespace": self.namespace},
                }
            ],
            "current-context": "lki-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    def write_env_file(self) -> None:
        lines = ["# source this file to use the local stack (written by local_stack)"]
        for key, value in self.env.items():
            if key == "PATH":
                prefix = os.pathsep.join([str(tools.VENV_BIN), *(str(d) for d in tools.tool_dirs())])
                lines.append(f'export PATH={shlex.quote(prefix)}:"$PATH"')
            else:
                lines.append(f"export {key}={shlex.quote(value)}")
        self.env_file.write_text("\n".join(lines) + "\n")

    # --- debugging ----------------------------------------------------------------------------------

    def tail_logs(self, components: Sequence[str] | None = None, lines: int = 30) -> str:
        """The last lines of each component's log (and of pod logs when `components` is None)."""
        out: list[str] = []
        paths: list[Path] = [self.log_path(n) for n in (components or self.names())]
        if components is None and self.pod_logs_dir.exists():
            paths += sorted(self.pod_logs_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)[-5:]
        for path in paths:
            if not path.exists():
                continue
            text = path.read_bytes()[-200_000:].decode(errors="replace").splitlines()[-lines:]
            out.append(f"----- {path.relative_to(self.root)} (last {len(text)} lines) -----")
            out.extend(text)
        return "\n".join(out)

    def usage(self) -> str:
        return "\n".join(
            [
                f"Local stack in {self.root} (slot {self.options.slot}) is up.",
                "",
                f"  source {self.env_file}",
                '  kubectl get lki,pods -n "$INGRESS_NAMESPACE"',
                "",
                "Create an ingress as a custom resource, or through LiveKit's API at LIVEKIT_URL",
                "(any server SDK; `lk` reads the same variables):",
                '  kubectl apply -n "$INGRESS_NAMESPACE" -f examples/rtmp.yaml',
                "  lk ingress create examples/ingress.json",
                "",
                "Push to it (OBS: Server = the ingress's url, Stream Key = its key) or with ffmpeg:",
                '  KEY=$(kubectl get secret studio-cam-stream-key -n "$INGRESS_NAMESPACE" \\',
                "        -o jsonpath='{.data.streamKey}' | base64 -d)",
                "  ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine \\",
                f'        -c:v libx264 -preset veryfast -g 60 -c:a aac -f flv "{self.rtmp_base_url}/$KEY"',
                "",
                f"  LIVEKIT_URL={self.livekit_url}  (the shim: Ingress API; other Twirp services proxied)",
                f"  LIVEKIT_SERVER_URL={self.livekit_server_url}  (livekit-server --dev)",
                f"  LIVEKIT_API_KEY={API_KEY} LIVEKIT_API_SECRET={API_SECRET}",
                f"  KUBECONFIG={self.kubeconfig}",
                f"  kube-apiserver {self.apiserver_url}   namespace {self.namespace}",
                f"  RTMP {self.rtmp_base_url}   WHIP {self.whip_base_url}",
                f"  WHIP media relay: UDP 127.0.0.1:{self.ports.whip_udp}",
                f"  logs: {self.logs_dir}/<component>.log",
                f"  pod logs: {self.pod_logs_dir}/<ns>_<pod>_<container>.log",
                "",
                "  make down          # stop it (state stays in .stack/; `make clean-stack` removes it)",
            ]
        )


class SlotLock:
    """An exclusive claim (flock) on a slot, for stacks that live as long as one process (tests).

    The lock file records the stack dir; whoever claims the slot next stops what a crashed
    owner left running there.
    """

    def __init__(self, slot: int, handle: Any) -> None:
        self.slot = slot
        self._handle = handle

    @classmethod
    def claim(cls, root: Path, first: int = 1) -> SlotLock:
        lock_dir = Path(tempfile.gettempdir()) / "lki-stack-slots"
        lock_dir.mkdir(exist_ok=True)
        for slot in range(first, MAX_SLOT + 1):
            handle = open(lock_dir / f"{slot}.lock", "a+")  # noqa: SIM115 - held while the stack lives
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.seek(0)
            previous = handle.read().strip()
            if previous and previous != str(root) and (Path(previous) / "stack.json").exists():
                with contextlib.suppress(Exception):
                    Stack.load(previous, log=lambda _: None).stop()
            if Ports.for_slot(slot).busy():
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(str(root))
            handle.flush()
            return cls(slot, handle)
        raise StackError(f"no free stack slot in {first}..{MAX_SLOT}")

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


@contextlib.contextmanager
def running_or_private() -> Iterator[dict[str, str]]:
    """For a benchmark: the environment of the stack it was pointed at (LIVEKIT_URL set, e.g.
    after `source .stack/env`), else of a private stack started for the run, whose logs are
    kept when the run fails."""
    if os.environ.get("LIVEKIT_URL"):
        yield dict(os.environ)
        return
    with tempfile.TemporaryDirectory(prefix="lki-bench-") as tmp:
        lock = SlotLock.claim(Path(tmp))
        stack = Stack(Path(tmp), lock.slot)
        print("starting a private local stack ...", file=sys.stderr)
        try:
            stack.start()
            yield {**os.environ, **stack.env}
        except BaseException:
            kept = Path(tempfile.mkdtemp(prefix="lki-bench-logs-"))
            shutil.copytree(stack.logs_dir, kept, dirs_exist_ok=True)
            print(f"the run failed; the stack's logs are in {kept}", file=sys.stderr)
            raise
        finally:
            stack.stop()
            lock.release()
