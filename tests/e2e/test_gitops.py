"""GitOps on a real API server: the examples applied as Argo CD and Flux apply them show no
drift once the operator has reconciled them (it writes an id label, its finalizer and the
status, never the spec), and the Argo CD health check reads the live objects."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Kubectl, eventually
from tests.unit.test_argocd_health import SCRIPT, health

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SOURCE = "https://example.com/media/lobby.mp4"
# Nothing listens on the discard port: the URL example's pull fails at once, on this machine.
LOCAL_SOURCE = "http://127.0.0.1:9/lobby.mp4"
FLUX = "kustomize-controller"  # the field manager Flux applies with
ID_LABEL = "ingress.lkop.dev/id"


def examples(kubectl: Kubectl, tmp_path: Path, tracked: bool) -> tuple[Path, list[dict[str, Any]]]:
    """examples/ rendered through its kustomization.yaml (as both tools render the folder), the
    URL example pointed at a local source; with `tracked`, labelled and annotated as Argo CD
    marks what it applies. Written to a file for kubectl, and returned."""
    docs = list(yaml.safe_load_all(kubectl.run("kustomize", str(ROOT / "examples")).stdout))
    (url,) = [d for d in docs if d["kind"] == "LiveKitIngress" and d["spec"]["inputType"] == "URL"]
    assert url["spec"]["url"] == EXAMPLE_SOURCE
    url["spec"]["url"] = LOCAL_SOURCE
    if tracked:
        for doc in docs:
            meta = doc["metadata"]
            meta["labels"] = {"app.kubernetes.io/instance": "examples"}
            meta["annotations"] = {"argocd.argoproj.io/tracking-id": f"examples:{doc['kind']}:{meta['name']}"}
    path = tmp_path / "examples.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path, docs


def ingresses(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "LiveKitIngress"}


async def reconciled(kubectl: Kubectl, names: set[str]) -> dict[str, dict[str, Any]]:
    """The live LiveKitIngresses once the operator has reconciled each of `names`."""

    async def check() -> dict[str, dict[str, Any]]:
        live = {o["metadata"]["name"]: o for o in kubectl.get("lki")["items"]}
        for name in names:
            meta, status = live[name]["metadata"], live[name].get("status", {})
            assert status.get("ingressId") and status.get("observedGeneration") == meta["generation"], name
        return live

    return await eventually(check, within=30)


async def test_argo_cd_sees_no_drift_and_reads_health(kubectl: Kubectl, tmp_path: Path) -> None:
    """Argo CD applies client-side (kubectl apply) and diffs three ways (last-applied, Git,
    live), as `kubectl diff` does: fields only the operator wrote are not drift."""
    path, docs = examples(kubectl, tmp_path, tracked=True)
    wanted = ingresses(docs)
    kubectl.run("apply", "-f", str(path))
    try:
        live = await reconciled(kubectl, set(wanted))
        diff = kubectl.run("diff", "-f", str(path), check=False)
        assert diff.returncode == 0, diff.stdout + diff.stderr
        for name, doc in wanted.items():
            meta = live[name]["metadata"]
            assert live[name]["spec"] == doc["spec"]  # nothing defaulted into spec
            # The operator's label and finalizer sit beside Argo CD's tracking marks, not over them.
            assert meta["labels"] == {
                **doc["metadata"]["labels"],
                ID_LABEL: live[name]["status"]["ingressId"],
            }
            assert doc["metadata"]["annotations"].items() <= meta["annotations"].items()
            assert meta["finalizers"] == ["ingress.lkop.dev/finalizer"]
        # A sync of the same Git revision is a no-op.
        secret_version = kubectl.get("secret", "stage-cam-stream-key")["metadata"]["resourceVersion"]
        again = kubectl.run("apply", "-f", str(path)).stdout.splitlines()
        assert [line for line in again if "livekitingress" in line and not line.endswith(" unchanged")] == []
        assert kubectl.get("secret", "stage-cam-stream-key")["metadata"]["resourceVersion"] == secret_version

        for name in ("studio-cam", "stage-cam", "desk-browser"):
            assert health(live[name]) == ("Healthy", "ready: waiting for input")

        async def source_down_is_degraded() -> None:
            status, message = health(kubectl.get("lki", "lobby-loop"))
            assert status == "Degraded" and LOCAL_SOURCE in message, (status, message)

        await eventually(source_down_is_degraded, within=30, interval=0.5)
    finally:
        kubectl.run("delete", "-f", str(path), "--wait=true", "--timeout=60s")


async def test_flux_sees_no_drift(kubectl: Kubectl, tmp_path: Path) -> None:
    """Flux (and Argo CD with ServerSideApply/ServerSideDiff) applies server-side under its own
    field manager and re-applies an object only when a server-side dry run of it differs from
    the live object: in labels, annotations, or anything outside metadata and status."""
    path, docs = examples(kubectl, tmp_path, tracked=False)
    wanted = ingresses(docs)
    ssa = ("apply", "--server-side", f"--field-manager={FLUX}", "-f", str(path))
    kubectl.run(*ssa)
    try:
        await reconciled(kubectl, set(wanted))
        dry_run = json.loads(kubectl.run(*ssa, "--dry-run=server", "-o", "json").stdout)["items"]
        for planned in dry_run:
            live = kubectl.get(planned["kind"].lower(), planned["metadata"]["name"])
            for field in ("labels", "annotations"):
                assert planned["metadata"].get(field) == live["metadata"].get(field)
            assert _outside_metadata_and_status(planned) == _outside_metadata_and_status(live)
        diff = kubectl.run("diff", "--server-side", f"--field-manager={FLUX}", "-f", str(path), check=False)
        assert diff.returncode == 0, diff.stdout + diff.stderr

        for name, doc in wanted.items():
            shown = kubectl.run("get", "lki", name, "-o", "json", "--show-managed-fields").stdout
            live = json.loads(shown)
            assert live["spec"] == doc["spec"]
            # Flux owns the whole spec; the operator owns its label, its finalizer and the status.
            spec_owners = {
                m["manager"] for m in live["metadata"]["managedFields"] if "f:spec" in m["fieldsV1"]
            }
            assert spec_owners == {FLUX}
            for entry in live["metadata"]["managedFields"]:
                if entry["manager"] != FLUX and entry.get("subresource") != "status":
                    assert entry["fieldsV1"] == {
                        "f:metadata": {
                            "f:labels": {".": {}, f"f:{ID_LABEL}": {}},
                            "f:finalizers": {".": {}, 'v:"ingress.lkop.dev/finalizer"': {}},
                        }
                    }
    finally:
        kubectl.run("delete", "-f", str(path), "--wait=true", "--timeout=60s")


def _outside_metadata_and_status(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


HEALTH_KEY = "resource.customizations.health.ingress.lkop.dev_LiveKitIngress"
# argocd-cm as Argo CD's install.yaml makes it: its keys must survive adding ours.
INSTALLED_CM: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "argocd-cm", "labels": {"app.kubernetes.io/part-of": "argocd"}},
    "data": {"url": "https://argocd.example.com"},
}


def test_the_health_check_component_merges_into_argocd_cm(kubectl: Kubectl, tmp_path: Path) -> None:
    """gitops/argocd/ as a kustomize component of an Argo CD install adds the one key."""
    (tmp_path / "argocd-cm.yaml").write_text(yaml.safe_dump(INSTALLED_CM))
    component = os.path.relpath(SCRIPT.parent, tmp_path)  # kustomize refuses absolute paths
    install = {"resources": ["argocd-cm.yaml"], "components": [component], "namespace": "argocd"}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(install))
    (built,) = yaml.safe_load_all(kubectl.run("kustomize", str(tmp_path)).stdout)
    assert built["metadata"]["name"] == "argocd-cm"
    assert built["data"] == {**INSTALLED_CM["data"], HEALTH_KEY: SCRIPT.read_text()}


def test_the_health_check_patches_into_a_running_argocd_cm(kubectl: Kubectl) -> None:
    """The install command of docs/gitops.md adds the one key to a live argocd-cm."""
    argocd = ("-n", "argocd")
    kubectl.run("create", "namespace", "argocd")
    try:
        kubectl.run(*argocd, "apply", "-f", "-", stdin=json.dumps(INSTALLED_CM))
        made = kubectl.run(
            *argocd, "create", "configmap", "argocd-cm", "--dry-run=client", "-o", "yaml",
            f"--from-file={HEALTH_KEY}={SCRIPT}",
        )  # fmt: skip
        patch = ("patch", "configmap", "argocd-cm", "--type", "merge", "--patch-file", "/dev/stdin")
        kubectl.run(*argocd, *patch, stdin=made.stdout)
        live = kubectl.run(*argocd, "get", "configmap", "argocd-cm", "-o", "json").stdout
        assert json.loads(live)["data"] == {**INSTALLED_CM["data"], HEALTH_KEY: SCRIPT.read_text()}
    finally:
        kubectl.run("delete", "namespace", "argocd", "--wait=false")
