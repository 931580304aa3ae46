"""The process node against the real API server: Pods become processes, report status as a
kubelet would, restart per policy, and stop within their grace period."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest_asyncio

from local_stack.node.kube import JSON, Kube, KubeError
from local_stack.procs import ProcRef
from local_stack.stack import Stack
from tests.e2e.conftest import new_namespace, wait_for


def cond(pod: JSON, ctype: str) -> dict[str, Any]:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


def cstatus(pod: JSON, name: str | None = None, init: bool = False) -> dict[str, Any]:
    key = "initContainerStatuses" if init else "containerStatuses"
    for s in (pod.get("status") or {}).get(key) or []:
        if name is None or s.get("name") == name:
            return dict(s)
    return {}


def pid_of(pod: JSON, name: str | None = None) -> int:
    cid = cstatus(pod, name).get("containerID", "")
    assert cid.startswith("process://"), cid
    return int(cid.removeprefix("process://"))


class Pods:
    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.ns = namespace

    def path(self, name: str = "") -> str:
        base = f"/api/v1/namespaces/{self.ns}/pods"
        return f"{base}/{name}" if name else base

    async def create(self, name: str, spec: dict[str, Any], **meta: Any) -> JSON:
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **meta}, "spec": spec}
        return await self.kube.create(self.path(), body)

    async def get(self, name: str) -> JSON | None:
        return await self.kube.get_or_none(self.path(name))

    async def wait(self, name: str, pred: Callable[[JSON], bool], what: str, within: float = 30.0) -> JSON:
        async def check() -> JSON | None:
            pod = await self.get(name)
            return pod if pod is not None and pred(pod) else None

        return await wait_for(check, f"pod {name}: {what}", within)

    async def gone(self, name: str, within: float = 30.0) -> None:
        async def check() -> bool:
            return await self.get(name) is None

        await wait_for(check, f"pod {name} to disappear", within)


def phase(p: str) -> Callable[[JSON], bool]:
    return lambda pod: (pod.get("status") or {}).get("phase") == p


def ready(pod: JSON) -> bool:
    return cond(pod, "Ready").get("status") == "True"


def container(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "ignored.example/none", "command": ["sh", "-c", script], **extra}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pods(kube: Kube) -> AsyncIterator[Pods]:
    """A fresh namespace (with its default ServiceAccount) for this module's pods."""
    ns = await new_namespace(kube, "pn")
    yield Pods(kube, ns)
    with contextlib.suppress(KubeError):
        await kube.delete(f"/api/v1/namespaces/{ns}")


