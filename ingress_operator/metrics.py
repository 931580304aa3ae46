"""Prometheus metrics of the operator."""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import Counter, Gauge, Histogram

RECONCILE_SECONDS = Histogram("lki_operator_reconcile_seconds", "Time to reconcile one LiveKitIngress")
RECONCILE_ERRORS = Counter("lki_operator_reconcile_errors_total", "Failed reconciles by reason", ["reason"])
INGRESSES = Gauge("lki_ingresses", "LiveKitIngress objects by IngressState status", ["state"])

_states: dict[str, str] = {}


def note_ingress(uid: str, state: str | None) -> None:
    _states[uid] = state or "ENDPOINT_INACTIVE"
    _export()


def forget_ingress(uid: str) -> None:
    _states.pop(uid, None)
    _export()


def _export() -> None:
    tally = Tally(_states.values())
    for state in (
        "ENDPOINT_INACTIVE",
        "ENDPOINT_BUFFERING",
        "ENDPOINT_PUBLISHING",
        "ENDPOINT_ERROR",
        "ENDPOINT_COMPLETE",
    ):
        INGRESSES.labels(state).set(tally.get(state, 0))
