"""What the operator does to a LiveKitIngress, as plain async functions (kopf-free, so tests
drive them directly): give it an id and a stream key, fill the status it owns, clean up."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ingress_operator import ids
from ingress_operator.config import Settings
from ingress_operator.errors import DuplicateIngressId, IngressError, InvalidArgument, StreamKeySecretMissing
from ingress_operator.kube import Kube, Obj
from ingress_operator.models import (
    FINALIZER,
    ID_LABEL,
    STREAM_KEY_FIELD,
    IngressStatus,
    InputType,
    condition,
    ingress_url,
    now,
    parse_spec,
    rfc3339,
    seniority,
    stream_key_secret_name,
)


@dataclass
class Outcome:
    """What one reconcile asks for: labels to set, the finalizer list (when it must change), the
    status fields whose value changes, and the error a user should see, if any."""

    labels: dict[str, str] = field(default_factory=dict)
    finalizers: list[str] | None = None
    status: dict[str, Any] = field(default_factory=dict)
    error: IngressError | None = None
    retry: bool = False


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
) -> list[dict[str, Any]]:
    """`conditions` with one condition set; its transition time moves only when status changes."""
    value = "True" if status else "False"
    old = next((c for c in conditions if c.get("type") == type_), None)
    changed = old is None or old.get("status") != value
    new = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": rfc3339(now()) if changed or old is None else old["lastTransitionTime"],
        "observedGeneration": generation,
    }
    return [c for c in conditions if c.get("type") != type_] + [new]


def up_to_date(body: Obj) -> bool:
    """Whether the status already reflects this generation of the spec (no API call needed)."""
    meta, status = body["metadata"], body.get("status") or {}
    ingress_id = meta.get("labels", {}).get(ID_LABEL)
    state = status.get("state")
    publishing = condition(status, "Publishing")
    return bool(
        ingress_id
        and status.get("ingressId") == ingress_id
        and FINALIZER in (meta.get("finalizers") or [])
        and status.get("observedGeneration") == meta.get("generation")
        and state
        and publishing.get("reason") == _publishing(state)[1]
        and not waiting(status)
    )


def waiting(status: Obj) -> bool:
    """Whether the ingress waits on something outside it: a streamKeySecretRef Secret to
    appear, or the older holder of its id to go."""
    ready = condition(status, "Ready")
    return ready.get("reason") in (StreamKeySecretMissing.reason, DuplicateIngressId.reason)


Claim = tuple[str, tuple[bool, str, str]]  # (uid, seniority) of a CR labelled with an ingress id


async def reconcile(kube: Kube, settings: Settings, body: Obj, claims: Iterable[Claim] = ()) -> Outcome:
    """Bring one LiveKitIngress's id, finalizer, stream key Secret and status up to date."""
    meta, status = body["metadata"], dict(body.get("status") or {})
    generation = int(meta.get("generation", 0))
    out = Outcome()
    ingress_id = meta.get("labels", {}).get(ID_LABEL) or ids.new_ingress_id()
    if meta.get("labels", {}).get(ID_LABEL) != ingress_id:
        out.labels[ID_LABEL] = ingress_id
    finalizers = list(meta.get("finalizers") or [])
    if FINALIZER not in finalizers:
        out.finalizers = [*finalizers, FINALIZER]
    desired: dict[str, Any] = {"ingressId": ingress_id, "observedGeneration": generation}
    # The live session's pod owns `state`; it is written here only when missing or reset.
    state = dict(status.get("state") or {"status": IngressStatus.ENDPOINT_INACTIVE.value})
    changed = status.get("observedGeneration") not in (None, generation)
    # (Not while a session runs: its state is its pod's, and a new one may have begun.)
    if state.get("status") == IngressStatus.ENDPOINT_ERROR and changed and not status.get("session"):
        # A changed spec gets a fresh start; LiveKit keeps the old error text beside it.
        state["status"] = IngressStatus.ENDPOINT_INACTIVE.value
    desired["state"] = state

    conditions = list(status.get("conditions") or [])
    try:
        if not out.labels:  # an id we did not just make: is it this CR's alone?
            _check_unique(body, ingress_id, claims)
        spec = parse_spec(body.get("spec") or {})
        desired["url"] = ingress_url(spec, settings.rtmp_base_url, settings.whip_base_url)
        desired["reusable"] = spec.reusable
        desired["streamKeySecret"] = await _ensure_stream_key(kube, body, ingress_id, spec)
    except (InvalidArgument, StreamKeySecretMissing, DuplicateIngressId) as err:
        out.error = err
        message = (
            f"spec.{err.field}: {err.rule}" if isinstance(err, InvalidArgument) and err.field else err.msg
        )
        conditions = set_condition(conditions, "Ready", False, err.reason, message, generation)
        # The Secret may yet be created; the older holder of the id may yet be deleted.
        out.retry = isinstance(err, StreamKeySecretMissing | DuplicateIngressId)
        if isinstance(err, DuplicateIngressId):
            desired["ingressId"] = None  # the id is the holder's: a status claiming it would compete
    else:
        waiting = "pulling from the source" if spec.input_type is InputType.URL else "waiting for input"
        conditions = set_condition(conditions, "Ready", True, "Ready", waiting, generation)
    publishing, reason = _publishing(state)
    message = state.get("error") or ""
    conditions = set_condition(conditions, "Publishing", publishing, reason, message, generation)
    desired["conditions"] = conditions
    out.status = {k: v for k, v in desired.items() if status.get(k) != v}
    return out


