"""What the operator does about a session, for each state of the CR and its media pod."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from ingress_operator.config import Settings
from ingress_operator.models import ID_LABEL
from ingress_operator.sessions import RESOURCE_LABEL, PodView, plan, pod_name

RID = "RT_abcdefghijkl"
POD = pod_name("cam", RID)
SETTINGS = Settings(media_command=["/venv/bin/lki-media"])


def cr(
    session: bool = True,
    pod_created: bool = False,
    state: str = "ENDPOINT_BUFFERING",
    state_rid: str = RID,
    generation: int = 3,
    session_generation: int = 3,
    enabled: bool | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "cam",
        "uid": "u-1",
        "generation": generation,
        "labels": {ID_LABEL: "IN_x"},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    status: dict[str, Any] = {"ingressId": "IN_x", "state": {"status": state, "resourceId": state_rid}}
    if session:
        status["session"] = {
            "resourceId": RID,
            "source": f"http://127.0.0.1:8080/sessions/{RID}",
            "generation": session_generation,
            **({"pod": POD} if pod_created else {}),
        }
    spec: dict[str, Any] = {"inputType": "RTMP", "participantIdentity": "p", "roomName": "r"}
    if enabled is not None:
        spec["enabled"] = enabled
    return {"metadata": meta, "spec": spec, "status": status}


def pod(phase: str, rid: str = RID, exit_code: int | None = None) -> PodView:
    return PodView(pod_name("cam", rid), rid, phase, exit_code, "Error" if exit_code else "")


STUCK_POD = PodView(POD, RID, "Pending", None, "ImagePullBackOff", "Back-off pulling image", stuck=True)


def ops_summary(ops: list[dict[str, Any]]) -> dict[str, Any]:
    """{path: value} of the patch, after checking it is guarded by the session's id."""
    if not ops:
        return {}
    assert ops[0] == {"op": "test", "path": "/status/session/resourceId", "value": RID}
    return {o["path"]: o.get("value", o["op"]) for o in ops[1:]}


CASES: list[tuple[str, dict[str, Any], list[PodView], bool | None, dict[str, Any]]] = [
    ("no session, no pod", cr(session=False), [], None, {}),
    ("new session: create the pod", cr(), [], None, {"create": True, "/status/session/pod": POD}),
    ("pod starting", cr(pod_created=True), [pod("Pending")], None, {}),
    ("pod running", cr(pod_created=True, state="ENDPOINT_PUBLISHING"), [pod("Running")], None, {}),
    (
        "pod done, wrote its final state",
        cr(pod_created=True, state="ENDPOINT_INACTIVE"),
        [pod("Succeeded", exit_code=0)],
        None,
        {"delete": [POD], "/status/session": "remove"},
    ),
    (
        "pod done without a final state",
        cr(pod_created=True, state="ENDPOINT_PUBLISHING"),
        [pod("Succeeded", exit_code=0)],
        None,
        {"delete": [POD], "/status/session": "remove", "/status/state/status": "ENDPOINT_INACTIVE"},
    ),
    (
        "pod crashed",
        cr(pod_created=True, state="ENDPOINT_PUBLISHING"),
        [pod("Failed", exit_code=137)],
        None,
        {
            "delete": [POD],
            "/status/session": "remove",
            "/status/state/status": "ENDPOINT_ERROR",
            "/status/state/error": f"media pod {POD} exit code 137 (Error)",
        },
    ),
    (
        "pod failed after writing its own error",
        cr(pod_created=True, state="ENDPOINT_ERROR"),
        [pod("Failed", exit_code=1)],
        None,
        {"delete": [POD], "/status/session": "remove", "/status/state/status": "ENDPOINT_ERROR"},
    ),
    (
        "pod deleted by someone",
        cr(pod_created=True, state="ENDPOINT_PUBLISHING"),
        [],
        False,
        {
            "/status/session": "remove",
            "/status/state/status": "ENDPOINT_ERROR",
            "/status/state/error": f"media pod {POD} was deleted",
        },
    ),
    ("pod not in the index yet", cr(pod_created=True), [], True, {}),
    (
        "pod deleted gracefully (it wrote INACTIVE)",
        cr(pod_created=True, state="ENDPOINT_INACTIVE"),
        [],
        False,
        {"/status/session": "remove"},
    ),
    (
        "pod can't start",
        cr(pod_created=True),
        [STUCK_POD],
        None,
        {
            "delete": [POD],
            "/status/session": "remove",
            "/status/state/status": "ENDPOINT_ERROR",
            "/status/state/error": f"media pod {POD} can't start (ImagePullBackOff, Back-off pulling image)",
        },
    ),
    (
        "spec changed (UpdateIngress)",
        cr(pod_created=True, state="ENDPOINT_PUBLISHING", generation=4),
        [pod("Running")],
        None,
        {"delete": [POD], "/status/session": "remove", "/status/state/status": "ENDPOINT_INACTIVE"},
    ),
    (
        "disabled",
        cr(pod_created=True, state="ENDPOINT_PUBLISHING", enabled=False),
        [pod("Running")],
        None,
        {"delete": [POD], "/status/session": "remove", "/status/state/status": "ENDPOINT_INACTIVE"},
    ),
    ("CR deleted", cr(pod_created=True, deleting=True), [pod("Running")], None, {"delete": [POD]}),
    (
        "encoder reconnected: the old session's pod goes, the new one is made",
        cr(),
        [pod("Running", rid="RT_oldoldoldold")],
        None,
        {"delete": [pod_name("cam", "RT_oldoldoldold")], "create": True, "/status/session/pod": POD},
    ),
    (
        "session gone: leftover pods go",
        cr(session=False),
        [pod("Succeeded")],
        None,
        {"delete": [POD]},
    ),
]


