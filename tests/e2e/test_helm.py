"""The Helm chart against the local stack's API server: what it renders passes the server's own
validation, and `helm install` into a fresh namespace runs the operator, the shim and the front
door as Deployments on the process node, under the chart's RBAC, where they serve an ingress
end to end (a push through the chart's front door publishes from a media pod the chart's
operator made); `helm uninstall` then leaves nothing of the release but the CRD.

The stack's own control plane watches its namespace only, so everything in the release's
namespace is done by the chart's pods. They reach the API server through the KUBECONFIG the
process node gives each pod (its ServiceAccount's token) and livekit-server on 127.0.0.1; they
listen on their pod IPs (`listenAddress: $(POD_IP)`), as pods on the process node share one
network namespace and Services do not route.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from livekit import api

from local_stack import tools
from local_stack.node.kube import Kube
from local_stack.stack import Stack
from tests.e2e import media
from tests.e2e.conftest import lki, new_namespace, wait_for
from tests.unit.test_helm_chart import CHART, FULL_VALUES, KIND_VALUES, render

RELEASE = "lki"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
CRD = "livekitingresses.ingress.lkop.dev"
# What the chart makes in its namespace (and the Deployments' ReplicaSets and Pods).
NAMESPACED_KINDS = (
    "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,"
    "poddisruptionbudgets,configmaps,secrets"
)


async def run(stack: Stack, *argv: str, stdin: str | None = None) -> str:
    """A command against the stack (kubectl, helm), its stdout; it must succeed."""
    proc = await asyncio.to_thread(
        subprocess.run,
        list(argv),
        input=stdin,
        capture_output=True,
        text=True,
        env=stack.client_env(),
        timeout=150,  # helm install --wait is given 120 s
    )
    assert proc.returncode == 0, f"{' '.join(argv)} failed: {proc.stderr}"
    return proc.stdout


def kubectl(stack: Stack, *args: str) -> list[str]:
    return [str(tools.find_tool("kubectl")), f"--kubeconfig={stack.kubeconfig}", *args]


def helm(*args: str) -> list[str]:
    return [str(tools.find_tool("helm")), *args]


@pytest.mark.parametrize(
    "values", [{}, yaml.safe_load(KIND_VALUES.read_text()), FULL_VALUES], ids=["default", "kind", "full"]
)
async def test_what_the_chart_renders_passes_the_api_servers_validation(
    stack: Stack, values: dict[str, Any]
) -> None:
    if "grafana" in values:  # the dashboard's own namespace does not exist here
        dashboard = {**values["grafana"]["dashboard"], "namespace": stack.namespace}
        values = {**values, "grafana": {"dashboard": dashboard}}
    docs = render(values, namespace=stack.namespace)
    # The Prometheus Operator's kinds are not served here (its CRDs are not installed); the
    # unit tests check what they select.
    served = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": served})
    out = await run(stack, *kubectl(stack, "apply", "--dry-run=server", "-f", "-"), stdin=listing)
    assert out.count("(server dry run)") == len(served)


async def test_helm_install_serves_an_ingress_end_to_end_and_uninstall_leaves_only_the_crd(
    stack: Stack, kube: Kube, tmp_path: Path
) -> None:
    ns = await new_namespace(kube, "helm")
    rtmp_url = "rtmp://127.0.0.1:1935/live"
    toleration = {"key": "media", "operator": "Exists", "effect": "NoSchedule"}
    values = {
        "listenAddress": "$(POD_IP)",
        "livekit": {"url": stack.livekit_server_url, "existingSecret": "lk-keys"},
        "publicUrls": {"rtmp": rtmp_url, "whip": "http://127.0.0.1:8080/w"},
        "shim": {"replicas": 1},
        "frontdoor": {"service": {"type": "ClusterIP"}},  # a LoadBalancer would keep --wait waiting
        "operator": {"nodeSelector": {"kubernetes.io/hostname": stack.options.node_name}},
        "media": {
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [toleration],
            "annotations": {"example.com/session": "live"},
            "env": {"READ_TIMEOUT": 12},
        },
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    installed = False
    push: media.Push | None = None
    try:
        await run(
            stack,
            *kubectl(stack, "-n", ns, "create", "secret", "generic", "lk-keys"),
            f"--from-literal=apiKey={stack.env['LIVEKIT_API_KEY']}",
            f"--from-literal=apiSecret={stack.env['LIVEKIT_API_SECRET']}",
        )
        notes = await run(
            stack,
            *helm(
                "install",
                RELEASE,
                str(CHART),
                "-n",
                ns,
                "-f",
                str(values_file),
                "--wait",
                "--timeout",
                "120s",
            ),
        )
        installed = True
        assert f"kubectl -n {ns} apply -f -" in notes  # NOTES.txt: how to make a first ingress
        assert "is not in" not in notes  # … and no warning about the LiveKit Secret

        # Each component runs as a pod of its Deployment, on the process node, ready.
        pods = {
            p["metadata"]["labels"]["app.kubernetes.io/component"]: p
            for p in (await kube.get(f"/api/v1/namespaces/{ns}/pods", {"labelSelector": INSTANCE}))["items"]
        }
        assert set(pods) == {"operator", "shim", "frontdoor"}
        for pod in pods.values():
            assert pod["spec"]["nodeName"] == stack.options.node_name
            assert pod["status"]["phase"] == "Running"
            assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
        operator_log = stack.pod_log_path(ns, pods["operator"]["metadata"]["name"], "operator")

        # An ingress applied with kubectl is made ready by the chart's operator.
        cr = lki("cam", inputType="RTMP", roomName="helm-room", participantIdentity="cam")
        await run(stack, *kubectl(stack, "-n", ns, "apply", "-f", "-"), stdin=json.dumps(cr))
        path = f"/apis/ingress.lkop.dev/v1alpha1/namespaces/{ns}/livekitingresses/cam"

        async def ready() -> dict[str, Any] | None:
            status: dict[str, Any] = (await kube.get(path)).get("status") or {}
            conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
            return status if status.get("ingressId") and conditions.get("Ready") == "True" else None

        status = await wait_for(ready, "the chart's operator to make the ingress ready", 30)
        assert status["url"] == rtmp_url
        ingress_id = status["ingressId"]
        log = operator_log.read_text()
        assert "ingress reconciled" in log and ingress_id in log
        # Its RBAC is enough: kopf retried nothing (it logs each 403 it retries as an error).
        assert '"level": "error"' not in log, log

        # The chart's shim lists it, with the stream key it reads from the Secret.
        secret = await kube.get(f"/api/v1/namespaces/{ns}/secrets/{status['streamKeySecret']}")
        shim_url = f"http://{pods['shim']['status']['podIP']}:7890"
        shim = api.LiveKitAPI(shim_url, stack.env["LIVEKIT_API_KEY"], stack.env["LIVEKIT_API_SECRET"])
        try:
            listing = await shim.ingress.list_ingress(api.ListIngressRequest())
        finally:
            await shim.aclose()
        (info,) = listing.items
        assert info.ingress_id == ingress_id and info.url == rtmp_url
        key = info.stream_key
        assert base64.b64decode(secret["data"]["streamKey"]).decode() == key

        # A push to the chart's front door publishes from a media pod the chart's operator made,
        # as the media values say, under the chart's media ServiceAccount.
        push = await media.push(
            f"rtmp://{pods['frontdoor']['status']['podIP']}:1935/live/{key}", 60, size="640x360"
        )

        async def publishing() -> bool:
            state = ((await kube.get(path)).get("status") or {}).get("state") or {}
            return state.get("status") == "ENDPOINT_PUBLISHING"

        await wait_for(publishing, "ENDPOINT_PUBLISHING", 60)
        (media_pod,) = (
            await kube.get(
                f"/api/v1/namespaces/{ns}/pods",
                {"labelSelector": f"app.kubernetes.io/component=media,ingress.lkop.dev/id={ingress_id}"},
            )
        )["items"]
        spec = media_pod["spec"]
        assert spec["serviceAccountName"] == f"{RELEASE}-livekit-ingress-media"
        assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
        assert toleration in spec["tolerations"]
        assert media_pod["metadata"]["annotations"]["example.com/session"] == "live"
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env["READ_TIMEOUT"] == "12" and env["LIVEKIT_URL"] == stack.livekit_ws_url
        await push.stop()

        # Deleting the ingress: the chart's operator ends the session and lets the CR go.
        await run(stack, *kubectl(stack, "-n", ns, "delete", "livekitingress", "cam", "--wait=false"))

        async def gone() -> bool:
            return await kube.get_or_none(path) is None

        await wait_for(gone, "the ingress to be deleted", 30)
        logs = sorted(stack.pod_logs_dir.glob(f"{ns}_*.log"))
        assert {p.name.rsplit("_", 1)[1] for p in logs} == {
            "operator.log",
            "shim.log",
            "frontdoor.log",
            "media.log",
        }
        for p in logs:
            assert "Traceback" not in p.read_text(errors="replace"), f"a traceback in {p}"

        await run(stack, *helm("uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "60s"))
        installed = False

        async def nothing_left() -> bool:
            # Pods and ReplicaSets go after their Deployments (garbage collection): wait for them.
            left = await run(
                stack, *kubectl(stack, "-n", ns, "get", NAMESPACED_KINDS, "-l", INSTANCE, "-o", "name")
            )
            cluster = await run(
                stack,
                *kubectl(stack, "get", "clusterroles,clusterrolebindings", "-l", INSTANCE, "-o", "name"),
            )
            release = await run(
                stack,
                *kubectl(stack, "-n", ns, "get", "secrets", "-l", f"owner=helm,name={RELEASE}", "-o", "name"),
            )
            # Nor anything the release's components made without its label: media pods,
            # stream-key Secrets, ingresses (only the user's LiveKit Secret is left).
            made = await run(
                stack, *kubectl(stack, "-n", ns, "get", "pods,secrets,livekitingresses", "-o", "name")
            )
            made = "\n".join(line for line in made.splitlines() if line != "secret/lk-keys")
            assert not (left + cluster + release + made).strip(), left + cluster + release + made
            return True

        await wait_for(nothing_left, "the release's objects to be gone", 30)
        # The CRD stays (Helm never deletes what crds/ installed), and with it every ingress.
        assert await kube.get_or_none(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD}")
    finally:
        if push is not None:
            await push.stop()
        if installed:  # a failure above: leave no cluster-wide objects behind
            await asyncio.to_thread(
                subprocess.run,
                helm("uninstall", RELEASE, "-n", ns),
                env=stack.client_env(),
                capture_output=True,
                timeout=60,
            )
        await kube.delete(f"/api/v1/namespaces/{ns}")
