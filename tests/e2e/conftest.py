"""Clients of the local stack for end-to-end tests: kubectl, LiveKit's Python, Go and Node SDKs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from livekit import api
from livekit.protocol import ingress as lkingress

from local_stack import tools
from local_stack.node.kube import JSON, Kube
from tests.e2e import media
from tests.e2e.media import Subscriber

T = TypeVar("T")

TESTS = Path(__file__).resolve().parents[1]
GO_SDK = TESTS / "go_sdk"
NODE_SDK = TESTS / "node_sdk"
GoRun = Callable[..., tuple[int, dict[str, Any]]]
NodeRun = Callable[[str, dict[str, Any]], dict[str, Any]]

pytestmark = pytest.mark.e2e


async def eventually(check: Callable[[], Awaitable[T]], within: float = 15, interval: float = 0.1) -> T:
    """`check()`'s value once it stops raising AssertionError, within `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


async def wait_for(check: Callable[[], Awaitable[T | None]], what: str, within: float = 30.0) -> T:
    """`check()`'s first truthy value, polled every 0.2 s for at most `within` seconds."""

    async def truthy() -> T:
        value = await check()
        assert value, f"waiting for {what}; last: {value!r}"
        return value

    return await eventually(truthy, within=within, interval=0.2)


async def new_namespace(kube: Kube, prefix: str) -> str:
    """A fresh namespace, returned once kube-controller-manager has given it its default
    ServiceAccount (Pods can't be created before that)."""
    ns = f"{prefix}-{secrets.token_hex(3)}"
    await kube.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    )

    async def sa() -> JSON | None:
        return await kube.get_or_none(f"/api/v1/namespaces/{ns}/serviceaccounts/default")

    await wait_for(sa, "the default ServiceAccount", 30)
    return ns


class Kubectl:
    """The real kubectl, against the stack's API server, in the ingress namespace."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}
        self.namespace = env["INGRESS_NAMESPACE"]

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["kubectl", "-n", self.namespace, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        if check and proc.returncode:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def apply(self, manifest: dict[str, Any] | str, check: bool = True) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.run("apply", "-f", "-", stdin=text, check=check)

    def get(self, kind: str, name: str = "") -> dict[str, Any]:
        """One object as JSON; `kind` may be `kind/name` (as `kubectl get -o name` prints)."""
        args = [kind, name] if name else [kind]
        out: dict[str, Any] = json.loads(self.run("get", *args, "-o", "json").stdout)
        return out


@pytest.fixture(scope="session")
def stack_env(stack: Any) -> dict[str, str]:
    env: dict[str, str] = dict(stack.env)
    return env


@pytest.fixture(scope="session")
def kubectl(stack_env: dict[str, str]) -> Kubectl:
    return Kubectl(stack_env)


@pytest.fixture(scope="session")
async def lkapi(stack_env: dict[str, str]) -> AsyncIterator[api.LiveKitAPI]:
    """LiveKit's Python server SDK pointed at the shim (LIVEKIT_URL)."""
    lk = api.LiveKitAPI(
        stack_env["LIVEKIT_URL"], stack_env["LIVEKIT_API_KEY"], stack_env["LIVEKIT_API_SECRET"]
    )
    yield lk
    await lk.aclose()


def lki(name: str, **spec: Any) -> dict[str, Any]:
    """A LiveKitIngress manifest."""
    return {
        "apiVersion": "ingress.lkop.dev/v1alpha1",
        "kind": "LiveKitIngress",
        "metadata": {"name": name},
        "spec": spec,
    }


# --- ingresses made through the API, cleaned up after each test ------------------------------

S = lkingress.IngressState.Status
MEDIA_PODS = "app.kubernetes.io/component=media"
ID_LABEL = "ingress.lkop.dev/id"


@pytest.fixture(autouse=True)
async def no_push_outlives_its_test() -> AsyncIterator[None]:
    yield
    while media.RUNNING:
        await media.RUNNING.pop().stop()


@pytest.fixture
async def room() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


class Ingress:
    """One ingress made through the API, with what a test needs to drive it."""

    def __init__(self, lk: api.LiveKitAPI, info: lkingress.IngressInfo, env: dict[str, str]) -> None:
        self.lk, self.info, self.env = lk, info, env

    @property
    def push_url(self) -> str:
        return f"{self.info.url}/{self.info.stream_key}"

    async def get(self) -> lkingress.IngressInfo:
        listing = await self.lk.ingress.list_ingress(api.ListIngressRequest(ingress_id=self.info.ingress_id))
        return listing.items[0]

    async def state_is(self, status: int, within: float = 60) -> lkingress.IngressInfo:
        async def check() -> lkingress.IngressInfo | None:
            info = await self.get()
            return info if info.state.status == status else None

        return await wait_for(check, f"state {S.Name(status)}", within)

    @contextlib.asynccontextmanager
    async def statuses(self, interval: float = 0.05) -> AsyncIterator[list[int]]:
        """The distinct statuses ListIngress shows while the block runs, in order (polled)."""
        seen: list[int] = []

        async def poll() -> None:
            while True:
                status = (await self.get()).state.status
                if not seen or seen[-1] != status:
                    seen.append(status)
                await asyncio.sleep(interval)

        task = asyncio.create_task(poll())
        try:
            yield seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def media_pod(self, kube: Kube) -> dict[str, Any]:
        """The one media pod of the live session."""
        (pod,) = await media_pods_of(kube, self.env, self.info.ingress_id)
        return pod

    def subscriber(self) -> Subscriber:
        return subscriber(self.env, self.info.room_name)


