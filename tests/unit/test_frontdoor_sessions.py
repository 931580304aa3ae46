"""The front door's session rules, over a real IngressStore fed by hand and a fake API server
that applies JSON patches the way Kubernetes does (tests fail, paths must exist)."""

from __future__ import annotations

import asyncio
import base64
import copy
from typing import Any

import pytest

from ingress_operator.config import Settings
from ingress_operator.models import FINALIZER, ID_LABEL, STREAM_KEY_FIELD, InputType
from ingress_operator.store import IngressStore
from ingress_pod.frontdoor import flv
from ingress_pod.frontdoor.sessions import Refused, SessionRegistry

KEY = "k3yk3yk3yk3y"


class FakeKube:
    """One CR; JSON patches of its status applied with RFC 6902 semantics (enough of them)."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.patches: list[list[dict[str, Any]]] = []

    async def json_patch_status(self, name: str, ops: list[dict[str, Any]]) -> dict[str, Any] | None:
        self.patches.append(ops)
        new = copy.deepcopy(self.obj)
        for op in ops:
            *parents, leaf = op["path"].strip("/").split("/")
            node = new
            for part in parents:
                if part not in node:
                    return None
                node = node[part]
            if op["op"] == "test" and node.get(leaf) != op["value"]:
                return None
            if op["op"] == "remove":
                if leaf not in node:
                    return None
                del node[leaf]
            if op["op"] in ("add", "replace"):
                node[leaf] = op["value"]
        new["metadata"]["resourceVersion"] = str(int(new["metadata"]["resourceVersion"]) + 1)
        self.obj = new
        return copy.deepcopy(new)


def cr(enabled: bool | None = None, input_type: str = "RTMP", ready: bool | None = True) -> dict[str, Any]:
    """ready: None = not reconciled yet; False = Ready False (an invalid spec)."""
    spec: dict[str, Any] = {"inputType": input_type, "participantIdentity": "p", "roomName": "r"}
    if enabled is not None:
        spec["enabled"] = enabled
    status: dict[str, Any] = {"state": {"status": "ENDPOINT_INACTIVE"}}
    if ready is not None:
        status["ingressId"] = "IN_abcdefghijkl"
        status["conditions"] = [
            {
                "type": "Ready",
                "status": str(ready),
                "reason": "Ready" if ready else "InvalidSpec",
                "message": "waiting for input" if ready else "spec.roomName: room name is required",
                "lastTransitionTime": "2026-12-01T00:00:00Z",
            }
        ]
    return {
        "metadata": {
            "name": "cam",
            "uid": "u1",
            "resourceVersion": "10",
            "generation": 2,
            "labels": {ID_LABEL: "IN_abcdefghijkl"},
            "finalizers": [FINALIZER],
        },
        "spec": spec,
        "status": status,
    }


def registry(obj: dict[str, Any], attach_timeout: float = 60) -> tuple[SessionRegistry, FakeKube]:
    kube = FakeKube(obj)
    store = IngressStore(kube, Settings())  # type: ignore[arg-type]
    store.secrets["cam-stream-key"] = {STREAM_KEY_FIELD: base64.b64encode(KEY.encode()).decode()}
    store.remember(obj)
    reg = SessionRegistry(kube, store, "http://fd:8080/", attach_timeout)  # type: ignore[arg-type]
    return reg, kube


@pytest.mark.parametrize(
    ("obj", "key", "reason"),
    [
        (cr(), "nope", "unknown stream key"),
        (cr(), "", "unknown stream key"),
        (cr(enabled=False), KEY, "ingress is disabled"),
        (cr(input_type="WHIP"), KEY, "stream key of a WHIP ingress"),
        (cr(ready=None), KEY, "ingress is not ready yet"),
        (cr(ready=False), KEY, "ingress is not ready: spec.roomName: room name is required"),
    ],
)
async def test_refusals(obj: dict[str, Any], key: str, reason: str) -> None:
    reg, kube = registry(obj)
    with pytest.raises(Refused, match=reason):
        await reg.open(key, InputType.RTMP)
    assert kube.patches == []


async def test_a_publish_becomes_a_session_in_the_cr_and_a_second_one_is_refused() -> None:
    reg, kube = registry(cr())
    session = await reg.open(KEY, InputType.RTMP)
    status = kube.obj["status"]
    assert status["session"] == {
        "resourceId": session.resource_id,
        "source": f"http://fd:8080/sessions/{session.resource_id}/{session.token}",
        "generation": 2,
    }
    assert session.resource_id.startswith("RT_") and len(session.resource_id) == 15
    assert status["state"]["status"] == "ENDPOINT_BUFFERING"
    assert status["state"]["resourceId"] == session.resource_id and status["state"]["startedAt"]
    with pytest.raises(Refused, match="already has a live publisher"):
        await reg.open(KEY, InputType.RTMP)
    reg.close(session, "encoder disconnected")
    again = await reg.open(KEY, InputType.RTMP)  # a reconnect: a new session
    assert again.resource_id != session.resource_id
    assert kube.obj["status"]["session"]["resourceId"] == again.resource_id


async def test_a_publish_racing_an_update_is_refused() -> None:
    reg, kube = registry(cr())
    kube.obj["metadata"]["generation"] = 3  # the API server has the update; the store not yet
    with pytest.raises(Refused, match="being updated"):
        await reg.open(KEY, InputType.RTMP)
    assert "session" not in kube.obj["status"] and reg.by_ingress == {}


async def test_the_pod_reads_headers_and_the_gop_then_live_then_the_end() -> None:
    reg, _ = registry(cr())
    session = await reg.open(KEY, InputType.RTMP)
    session.feed(flv.VIDEO, 0, bytes([0x17, 0]) + b"hdr")
    session.feed(flv.VIDEO, 0, bytes([0x17, 1]) + b"key")
    session.attach()
    session.feed(flv.VIDEO, 33, bytes([0x27, 1]) + b"p")
    reg.close(session, "encoder disconnected")
    chunks = []
    while (chunk := await session.next_chunk()) is not None:
        chunks.append(chunk)
    assert chunks[0].startswith(flv.FILE_HEADER) and chunks[1] == flv.tag(
        flv.VIDEO, 33, bytes([0x27, 1]) + b"p"
    )
    assert session.resource_id not in reg.by_resource  # read to the end: gone


async def test_a_short_push_stays_readable_for_a_late_pod() -> None:
    reg, _ = registry(cr())
    session = await reg.open(KEY, InputType.RTMP)
    reg.close(session, "encoder disconnected")
    assert reg.by_resource[session.resource_id] is session
    session.attach()
    assert (await session.next_chunk() or b"").startswith(flv.FILE_HEADER)
    assert await session.next_chunk() is None


async def test_the_operator_ending_the_session_drops_the_encoder() -> None:
    reg, kube = registry(cr())
    session = await reg.open(KEY, InputType.RTMP)
    ended = copy.deepcopy(kube.obj)
    del ended["status"]["session"]
    ended["metadata"]["resourceVersion"] = "99"
    reg.store.remember(ended)
    assert session.ended.is_set() and session.end_reason == "session ended by the operator"
    assert reg.by_ingress == {}  # the ingress takes a new publisher at once
    assert reg.reader(session.resource_id, "wrong-token") is None


async def test_no_pod_within_the_deadline_ends_the_session_with_an_error() -> None:
    reg, kube = registry(cr(), attach_timeout=0.05)
    session = await reg.open(KEY, InputType.RTMP)
    for _ in range(100):
        if "session" not in kube.obj["status"]:
            break
        await asyncio.sleep(0.01)
    state = kube.obj["status"]["state"]
    assert "session" not in kube.obj["status"]
    assert state["status"] == "ENDPOINT_ERROR" and "no media pod started within 0.05 s" in state["error"]
    assert session.ended.is_set() and session.resource_id not in reg.by_resource


async def test_after_a_restart_sessions_of_the_old_process_are_ended() -> None:
    obj = cr()
    obj["status"]["session"] = {"resourceId": "RT_oldoldoldold", "source": "http://fd:8080/sessions/RT_x/t"}
    obj["status"]["state"] = {"status": "ENDPOINT_PUBLISHING", "resourceId": "RT_oldoldoldold"}
    reg, kube = registry(obj)
    await reg.sweep()
    assert "session" not in kube.obj["status"]
    state = kube.obj["status"]["state"]
    assert (state["status"], state["error"]) == ("ENDPOINT_ERROR", "front door restarted")


async def test_a_restart_leaves_other_front_doors_sessions_alone() -> None:
    obj = cr()
    obj["status"]["session"] = {"resourceId": "RT_oldoldoldold", "source": "http://other:8080/sessions/x/t"}
    reg, kube = registry(obj)
    await reg.sweep()
    assert kube.patches == []
