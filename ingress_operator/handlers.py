"""kopf handlers: thin wrappers that call `reconcile` and apply what it asks for.

The operator is level-triggered: every version of every LiveKitIngress passes through
`observe`, which does nothing when the status already matches the spec and reconciles when it
does not. kopf serves as the watch and the per-object queue only: no change-detection
handlers, timers or daemons, so kopf writes no annotations or finalizers of its own into the
objects (nothing for Argo CD or Flux to see), and each new ingress costs one status write.
A reconcile that fails (the API server busy, a referenced Secret not there yet) is retried
with back-off by `Retries`, until it succeeds or a newer version of the object arrives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
import kopf
from lightkube import ApiError

from ingress_operator import metrics, sessions
from ingress_operator.config import Settings
from ingress_operator.kube import Kube, Obj, connect
from ingress_operator.models import GROUP, ID_LABEL, KIND, PLURAL, VERSION, seniority
from ingress_operator.reconcile import Claim, apply, finish_deletion, reconcile, up_to_date
from ingress_operator.sessions import PodView

RESOURCE = (GROUP, VERSION, PLURAL)
log = logging.getLogger("ingress_operator")


@dataclass
class Operator:
    """What every handler shares. kopf hands each object a shallow copy of the memo, so state
    set on one object's memo is invisible to the others: it lives here instead."""

    config: Settings
    kube: Kube
    retries: Retries = field(init=False)
    by_id: Mapping[str, Collection[Claim]] = field(default_factory=dict)
    media_pods: Mapping[str, Collection[sessions.PodView]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.retries = Retries(self)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 240
    # The resources are known and the namespace is fixed: kopf's start-up scan of CRDs and
    # namespaces would need a ClusterRole (and retries for a minute without one).
    settings.scanning.disabled = True
    config = Settings()
    memo.op = Operator(config, Kube(connect(config.ingress_namespace), config.ingress_namespace))


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    memo.op.retries.cancel_all()
    await memo.op.kube.client.close()


@kopf.index(*RESOURCE, labels={ID_LABEL: kopf.PRESENT})
def by_id(body: kopf.Body, **_: Any) -> dict[str, Claim]:
    """Who claims which ingress id (more than one CR only when a manifest was copied)."""
    return {body.metadata.labels[ID_LABEL]: (body.metadata.uid or "", seniority(dict(body)))}


MEDIA_PODS: dict[str, Any] = {sessions.COMPONENT_LABEL: sessions.MEDIA, ID_LABEL: kopf.PRESENT}


@kopf.index("", "v1", "pods", labels=MEDIA_PODS)
def media_pods(body: kopf.Body, **_: Any) -> dict[str, sessions.PodView]:
    """The media pods of each ingress, by the name of the CR that owns them."""
    owner = _owner(body)
    return {owner: sessions.PodView.of(dict(body))} if owner else {}


@kopf.on.event(*RESOURCE)
async def observe(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Every version of every ingress: reconcile it if its status is behind its spec."""
    op: Operator = memo.op
    op.by_id = kwargs["by_id"]  # the indices above, handed in by kopf by their names
    op.media_pods = kwargs["media_pods"]
    uid = body.metadata.uid or ""
    op.retries.cancel(body.metadata.name)
    if event["type"] == "DELETED":
        metrics.forget_ingress(uid)
        return
    metrics.note_ingress(uid, body)
    await converge(op, dict(body))


@kopf.on.event("", "v1", "pods", labels=MEDIA_PODS)
async def media_pod(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A media pod started, ended or went: its ingress's session may need to move on."""
    op: Operator = memo.op
    op.media_pods = kwargs["media_pods"]
    owner, pod = _owner(body), PodView.of(dict(body))
    quiet = pod.phase == "Running" or (pod.phase == "Pending" and not pod.stuck)
    if owner and (event["type"] == "DELETED" or not quiet):
        await converge_by_name(op, owner)


@kopf.on.event("", "v1", "secrets", labels={ID_LABEL: kopf.PRESENT})
async def owned_secret(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """An ingress's own stream-key Secret deleted by hand is made again (with a new key)."""
    owner = _owner(body)
    if event["type"] == "DELETED" and owner:
        await converge_by_name(memo.op, owner, force=True)


def _owner(body: kopf.Body) -> str | None:
    """The name of the LiveKitIngress that owns an object, if one does."""
    refs = body.metadata.get("ownerReferences") or []
    return next((o["name"] for o in refs if o.get("kind") == KIND), None)


async def converge_by_name(op: Operator, name: str, force: bool = False) -> None:
    """Read the ingress afresh and converge it; retried later if the API server fails us."""
    try:
        ingress = await op.kube.get_ingress(name)
    except ApiError as err:
        if err.status.code != 404:  # 404: the ingress is gone, its objects go with it
            op.retries.schedule(name)
        return
    except (httpx2.HTTPError, OSError):
        op.retries.schedule(name)
        return
    await converge(op, ingress, force=force)


async def converge(op: Operator, body: Obj, force: bool = False) -> None:
    """Reconcile (if behind, or if `force`) or finish deleting one version of an ingress; on
    failure, try again later."""
    name = body["metadata"]["name"]
    ingress_id = (body["metadata"].get("labels") or {}).get(ID_LABEL, "")
    try:
        await sessions.converge(op.kube, op.config, body, list(op.media_pods.get(name, [])))
        if body["metadata"].get("deletionTimestamp"):
            await finish_deletion(op.kube, body)
            return
        if up_to_date(body) and not force:
            return
        with metrics.RECONCILE_SECONDS.time():
            claims = op.by_id.get(ingress_id, []) if ingress_id else []
            outcome = await reconcile(op.kube, op.config, body, claims)
        await apply(op.kube, body, outcome)
    except Exception as err:  # an event handler's failure is dropped by kopf: log it and retry
        metrics.RECONCILE_ERRORS.labels(type(err).__name__).inc()
        log.warning(
            "reconcile failed; will retry",
            extra={"ingress_id": ingress_id, "cr_name": name, "error": str(err)},
        )
        op.retries.schedule(name)
        return
    ingress_id = outcome.status.get("ingressId") or (body.get("status") or {}).get("ingressId")
    if outcome.status:
        log.info("ingress reconciled", extra={"ingress_id": ingress_id, "changed": sorted(outcome.status)})
    if outcome.error is not None:
        metrics.RECONCILE_ERRORS.labels(outcome.error.reason).inc()
        log.warning(outcome.error.msg, extra={"ingress_id": ingress_id, "reason": outcome.error.reason})
    if outcome.retry:
        op.retries.schedule(name)
    else:
        op.retries.cancel(name)


class Retries:
    """One pending retry per object, with exponential back-off; a new event for the object
    replaces it (the event is reconciled at once)."""

    FIRST, LAST = 1.0, 30.0

    def __init__(self, op: Operator) -> None:
        self.op = op
        self.pending: dict[str, asyncio.Task[None]] = {}
        self.delays: dict[str, float] = {}

    def schedule(self, name: str) -> None:
        delay = self.delays.get(name, self.FIRST / 2) * 2
        self.delays[name] = min(delay, self.LAST)
        self.cancel(name, keep_delay=True)
        self.pending[name] = asyncio.create_task(self._later(name, self.delays[name]))

    def cancel(self, name: str, keep_delay: bool = False) -> None:
        task = self.pending.pop(name, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if not keep_delay:
            self.delays.pop(name, None)

    def cancel_all(self) -> None:
        for name in list(self.pending):
            self.cancel(name)

    async def _later(self, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        self.pending.pop(name, None)
        try:
            body = await self.op.kube.get_ingress(name)
        except ApiError as err:
            if err.status.code == 404:
                self.delays.pop(name, None)
            else:
                self.schedule(name)
            return
        except (httpx2.HTTPError, OSError):  # the API server is unreachable: later still
            self.schedule(name)
            return
        await converge(self.op, body)