def subscriber(env: dict[str, str], room: str) -> Subscriber:
    """A subscriber in `room` of the stack's livekit-server."""
    ws = env["LIVEKIT_SERVER_URL"].replace("http://", "ws://")
    return Subscriber(ws, env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"], room)


async def media_pods_of(kube: Kube, env: dict[str, str], ingress_id: str) -> list[dict[str, Any]]:
    """The media pods of one ingress."""
    path = f"/api/v1/namespaces/{env['INGRESS_NAMESPACE']}/pods"
    pods = await kube.get(path, {"labelSelector": f"{MEDIA_PODS},{ID_LABEL}={ingress_id}"})
    items: list[dict[str, Any]] = pods["items"]
    return items


@pytest.fixture
async def make_ingress(
    lkapi: api.LiveKitAPI, stack_env: dict[str, str], room: str, kube: Kube
) -> AsyncIterator[Any]:
    made: list[Ingress] = []

    async def make(**kwargs: Any) -> Ingress:
        req = api.CreateIngressRequest(
            input_type=kwargs.pop("input_type", api.IngressInput.RTMP_INPUT),
            name=kwargs.pop("name", "e2e"),
            room_name=room,
            participant_identity=kwargs.pop("identity", "encoder"),
            participant_name="The Encoder",
            **kwargs,
        )
        info = await lkapi.ingress.create_ingress(req)
        ingress = Ingress(lkapi, info, stack_env)
        made.append(ingress)
        return ingress

    yield make
    for ingress in made:
        with contextlib.suppress(api.TwirpError):
            await lkapi.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=ingress.info.ingress_id))
    namespace = stack_env["INGRESS_NAMESPACE"]
    ids = {i.info.ingress_id for i in made}

    async def no_pods_left() -> bool:
        pods = await kube.get(f"/api/v1/namespaces/{namespace}/pods", {"labelSelector": MEDIA_PODS})
        mine = [p for p in pods["items"] if p["metadata"]["labels"].get("ingress.lkop.dev/id") in ids]
        return not mine

    await wait_for(no_pods_left, "the media pods to be gone", 60)

    async def no_secrets_left() -> bool:
        secrets = await kube.get(f"/api/v1/namespaces/{namespace}/secrets")
        return not [s for s in secrets["items"] if s["metadata"].get("labels", {}).get(ID_LABEL) in ids]

    await wait_for(no_secrets_left, "the stream key Secrets to be gone", 30)


@pytest.fixture(scope="session", autouse=True)
def no_tracebacks_in_the_control_plane(stack: Any) -> Iterator[None]:
    """Whatever the tests did (bad input, killed processes), neither the operator, the shim, the
    front door nor a media pod logged a traceback."""
    yield
    logs = [stack.log_path(c) for c in ("operator", "shim", "frontdoor")]
    logs += sorted(stack.pod_logs_dir.glob("*_media.log")) if stack.pod_logs_dir.exists() else []
    for path in logs:
        assert "Traceback" not in path.read_text(errors="replace"), f"a traceback in {path}"


# --- the Go server SDK (the `lk` path) and the Node SDK, as subprocesses -------------------


@pytest.fixture(scope="session")
def go_sdk_check(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The binary tools/install.sh built for these sources, else a fresh build."""
    if os.environ.get("GO_SDK_CHECK"):
        return Path(os.environ["GO_SDK_CHECK"])
    built = tools.go_sdk_check_binary()
    if built is not None:
        return built
    if shutil.which("go") is None:
        pytest.skip("go-sdk-check is not built and there is no go toolchain")
    out = tmp_path_factory.mktemp("go-sdk-check") / "go-sdk-check"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=GO_SDK, env=env, check=True, timeout=900)
    return out


@pytest.fixture(scope="module")
def go(stack: Any, go_sdk_check: Path) -> Iterator[GoRun]:
    """Runs go-sdk-check against the shim; deletes what it created when the module ends."""
    env = {**os.environ, **stack.env}
    created: list[str] = []

    def run(*args: str, env_override: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        proc = subprocess.run(
            [str(go_sdk_check), *args],
            env={**env, **(env_override or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.stdout.strip(), f"no output from {args}: {proc.stderr}"
        out = json.loads(proc.stdout)
        if proc.returncode == 0 and args[0] in ("create", "example"):
            created.append(out["ingress_id"])
        return proc.returncode, out

    yield run
    for ingress_id in created:
        run("delete", ingress_id)


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (NODE_SDK / "node_modules" / "livekit-server-sdk").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_SDK, check=True, timeout=300)
    return NODE_SDK / "check.mjs"


@pytest.fixture(scope="module")
def node(stack: Any, node_sdk: Path) -> Iterator[NodeRun]:
    """Runs one op of check.mjs against the shim; deletes what it created when the module ends."""
    env = {**os.environ, **stack.env}
    created: list[str] = []

    def run(op: str, req: dict[str, Any]) -> dict[str, Any]:
        proc = subprocess.run(
            ["node", str(node_sdk), json.dumps({"op": op, "req": req})],
            cwd=NODE_SDK,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.stdout.strip(), f"no output from {op} {req}: {proc.stderr}"
        out: dict[str, Any] = json.loads(proc.stdout)
        assert (proc.returncode == 0) == ("error" not in out), (proc.returncode, out)
        if op == "create" and "error" not in out:
            created.append(out["ingressId"])
        return out

    yield run
    for ingress_id in created:
        run("delete", {"ingressId": ingress_id})
