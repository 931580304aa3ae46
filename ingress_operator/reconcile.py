"""What the operator does to a LiveKitIngress, as plain async functions (kopf-free, so tests
drive them directly): give it an id and a stream key, fill the status it owns, clean up."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ingress_operator import ids
from ingress_operator.config import Settings
from ingress_operator.errors import IngressError, InvalidArgument, StreamKeySecretMissing
from ingress_operator.kube import Kube, Obj
from ingress_operator.models import (
    ID_LABEL,
    STREAM_KEY_FIELD,
    IngressStatus,
    InputType,
    ingress_url,
    parse_spec,
    stream_key_secret_name,
)


@dataclass
class Outcome:
    """The changes one reconcile asks for: labels to set, status fields to patch, and whether
    (and in how many seconds) to look again."""

    labels: dict[str, str] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None
    error: IngressError | None = None


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(when: datetime) -> str:
    """Kubernetes' own time format: seconds, UTC, `Z`."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


async def reconcile(kube: Kube, settings: Settings, body: Obj) -> Outcome:
    """Bring one LiveKitIngress's id, stream key Secret and status up to date with its spec."""
    meta, status = body["metadata"], dict(body.get("status") or {})
    generation = int(meta.get("generation", 0))
    out = Outcome()
    ingress_id = meta.get("labels", {}).get(ID_LABEL) or ids.new_ingress_id()
    if meta.get("labels", {}).get(ID_LABEL) != ingress_id:
        out.labels[ID_LABEL] = ingress_id
    out.status = {"ingressId": ingress_id, "observedGeneration": generation}
    conditions = list(status.get("conditions") or [])
    # The live session's pod owns `state`; it is written here only when missing or reset.
    state = dict(status.get("state") or {})
    seen = status.get("observedGeneration")
    if not state:
        state = out.status["state"] = {"status": IngressStatus.ENDPOINT_INACTIVE.value}
    elif state.get("status") == IngressStatus.ENDPOINT_ERROR and seen not in (None, generation):
        # A changed spec gets a fresh start; LiveKit keeps the old error text beside it.
        state["status"] = IngressStatus.ENDPOINT_INACTIVE.value
        out.status["state"] = state

    try:
        spec = parse_spec(body.get("spec") or {})
        out.status["url"] = ingress_url(spec, settings.rtmp_base_url, settings.whip_base_url)
        out.status["reusable"] = spec.reusable
        out.status["streamKeySecret"] = await _ensure_stream_key(kube, body, ingress_id, spec)
    except (InvalidArgument, StreamKeySecretMissing) as err:
        out.error = err
        message = (
            f"spec.{err.field}: {err.rule}" if isinstance(err, InvalidArgument) and err.field else err.msg
        )
        conditions = set_condition(conditions, "Ready", False, err.reason, message, generation)
        if isinstance(err, StreamKeySecretMissing):
            out.retry_after = 10
    else:
        waiting = "pulling from the source" if spec.input_type is InputType.URL else "waiting for input"
        conditions = set_condition(conditions, "Ready", True, "Ready", waiting, generation)
    publishing = state.get("status") == IngressStatus.ENDPOINT_PUBLISHING
    conditions = set_condition(
        conditions,
        "Publishing",
        publishing,
        "Publishing" if publishing else _reason(state.get("status")),
        state.get("error") or "",
        generation,
    )
    out.status["conditions"] = conditions
    return out


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


async def cleanup(kube: Kube, body: Obj) -> None:
    """Before the CR goes: remove the owned stream key Secret (never a referenced one)."""
    spec = body.get("spec") or {}
    if spec.get("inputType") != InputType.URL and not spec.get("streamKeySecretRef"):
        await kube.delete_secret(stream_key_secret_name(body["metadata"]["name"]))