async def test_pod_runs_ready_serves_on_its_ip_with_env_from_secret_and_fields(
    pods: Pods, kube: Kube, stack: Stack
) -> None:
    await kube.create(
        f"/api/v1/namespaces/{pods.ns}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "greeting"},
            "stringData": {"text": "hello"},
        },
    )
    script = (
        'printf "%s|%s|%s|%s|%s" "$GREETING" "$MY_NAME" "$APP" "$NODE" "$MY_NS" > env.txt && '
        "exec python3 -m http.server --bind $(POD_IP) 8080"  # $(VAR): expanded by the node
    )
    env = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "GREETING", "valueFrom": {"secretKeyRef": {"name": "greeting", "key": "text"}}},
        {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    probe = {"httpGet": {"path": "/env.txt", "port": 8080}, "periodSeconds": 1}
    await pods.create(
        "web",
        {"containers": [container("web", script, env=env, readinessProbe=probe)]},
        labels={"app": "frontend"},
    )
    pod = await pods.wait("web", ready, "Ready")

    status = pod["status"]
    assert status["phase"] == "Running"
    ip = status["podIP"]
    assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(stack.pod_cidr)
    assert ip != "127.0.0.1" and status["podIPs"] == [{"ip": ip}]
    assert status["hostIP"] == "127.0.0.1" and status["startTime"]
    assert pod["spec"]["nodeName"] == "process-node"
    for c in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
        assert cond(pod, c)["status"] == "True", c
    cs = cstatus(pod, "web")
    assert cs["ready"] and cs["started"] and cs["restartCount"] == 0 and "running" in cs["state"]
    assert ProcRef.of(pid_of(pod)).alive()

    async with aiohttp.ClientSession() as http, http.get(f"http://{ip}:8080/env.txt") as resp:
        assert resp.status == 200
        body = await resp.text()
    assert body == f"hello|web|frontend|process-node|{pods.ns}"
    assert stack.pod_log_path(pods.ns, "web", "web").exists()


async def test_pod_ips_are_unique(pods: Pods) -> None:
    names = [f"ip-{i}" for i in range(3)]
    for n in names:
        await pods.create(n, {"containers": [container("c", "exec sleep 300")]})
    ips = set()
    for n in names:
        pod = await pods.wait(n, phase("Running"), "Running")
        ips.add(pod["status"]["podIP"])
    assert len(ips) == 3
    for n in names:
        await pods.kube.delete(pods.path(n), {"gracePeriodSeconds": 1})


async def test_failing_command_with_restart_never_fails(pods: Pods) -> None:
    await pods.create(
        "fails", {"restartPolicy": "Never", "containers": [container("c", "echo oops >&2; exit 3")]}
    )
    pod = await pods.wait("fails", phase("Failed"), "Failed")
    term = cstatus(pod, "c")["state"]["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error"
    assert cond(pod, "Ready") == cond(pod, "Ready") | {"status": "False", "reason": "PodCompleted"}
    assert cstatus(pod, "c")["restartCount"] == 0


async def test_succeeding_command_with_restart_never_succeeds(pods: Pods) -> None:
    await pods.create("succeeds", {"restartPolicy": "Never", "containers": [container("c", "exit 0")]})
    pod = await pods.wait("succeeds", phase("Succeeded"), "Succeeded")
    assert cstatus(pod, "c")["state"]["terminated"]["reason"] == "Completed"


async def test_failing_command_with_restart_on_failure_restarts(pods: Pods) -> None:
    await pods.create(
        "crashloop", {"restartPolicy": "OnFailure", "containers": [container("c", "sleep 0.2; exit 1")]}
    )
    pod = await pods.wait("crashloop", lambda p: cstatus(p, "c").get("restartCount", 0) >= 2, "2 restarts")
    cs = cstatus(pod, "c")
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    assert pod["status"]["phase"] in ("Running", "Pending")
    await pods.kube.delete(pods.path("crashloop"), {"gracePeriodSeconds": 1})


async def test_init_container_envfrom_exec_and_tcp_probes(pods: Pods, kube: Kube) -> None:
    await kube.create(
        f"/api/v1/namespaces/{pods.ns}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"color": "blue"},
        },
    )
    spec = {
        "initContainers": [container("prepare", "echo prepared > init.txt")],
        "containers": [
            container(
                "main",
                'printf "%s/%s" "$(cat init.txt)" "$CFG_color" > seen.txt; '
                'exec python3 -m http.server --bind "$POD_IP" 8081',
                envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                env=[{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                readinessProbe={"exec": {"command": ["test", "-s", "seen.txt"]}, "periodSeconds": 1},
                livenessProbe={"tcpSocket": {"port": "http"}, "periodSeconds": 1, "initialDelaySeconds": 1},
                ports=[{"name": "http", "containerPort": 8081}],
            )
        ],
    }
    await pods.create("init", spec)
    pod = await pods.wait("init", ready, "Ready")
    init = cstatus(pod, "prepare", init=True)
    assert init["state"]["terminated"]["reason"] == "Completed" and init["ready"]
    ip = pod["status"]["podIP"]
    async with aiohttp.ClientSession() as http, http.get(f"http://{ip}:8081/seen.txt") as resp:
        assert await resp.text() == "prepared/blue"
    await asyncio.sleep(2.5)  # the liveness probe keeps passing: no restart
    later = await pods.get("init")
    assert later is not None and cstatus(later, "main")["restartCount"] == 0


async def test_missing_secret_keeps_container_waiting(pods: Pods) -> None:
    env = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]
    await pods.create("nosecret", {"containers": [container("c", "exec sleep 300", env=env)]})
    pod = await pods.wait(
        "nosecret",
        lambda p: (
            cstatus(p, "c").get("state", {}).get("waiting", {}).get("reason") == "CreateContainerConfigError"
        ),
        "CreateContainerConfigError",
    )
    assert pod["status"]["phase"] == "Pending"
    await pods.kube.delete(pods.path("nosecret"), {"gracePeriodSeconds": 0})


async def test_delete_sends_sigterm_and_waits_for_exit(pods: Pods, stack: Stack) -> None:
    script = "trap 'echo got TERM; sleep 1; echo bye; exit 0' TERM; echo up; while :; do sleep 0.1; done"
    await pods.create(
        "graceful", {"terminationGracePeriodSeconds": 20, "containers": [container("c", script)]}
    )
    pod = await pods.wait("graceful", phase("Running"), "Running")
    proc = ProcRef.of(pid_of(pod))
    t0 = time.monotonic()
    await pods.kube.delete(pods.path("graceful"))
    await pods.gone("graceful", within=25)
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 20, elapsed  # ran its 1 s TERM handler, well within the grace
    assert not proc.alive()
    log = stack.pod_log_path(pods.ns, "graceful", "c").read_text()
    assert "got TERM" in log and "bye" in log


async def test_delete_kills_after_the_grace_period(pods: Pods) -> None:
    script = "trap '' TERM; while :; do sleep 0.1; done"
    await pods.create(
        "stubborn", {"terminationGracePeriodSeconds": 3, "containers": [container("c", script)]}
    )
    pod = await pods.wait("stubborn", phase("Running"), "Running")
    proc = ProcRef.of(pid_of(pod))
    t0 = time.monotonic()
    await pods.kube.delete(pods.path("stubborn"))
    await pods.gone("stubborn", within=20)
    elapsed = time.monotonic() - t0
    assert 3.0 <= elapsed < 10, elapsed
    assert not proc.alive()


async def test_node_selector_mismatch_is_unschedulable(pods: Pods) -> None:
    await pods.create(
        "elsewhere", {"nodeSelector": {"disk": "ssd"}, "containers": [container("c", "exit 0")]}
    )
    pod = await pods.wait(
        "elsewhere", lambda p: cond(p, "PodScheduled").get("reason") == "Unschedulable", "Unschedulable"
    )
    assert not pod["spec"].get("nodeName") and pod["status"]["phase"] == "Pending"
    await pods.kube.delete(pods.path("elsewhere"), {"gracePeriodSeconds": 0})


async def test_pod_gets_a_service_account_kubeconfig(pods: Pods, stack: Stack) -> None:
    # the pod reads its own Pod through the API with its service account's token
    script = (
        'kubectl --kubeconfig "$KUBECONFIG" get pod "$HOSTNAME" -o name > out.txt 2>&1; '
        'kubectl --kubeconfig "$KUBECONFIG" auth whoami '
        '-o jsonpath="{.status.userInfo.username}" >> out.txt 2>&1; '
        "cat out.txt"
    )
    await pods.create("whoami", {"restartPolicy": "Never", "containers": [container("c", script)]})
    pod = await pods.wait(
        "whoami", lambda p: p["status"].get("phase") in ("Succeeded", "Failed"), "completion"
    )
    assert pod["status"]["phase"] == "Succeeded"
    uid = pod["metadata"]["uid"]
    out = (stack.node_state_dir / "pods" / uid / "out.txt").read_text()
    # the default SA has no RBAC to get pods: the apiserver saw the SA's identity
    assert f"system:serviceaccount:{pods.ns}:default" in out


async def test_node_restart_restarts_or_fails_its_pods(pods: Pods, stack: Stack) -> None:
    await pods.create("survivor", {"containers": [container("c", "exec sleep 300")]})
    await pods.create("once", {"restartPolicy": "Never", "containers": [container("c", "exec sleep 300")]})
    before = await pods.wait("survivor", phase("Running"), "Running")
    await pods.wait("once", phase("Running"), "Running")
    proc = ProcRef.of(pid_of(before))

    await stack.akill_component("process-node")  # SIGKILL: its containers die with it
    await wait_for(lambda: _dead(proc), "the container to die with the node", 10)
    await stack.astart_component("process-node")

    after = await pods.wait(
        "survivor", lambda p: cstatus(p, "c").get("restartCount") == 1 and phase("Running")(p), "restarted"
    )
    assert after["status"]["podIP"] == before["status"]["podIP"]
    assert cstatus(after, "c")["lastState"]["terminated"]["exitCode"] == 137
    once = await pods.wait("once", phase("Failed"), "Failed")
    assert "restarted" in cstatus(once, "c")["state"]["terminated"].get("message", "")


async def _dead(proc: ProcRef) -> bool:
    return not proc.alive()
