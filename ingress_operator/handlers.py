"""kopf handlers: thin wrappers that call `reconcile` and apply what it asks for."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from ingress_operator import metrics
from ingress_operator.config import Settings
from ingress_operator.kube import Kube, connect
from ingress_operator.models import FINALIZER, GROUP, PLURAL, VERSION
from ingress_operator.reconcile import cleanup, reconcile

RESOURCE = (GROUP, VERSION, PLURAL)
log = logging.getLogger("ingress_operator")


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping under our own annotation prefix and finalizer name."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 240
    memo.config = Settings()
    memo.kube = Kube(connect(memo.config.ingress_namespace), memo.config.ingress_namespace)


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    await memo.kube.client.close()


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
async def ensure(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Give the ingress its id, stream key and status; retried while a referenced Secret is missing."""
    with metrics.RECONCILE_SECONDS.time():
        outcome = await reconcile(memo.kube, memo.config, dict(body))
    patch.metadata.labels.update(outcome.labels)
    current = body.get("status") or {}
    changed = {k: v for k, v in outcome.status.items() if current.get(k) != v}
    patch.status.update(changed)
    ingress_id = outcome.status["ingressId"]
    if changed:
        log.info("ingress reconciled", extra={"ingress_id": ingress_id, "changed": sorted(changed)})
    if outcome.error is not None:
        metrics.RECONCILE_ERRORS.labels(outcome.error.reason).inc()
        log.warning(outcome.error.msg, extra={"ingress_id": ingress_id, "reason": outcome.error.reason})
        if outcome.retry_after is not None:
            raise kopf.TemporaryError(outcome.error.msg, delay=outcome.retry_after)


@kopf.on.delete(*RESOURCE)
async def remove(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """End the session and remove what the ingress owns before the CR goes."""
    await cleanup(memo.kube, dict(body))


@kopf.on.event(*RESOURCE)
def count(event: kopf.RawEvent, **_: Any) -> None:
    """Keep the ingresses-by-state gauge current from every watch event."""
    obj = event["object"]
    uid = obj.get("metadata", {}).get("uid", "")
    if event["type"] == "DELETED":
        metrics.forget_ingress(uid)
    else:
        metrics.note_ingress(uid, ((obj.get("status") or {}).get("state") or {}).get("status"))
