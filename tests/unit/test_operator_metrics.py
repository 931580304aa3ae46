"""The operator's ingress and session gauges follow each ingress's latest version."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from ingress_operator import metrics


def cr(state: str, session: bool = False, input_type: str = "RTMP") -> dict[str, Any]:
    status: dict[str, Any] = {"state": {"status": state}}
    if session:
        status["session"] = {"resourceId": "RT_x", "source": "s"}
    return {"spec": {"inputType": input_type}, "status": status}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_gauges_count_each_ingress_once_in_its_latest_state() -> None:
    before = {s: value("lki_ingresses", state=s) for s in ("ENDPOINT_INACTIVE", "ENDPOINT_PUBLISHING")}
    live_before = value("lki_sessions", input_type="URL")
    metrics.note_ingress("uid-a", cr("ENDPOINT_INACTIVE"))
    metrics.note_ingress("uid-b", {})  # no status yet: inactive
    assert value("lki_ingresses", state="ENDPOINT_INACTIVE") == before["ENDPOINT_INACTIVE"] + 2
    metrics.note_ingress("uid-a", cr("ENDPOINT_PUBLISHING", session=True, input_type="URL"))
    assert value("lki_ingresses", state="ENDPOINT_INACTIVE") == before["ENDPOINT_INACTIVE"] + 1
    assert value("lki_ingresses", state="ENDPOINT_PUBLISHING") == before["ENDPOINT_PUBLISHING"] + 1
    assert value("lki_sessions", input_type="URL") == live_before + 1
    metrics.forget_ingress("uid-a")
    metrics.forget_ingress("uid-b")
    metrics.forget_ingress("uid-b")  # a second DELETED event changes nothing
    assert value("lki_ingresses", state="ENDPOINT_INACTIVE") == before["ENDPOINT_INACTIVE"]
    assert value("lki_ingresses", state="ENDPOINT_PUBLISHING") == before["ENDPOINT_PUBLISHING"]
    assert value("lki_sessions", input_type="URL") == live_before
    assert value("lki_sessions", input_type="WHIP") == 0  # exported from the start
