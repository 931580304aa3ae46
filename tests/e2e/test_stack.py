"""The local stack itself: healthy components, and the controllers the project relies on
(owner-reference garbage collection, namespace lifecycle, default ServiceAccounts)."""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.request
from pathlib import Path

import pytest

from local_stack.node.kube import JSON, Kube
from local_stack.stack import Stack
from tests.e2e.conftest import new_namespace, wait_for


def configmap(name: str, owner: JSON | None = None) -> JSON:
    meta: JSON = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
            }
        ]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


def test_every_component_is_healthy(stack: Stack) -> None:
    status = stack.status()
    assert status, "no components"
    for name, s in status.items():
        assert s["running"] and s["healthy"], (name, s)
    env_file = stack.env_file.read_text()
    for key in (
        "LIVEKIT_URL",
        "LIVEKIT_API_KEY",
        "LIVEKIT_API_SECRET",
        "LIVEKIT_SERVER_URL",
        "KUBECONFIG",
        "INGRESS_NAMESPACE",
        "PATH",
    ):
        assert f"export {key}=" in env_file, key
    assert stack.env["LIVEKIT_URL"] == f"http://127.0.0.1:{stack.ports.shim}"


async def test_kubectl_reaches_the_apiserver_and_the_node_is_ready(stack: Stack) -> None:
    version = json.loads(stack.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")

    async def schedulable_node() -> JSON | None:
        node: JSON = json.loads(stack.kubectl("get", "node", "process-node", "-o", "json").stdout)
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        # new nodes are tainted not-ready by admission until the node controller sees Ready
        tainted = [t for t in node["spec"].get("taints") or [] if t["effect"] == "NoSchedule"]
        return node if ready and ready[0]["status"] == "True" and not tainted else None

    await wait_for(schedulable_node, "a Ready node without NoSchedule taints", 30)
    crds = json.loads(stack.kubectl("get", "crd", "-o", "json").stdout)["items"]
    for crd in crds:
        established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
        assert established[0]["status"] == "True", crd["metadata"]["name"]
    ns = json.loads(stack.kubectl("get", "namespace", stack.namespace, "-o", "json").stdout)
    assert ns["status"]["phase"] == "Active"


def test_the_env_file_works_from_a_shell(stack: Stack, tmp_path: Path) -> None:
    script = f'source {stack.env_file} && kubectl get ns "$INGRESS_NAMESPACE" -o name && command -v kubectl'
    out = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[0] == f"namespace/{stack.namespace}"
    assert "/kubernetes-" in lines[1]  # the built kubectl, not a system one


def test_livekit_server_answers(stack: Stack) -> None:
    with urllib.request.urlopen(stack.livekit_server_url, timeout=5) as resp:
        assert resp.status == 200


async def test_owner_reference_garbage_collection(kube: Kube, stack: Stack) -> None:
    ns = stack.namespace
    base = f"/api/v1/namespaces/{ns}/configmaps"
    suffix = secrets.token_hex(3)
    parent = await kube.create(base, configmap(f"parent-{suffix}"))
    await kube.create(base, configmap(f"child-{suffix}", owner=parent))
    await kube.delete(f"{base}/parent-{suffix}")

    async def child_gone() -> bool:
        return await kube.get_or_none(f"{base}/child-{suffix}") is None

    await wait_for(child_gone, "the owned ConfigMap to be collected", 30)


async def test_new_namespace_gets_default_service_account_and_deletes_cleanly(kube: Kube) -> None:
    ns = await new_namespace(kube, "sa")
    root_ca = await kube.get_or_none(f"/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt")
    assert root_ca is not None and "ca.crt" in root_ca["data"]

    await kube.delete(f"/api/v1/namespaces/{ns}")

    async def ns_gone() -> bool:
        return await kube.get_or_none(f"/api/v1/namespaces/{ns}") is None

    await wait_for(ns_gone, "the namespace to be deleted", 60)


async def test_a_component_can_be_killed_and_restarted(stack: Stack) -> None:
    name = "livekit-server"
    pid = stack.pid(name)
    assert pid is not None
    await stack.akill_component(name)
    assert not stack.is_running(name)
    await stack.astart_component(name)
    assert stack.healthy(name) and stack.pid(name) != pid


async def test_the_operator_can_be_killed_and_restarted(stack: Stack) -> None:
    if not stack.options.control_plane:
        pytest.skip("stack started without the control plane (LKI_TEST_CONTROL_PLANE=0)")
    pid = stack.pid("operator")
    await stack.akill_component("operator")
    assert not stack.is_running("operator")
    await stack.astart_component("operator")
    assert stack.healthy("operator") and stack.pid("operator") not in (None, pid)


def test_every_component_listens_on_loopback_only(stack: Stack) -> None:
    """Nothing the stack runs can be reached from, or answer on, another interface."""
    out = subprocess.run(
        ["ss", "-H", "-lntup"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    pids = {stack.pid(name) for name in stack.names()} - {None}
    seen = 0
    for line in out.splitlines():
        if not any(f"pid={pid}," in line for pid in pids):
            continue
        seen += 1
        local = line.split()[4]  # e.g. 127.0.0.1:20004, [::1]:x, *:x, 0.0.0.0:x
        host = local.rsplit(":", 1)[0].strip("[]")
        assert host.startswith("127.") or host == "::1", line
    assert seen >= len(pids)


@pytest.mark.parametrize(
    ("port", "metric"),
    [
        ("shim", "lki_shim_request_seconds"),
        ("operator_metrics", "lki_ingresses"),
        ("node_health", "lki_node_pods"),
    ],
)
def test_every_component_of_ours_exposes_prometheus_metrics(stack: Stack, port: str, metric: str) -> None:
    url = f"http://127.0.0.1:{getattr(stack.ports, port)}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    assert f"# TYPE {metric}" in text