@pytest.mark.parametrize(("case", "body", "pods", "exists", "expected"), CASES, ids=[c[0] for c in CASES])
def test_plan(
    case: str, body: dict[str, Any], pods: list[PodView], exists: bool | None, expected: dict[str, Any]
) -> None:
    todo = plan(body, pods, SETTINGS, exists)
    got = ops_summary(todo.status_ops)
    for key in ("/status/state/endedAt", "/status/state/updatedAt"):
        if key in got:
            assert got.pop(key).endswith("Z")
    if todo.delete:
        got["delete"] = todo.delete
    if todo.create is not None:
        got["create"] = True
    assert got == expected


def test_media_pod_manifest() -> None:
    todo = plan(cr(), [], SETTINGS)
    manifest = todo.create
    assert manifest is not None
    meta, spec = manifest["metadata"], manifest["spec"]
    assert meta["name"] == POD == "cam-rt-abcdefghijkl"
    assert meta["labels"][ID_LABEL] == "IN_x" and meta["labels"][RESOURCE_LABEL] == RID
    assert meta["ownerReferences"][0]["uid"] == "u-1" and meta["ownerReferences"][0]["controller"]
    assert spec["restartPolicy"] == "Never" and spec["serviceAccountName"] == "lki-media"
    (container,) = spec["containers"]
    assert container["command"] == ["/venv/bin/lki-media"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["RESOURCE_ID"] == RID and env["INGRESS_NAME"] == "cam"
    assert env["SOURCE_URL"] == f"http://127.0.0.1:8080/sessions/{RID}"
    assert env["LIVEKIT_API_SECRET"] == {"secretKeyRef": {"name": "livekit-api", "key": "apiSecret"}}
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"]
    # Unset scheduling options leave the cluster's defaults alone.
    assert not {"nodeSelector", "tolerations", "imagePullSecrets"} & set(spec)
    assert "annotations" not in meta and "imagePullPolicy" not in container
    # Admitted where Pod Security "restricted" is enforced.
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_media_pod_scheduling_and_pull_options_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart sets these as JSON env (values `media.*`); they land in every media pod."""
    toleration = {"key": "media", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    monkeypatch.setenv("MEDIA_NODE_SELECTOR", '{"pool": "media"}')
    monkeypatch.setenv("MEDIA_TOLERATIONS", f"[{json.dumps(toleration)}]")
    monkeypatch.setenv("MEDIA_IMAGE_PULL_POLICY", "IfNotPresent")
    monkeypatch.setenv("MEDIA_IMAGE_PULL_SECRETS", '["registry"]')
    monkeypatch.setenv("MEDIA_ANNOTATIONS", '{"sidecar.istio.io/inject": "false"}')
    manifest = plan(cr(), [], Settings()).create
    assert manifest is not None
    meta, spec = manifest["metadata"], manifest["spec"]
    assert spec["nodeSelector"] == {"pool": "media"}
    assert spec["tolerations"] == [toleration]
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert spec["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert meta["annotations"] == {"sidecar.istio.io/inject": "false"}


def test_an_unknown_pull_policy_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIA_IMAGE_PULL_POLICY", "Sometimes")
    with pytest.raises(ValidationError, match="media_image_pull_policy"):
        Settings()


@pytest.mark.parametrize(
    ("cr_name", "expected"),
    [
        ("cam", "cam-rt-abcdefghijkl"),
        ("x" * 70, "x" * 47 + "-rt-abcdefghijkl"),
        ("a-" + "b" * 44 + "-c", ("a-" + "b" * 44 + "-c")[:47].rstrip("-.") + "-rt-abcdefghijkl"),
    ],
)
def test_pod_name_fits_a_label(cr_name: str, expected: str) -> None:
    name = pod_name(cr_name, RID)
    assert name == expected and len(name) <= 63


def url_cr(
    ready: str = "True",
    ready_generation: int = 1,
    state: dict[str, Any] | None = None,
    session: bool = False,
    deleting: bool = False,
    input_type: str = "URL",
    ingress_id: str = "IN_x",
) -> dict[str, Any]:
    """A URL ingress as the operator sees it after its first reconcile."""
    meta: dict[str, Any] = {
        "name": "pull",
        "uid": "u-2",
        "generation": 1,
        "resourceVersion": "41",
        "labels": {ID_LABEL: "IN_x"},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    status: dict[str, Any] = {
        "ingressId": ingress_id,
        "state": state or {"status": "ENDPOINT_INACTIVE"},
        "conditions": [{"type": "Ready", "status": ready, "observedGeneration": ready_generation}],
    }
    if session:
        status["session"] = {"resourceId": "UR_abcdefghijkl", "source": "http://h/a.mp4", "generation": 1}
    spec = {"inputType": input_type, "url": "http://h/a.mp4", "roomName": "r", "participantIdentity": "p"}
    return {"metadata": meta, "spec": spec, "status": status}


URL_CASES = [
    ("ready, never pulled: starts", url_cr(), True),
    ("not ready", url_cr(ready="False"), False),
    ("ready for an older generation", url_cr(ready_generation=0), False),
    ("id not yet in the status", url_cr(ingress_id=""), False),
    ("being deleted", url_cr(deleting=True), False),
    ("complete: not reusable", url_cr(state={"status": "ENDPOINT_COMPLETE", "resourceId": "UR_a"}), False),
    ("failed: not retried", url_cr(state={"status": "ENDPOINT_ERROR", "resourceId": "UR_a"}), False),
    ("an RTMP ingress waits for its encoder", url_cr(input_type="RTMP"), False),
]


@pytest.mark.parametrize(("case", "body", "starts"), URL_CASES, ids=[c[0] for c in URL_CASES])
def test_url_session_start(case: str, body: dict[str, Any], starts: bool) -> None:
    todo = plan(body, [], SETTINGS)
    assert todo.create is None  # the pod comes once the session is recorded
    if not starts:
        assert todo.status_ops == [], case
        return
    guard, session, state = todo.status_ops
    # Only on the version of the CR that was looked at: a stale event can't start a second pull.
    assert guard == {"op": "test", "path": "/metadata/resourceVersion", "value": "41"}
    assert session["path"] == "/status/session"
    assert session["value"]["resourceId"].startswith("UR_")
    assert session["value"]["source"] == "http://h/a.mp4"
    assert session["value"]["generation"] == 1
    assert state["value"]["status"] == "ENDPOINT_BUFFERING"
    assert state["value"]["resourceId"] == session["value"]["resourceId"]


def test_a_recorded_url_session_gets_its_pod() -> None:
    body = url_cr(session=True, state={"status": "ENDPOINT_BUFFERING", "resourceId": "UR_abcdefghijkl"})
    todo = plan(body, [], SETTINGS)
    assert todo.create is not None
    env = {e["name"]: e.get("value") for e in todo.create["spec"]["containers"][0]["env"]}
    assert env["SOURCE_URL"] == "http://h/a.mp4"
    assert env["RESOURCE_ID"] == "UR_abcdefghijkl"


@pytest.mark.parametrize("vanished", [False, True], ids=["pod succeeded", "pod gone"])
@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("ENDPOINT_COMPLETE", None),  # the end of the source: nothing more to write
        ("ENDPOINT_ERROR", None),  # the pod's own error stays
        ("ENDPOINT_INACTIVE", "media pod"),  # SIGTERM (eviction, drain) mid-pull
        ("ENDPOINT_PUBLISHING", "media pod"),  # exited without writing its end
    ],
)
def test_a_url_pod_that_stopped_early_ends_the_pull_in_error(
    state: str, expected: str | None, vanished: bool
) -> None:
    """Whether the operator sees the pod's Succeeded phase or only finds it gone (an eviction
    deletes it at once), a pull that did not reach its end is an error, never INACTIVE."""
    rid = "UR_abcdefghijkl"
    body = url_cr(session=True, state={"status": state, "resourceId": rid})
    body["status"]["session"]["pod"] = pod_name("pull", rid)
    if vanished:
        todo = plan(body, [], SETTINGS, pod_exists=False)
    else:
        todo = plan(body, [PodView(pod_name("pull", rid), rid, "Succeeded", 0)], SETTINGS)
        assert todo.delete == [pod_name("pull", rid)]
    written = {op["path"]: op.get("value") for op in todo.status_ops}
    assert "/status/session" in written  # the session is over either way
    if expected is None:
        assert "/status/state/status" not in written
    else:
        assert written["/status/state/status"] == "ENDPOINT_ERROR"
        assert expected in str(written["/status/state/error"])
