"""Prometheus metrics of the operator (served on OPERATOR_METRICS_PORT)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from ingress_operator.models import IngressStatus, InputType
from ingress_operator.promhttp import identify

RECONCILE_SECONDS = Histogram("lki_operator_reconcile_seconds", "Time to reconcile one LiveKitIngress")
RECONCILE_ERRORS = Counter("lki_operator_reconcile_errors_total", "Failed reconciles by reason", ["reason"])
INGRESSES = Gauge("lki_ingresses", "LiveKitIngress objects by IngressState status", ["state"])
SESSIONS = Gauge("lki_sessions", "LiveKitIngresses with a live status.session by input type", ["input_type"])

identify("operator")

# uid -> (state, input type while a session lives, else None)
_seen: dict[str, tuple[str, str | None]] = {}


def note_ingress(uid: str, body: Mapping[str, Any]) -> None:
    """Count one version of an ingress: its state, and its input type if a session lives."""
    status = body.get("status") or {}
    state = (status.get("state") or {}).get("status") or IngressStatus.ENDPOINT_INACTIVE.value
    live = (body.get("spec") or {}).get("inputType") if status.get("session") else None
    _count(_seen.get(uid), -1)
    _seen[uid] = (state, live)
    _count(_seen[uid], +1)


def forget_ingress(uid: str) -> None:
    """An ingress is gone: it counts no more."""
    _count(_seen.pop(uid, None), -1)


def _count(seen: tuple[str, str | None] | None, by: int) -> None:
    # Moved by one ingress at a time: an event costs the same with 10 ingresses or 10 000.
    if seen is None:
        return
    state, live = seen
    INGRESSES.labels(state).inc(by)
    if live:
        SESSIONS.labels(live).inc(by)


# Every label from the start: a dashboard shows 0, not "no data".
for _state in IngressStatus:
    INGRESSES.labels(_state.value).set(0)
for _input_type in InputType:
    SESSIONS.labels(_input_type.value).set(0)
