"""Prometheus metrics of the operator (served on OPERATOR_METRICS_PORT)."""

from __future__ import annotations

from collections import Counter as Tally
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
    _seen[uid] = (state, live)
    _export()


def forget_ingress(uid: str) -> None:
    """An ingress is gone: it counts no more."""
    _seen.pop(uid, None)
    _export()


def _export() -> None:
    states = Tally(state for state, _ in _seen.values())
    for state in IngressStatus:
        INGRESSES.labels(state.value).set(states.get(state.value, 0))
    live = Tally(input_type for _, input_type in _seen.values() if input_type)
    for input_type in InputType:
        SESSIONS.labels(input_type.value).set(live.get(input_type.value, 0))


_export()  # every label from the start: a dashboard shows 0, not "no data"
