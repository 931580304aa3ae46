"""Prometheus metrics of the operator."""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import Counter, Gauge, Histogram

from ingress_operator.models import IngressStatus

RECONCILE_SECONDS = Histogram("lki_operator_reconcile_seconds", "Time to reconcile one LiveKitIngress")
RECONCILE_ERRORS = Counter("lki_operator_reconcile_errors_total", "Failed reconciles by reason", ["reason"])
INGRESSES = Gauge("lki_ingresses", "LiveKitIngress objects by IngressState status", ["state"])

_states: dict[str, str] = {}


def note_ingress(uid: str, state: str | None) -> None:
    _states[uid] = state or IngressStatus.ENDPOINT_INACTIVE.value
    _export()


def forget_ingress(uid: str) -> None:
    _states.pop(uid, None)
    _export()


def _export() -> None:
    tally = Tally(_states.values())
    for state in IngressStatus:
        INGRESSES.labels(state.value).set(tally.get(state.value, 0))
