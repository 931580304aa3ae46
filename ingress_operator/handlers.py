"""kopf handlers: thin wrappers that call `reconcile` and apply what it asks for.

The operator is level-triggered: every version of every LiveKitIngress passes through
`observe`, which does nothing when the status already matches the spec and reconciles when
it does not. kopf's change-detection handlers (on.create/on.update/on.delete) are not used,
so kopf writes no annotations of its own into the objects (nothing for Argo CD or Flux to
see) and each new ingress costs one status write instead of three.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from ingress_operator import metrics
from ingress_operator.config import Settings
from ingress_operator.kube import Kube, connect
from ingress_operator.models import FINALIZER, GROUP, PLURAL, VERSION
from ingress_operator.reconcile import cleanup, reconcile, up_to_date, waiting_for_secret

RESOURCE = (GROUP, VERSION, PLURAL)
RETRY_SECONDS = 10
log = logging.getLogger("ingress_operator")


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 240
    memo.config = Settings()
    memo.kube = Kube(connect(memo.config.ingress_namespace), memo.config.ingress_namespace)


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    await memo.kube.client.close()


@kopf.on.event(*RESOURCE)
async def observe(
    event: kopf.RawEvent, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Reconcile an ingress whose status is behind its spec; clean up one being deleted."""
    uid = body.metadata.uid or ""
    if event["type"] == "DELETED":
        metrics.forget_ingress(uid)
        return
    metrics.note_ingress(uid, (body.status.get("state") or {}).get("status"))
    finalizers = list(body.metadata.get("finalizers") or [])
    if body.metadata.get("deletionTimestamp"):
        if FINALIZER in finalizers:
            await cleanup(memo.kube, dict(body))
            patch.metadata["finalizers"] = [f for f in finalizers if f != FINALIZER]
        return
    if not up_to_date(dict(body)):
        await ensure(body, patch, memo)


@kopf.timer(*RESOURCE, interval=RETRY_SECONDS, when=lambda status, **_: waiting_for_secret(dict(status)))
async def retry(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Look again for a streamKeySecretRef Secret that did not exist yet."""
    await ensure(body, patch, memo)


async def ensure(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo) -> None:
    with metrics.RECONCILE_SECONDS.time():
        outcome = await reconcile(memo.kube, memo.config, dict(body))
    patch.metadata.labels.update(outcome.labels)
    if outcome.finalizers is not None:
        patch.metadata["finalizers"] = outcome.finalizers
    patch.status.update(outcome.status)
    ingress_id = outcome.status.get("ingressId") or body.status.get("ingressId")
    if outcome.status:
        log.info("ingress reconciled", extra={"ingress_id": ingress_id, "changed": sorted(outcome.status)})
    if outcome.error is not None:
        metrics.RECONCILE_ERRORS.labels(outcome.error.reason).inc()
        log.warning(outcome.error.msg, extra={"ingress_id": ingress_id, "reason": outcome.error.reason})
