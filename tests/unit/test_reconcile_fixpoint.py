"""The operator is level-triggered: what one reconcile writes must make the next one a no-op,
or every watch event would reconcile (and write) again. URL ingresses need no Secret, so the
check runs without a Kubernetes API."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ingress_operator.config import Settings
from ingress_operator.models import FINALIZER, ID_LABEL
from ingress_operator.reconcile import Outcome, reconcile, up_to_date

SETTINGS = Settings()


def cr(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "n", "uid": "u1", "generation": 1, "resourceVersion": "1", **meta},
        "spec": spec,
    }


def written(body: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    """The object after the API server applied the outcome's merge patches."""
    after = copy.deepcopy(body)
    after["metadata"].setdefault("labels", {}).update(outcome.labels)
    if outcome.finalizers is not None:
        after["metadata"]["finalizers"] = outcome.finalizers
    status = after.setdefault("status", {})
    for key, value in outcome.status.items():
        if value is None:
            status.pop(key, None)
        else:
            status[key] = value
    return after


URL = {"inputType": "URL", "participantIdentity": "p", "roomName": "r", "url": "http://h/a.mp4"}


@pytest.mark.parametrize(
    "body",
    [
        cr(URL),  # as kubectl applies it: no id, no finalizer, no status
        cr(URL, labels={ID_LABEL: "IN_abcdefghijkl"}, finalizers=[FINALIZER]),  # as the shim creates it
        cr({**URL, "url": "ftp://h/a"}),  # a spec the CRD can't refuse but LiveKit does
    ],
)
async def test_one_reconcile_reaches_a_fixpoint(body: dict[str, Any]) -> None:
    first = await reconcile(None, SETTINGS, body)  # type: ignore[arg-type]  # URL input: no API calls
    after = written(body, first)
    assert up_to_date(after)
    second = await reconcile(None, SETTINGS, after)  # type: ignore[arg-type]
    assert second.status == {} and second.labels == {} and second.finalizers is None


async def test_a_new_generation_is_reconciled_and_an_error_state_reset() -> None:
    body = written(cr(URL), await reconcile(None, SETTINGS, cr(URL)))  # type: ignore[arg-type]
    body["status"]["state"] = {"status": "ENDPOINT_ERROR", "error": "boom"}
    body["metadata"]["generation"] = 2
    assert not up_to_date(body)
    outcome = await reconcile(None, SETTINGS, body)  # type: ignore[arg-type]
    assert outcome.status["state"] == {"status": "ENDPOINT_INACTIVE", "error": "boom"}
    assert outcome.status["observedGeneration"] == 2


async def test_the_second_claimant_of_an_id_gives_it_up() -> None:
    labels = {ID_LABEL: "IN_abcdefghijkl"}
    holder = cr(URL, labels=labels, uid="u0", creationTimestamp="2026-01-01T00:00:00Z")
    holder["status"] = {"ingressId": "IN_abcdefghijkl"}
    copy_ = cr(URL, labels=labels, creationTimestamp="2026-01-01T00:00:00Z", finalizers=[FINALIZER])
    claims = [("u0", (False, "2026-01-01T00:00:00Z", "n")), ("u1", (True, "2026-01-01T00:00:00Z", "n"))]
    outcome = await reconcile(None, SETTINGS, copy_, claims)  # type: ignore[arg-type]
    assert outcome.error is not None and outcome.error.reason == "DuplicateIngressId"
    assert outcome.status.get("ingressId") is None and outcome.retry
    assert not up_to_date(written(copy_, outcome))