def _check_unique(body: Obj, ingress_id: str, claims: Iterable[Claim]) -> None:
    """DuplicateIngressId unless this CR comes first among those labelled with `ingress_id`."""
    mine = seniority(body)
    for uid, rank in claims:
        if uid != body["metadata"]["uid"] and rank < mine:
            raise DuplicateIngressId(f"ingress id {ingress_id} already belongs to {rank[2]!r}")


def _publishing(state: Obj) -> tuple[bool, str]:
    """The Publishing condition's status and reason for an IngressState."""
    status = state.get("status") or IngressStatus.ENDPOINT_INACTIVE.value
    return status == IngressStatus.ENDPOINT_PUBLISHING, _reason(status)


def _reason(status: str | None) -> str:
    """ENDPOINT_BUFFERING → Buffering."""
    return (status or "ENDPOINT_INACTIVE").removeprefix("ENDPOINT_").capitalize()


async def _ensure_stream_key(kube: Kube, body: Obj, ingress_id: str, spec: Any) -> str | None:
    """The name of the Secret with the stream key: the referenced one, or an owned one made here."""
    if spec.input_type is InputType.URL:
        return None
    ref = spec.stream_key_secret_ref
    if ref is not None:
        if not await kube.read_secret_key(ref.name, ref.key):
            raise StreamKeySecretMissing(f"Secret {ref.name!r} has no key {ref.key!r} (streamKeySecretRef)")
        return str(ref.name)
    name = stream_key_secret_name(body["metadata"]["name"])
    if not await kube.read_secret_key(name, STREAM_KEY_FIELD):
        owner = {**body, "metadata": {**body["metadata"], "labels": {ID_LABEL: ingress_id}}}
        await kube.create_stream_key_secret(name, owner, ids.new_stream_key())
    return name


async def apply(kube: Kube, body: Obj, outcome: Outcome) -> None:
    """Write what `reconcile` asked for: metadata (with the version it was computed from as a
    precondition, so a concurrent change to the finalizers is never lost), then status."""
    meta = body["metadata"]
    changes: Obj = {}
    if outcome.labels:
        changes["labels"] = outcome.labels
    if outcome.finalizers is not None:
        changes["finalizers"] = outcome.finalizers
    if changes:
        changes["resourceVersion"] = meta["resourceVersion"]
        await kube.patch_ingress(meta["name"], {"metadata": changes})
    if outcome.status:
        await kube.patch_ingress(meta["name"], {"status": outcome.status}, status=True)


async def finish_deletion(kube: Kube, body: Obj) -> None:
    """Before the CR goes: remove the owned stream key Secret (never a referenced one), then
    our finalizer."""
    meta, spec = body["metadata"], body.get("spec") or {}
    finalizers = list(meta.get("finalizers") or [])
    if FINALIZER not in finalizers:
        return
    if spec.get("inputType") != InputType.URL and not spec.get("streamKeySecretRef"):
        await kube.delete_secret(stream_key_secret_name(meta["name"]))
    remaining = [f for f in finalizers if f != FINALIZER]
    await kube.patch_ingress(
        meta["name"], {"metadata": {"finalizers": remaining, "resourceVersion": meta["resourceVersion"]}}
    )
