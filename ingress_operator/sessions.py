"""Sessions and their media pods, as the operator runs them.

A session is `status.session` of a LiveKitIngress: the front door writes it when an encoder
publishes (RTMP, WHIP); the operator writes it for a URL ingress once it is ready (one pull
per URL ingress: it is not reusable). The operator answers with one media pod per session
and ends the session by removing it from the status again:

- its pod exits 0 → the session is over (the pod wrote INACTIVE or COMPLETE; if it did not,
  INACTIVE is written here);
- its pod fails, or is deleted by someone else → ERROR naming the pod and why;
- the spec changes (UpdateIngress, `enabled: false`) → INACTIVE, and the pod is deleted;
- the CR is deleted → the pods are deleted before the finalizer goes.

Every status write here is a JSON patch that first tests `status.session.resourceId`, so a
session the front door started in the meantime (an encoder reconnecting) is never clobbered.
`plan` is pure: it looks at a CR and its pods and says what to do; `converge` does it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from lightkube import ApiError

from ingress_operator import ids
from ingress_operator.config import Settings
from ingress_operator.kube import Kube, Obj
from ingress_operator.models import (
    GROUP,
    ID_LABEL,
    KIND,
    VERSION,
    IngressStatus,
    InputType,
    Session,
    condition,
    session_end_patch,
    session_guard,
    session_start_patch,
)

log = logging.getLogger(__name__)

RESOURCE_LABEL = "ingress.lkop.dev/resource-id"
COMPONENT_LABEL = "app.kubernetes.io/component"
MEDIA = "media"
MEDIA_PORT = 8090
URL_PREFIX = "UR_"  # LiveKit's resource id prefix for URL pulls
LIVE = (IngressStatus.ENDPOINT_BUFFERING, IngressStatus.ENDPOINT_PUBLISHING)
# A container waiting for one of these will not start without someone changing something.
STUCK = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
}


@dataclass(frozen=True)
class PodView:
    """What the operator needs to know of a media pod (kept in a kopf index)."""

    name: str
    resource_id: str
    phase: str
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    stuck: bool = False  # Pending for a reason that won't go away by itself

    @classmethod
    def of(cls, pod: Obj) -> PodView:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        terminated: Obj = {}
        waiting: Obj = {}
        for cs in status.get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated") or terminated
            waiting = (cs.get("state") or {}).get("waiting") or waiting
        detail = terminated or waiting
        return cls(
            name=meta.get("name", ""),
            resource_id=(meta.get("labels") or {}).get(RESOURCE_LABEL, ""),
            phase=status.get("phase") or "Pending",
            exit_code=terminated.get("exitCode"),
            reason=detail.get("reason") or status.get("reason") or "",
            message=detail.get("message") or status.get("message") or "",
            stuck=waiting.get("reason") in STUCK,
        )

    @property
    def failure(self) -> str:
        """Why the pod failed, for the ingress's error text."""
        if self.stuck:
            how = "can't start"
        else:
            how = f"exit code {self.exit_code}" if self.exit_code is not None else "failed"
        detail = ", ".join(x for x in (self.reason, self.message.strip()) if x)
        return f"media pod {self.name} {how}" + (f" ({detail})" if detail else "")


@dataclass
class Plan:
    """What to do for one CR: a pod to create, pods to delete, a guarded status change."""

    create: Obj | None = None
    create_for: str | None = None  # the session's resource id
    delete: list[str] = field(default_factory=list)
    status_ops: list[Obj] = field(default_factory=list)
    note: str = ""


def pod_name(cr_name: str, resource_id: str) -> str:
    suffix = "-" + resource_id.lower().replace("_", "-")
    return cr_name[: 63 - len(suffix)].rstrip("-.") + suffix


def plan(body: Obj, pods: list[PodView], settings: Settings, pod_exists: bool | None = None) -> Plan:
    """What the sessions of this CR need. `pod_exists` answers, when the pod index has no pod
    for a session whose pod was created, whether the API server has it (the index may lag)."""
    meta, status = body["metadata"], body.get("status") or {}
    out = Plan()
    raw = status.get("session")
    session = Session.model_validate(raw) if raw else None
    rid = session.resource_id if session else None
    out.delete = [p.name for p in pods if p.resource_id != rid]
    if session is None:
        if url_session_due(body):
            start = Session(
                resource_id=ids.guid(URL_PREFIX), source=body["spec"]["url"], generation=meta["generation"]
            )
            guard = {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}
            out.status_ops = session_start_patch(start, guard)
            out.note = "URL session started"
        return out
    state = status.get("state") or {}
    ours = state.get("resourceId") == rid
    live = ours and state.get("status") in LIVE
    pod = next((p for p in pods if p.resource_id == rid), None)
    spec = body.get("spec") or {}
    if meta.get("deletionTimestamp"):
        out.delete += [pod.name] if pod else []
        return out
    # A URL pull whose pod stopped before the end (eviction, node drain, `kubectl delete pod`)
    # wrote INACTIVE on SIGTERM; the ingress is not reusable, so that would read as "not
    # started" for ever: it ends in ERROR instead.
    finished = ours and state.get("status") in (IngressStatus.ENDPOINT_COMPLETE, IngressStatus.ENDPOINT_ERROR)
    interrupted = spec.get("inputType") == InputType.URL and not finished
    if session.generation != meta.get("generation") or spec.get("enabled") is False:
        out.delete += [pod.name] if pod else []
        out.status_ops = session_end_patch(rid, IngressStatus.ENDPOINT_INACTIVE, None, live)
        out.note = "the ingress changed: session ended"
    elif pod is not None and pod.phase == "Succeeded":
        out.delete.append(pod.name)
        if interrupted:
            error = f"pull interrupted: media pod {pod.name} stopped before the end of the source"
            out.status_ops = session_end_patch(rid, IngressStatus.ENDPOINT_ERROR, error, True)
        else:
            out.status_ops = session_end_patch(rid, IngressStatus.ENDPOINT_INACTIVE, None, live)
        out.note = "session over"
    elif pod is not None and (pod.phase == "Failed" or pod.stuck):
        out.delete.append(pod.name)
        errored = ours and state.get("status") == IngressStatus.ENDPOINT_ERROR
        out.status_ops = session_end_patch(
            rid, IngressStatus.ENDPOINT_ERROR, None if errored else pod.failure, True
        )
        out.note = "media pod failed"
    elif pod is None and session.pod is None:
        name = pod_name(meta["name"], rid or "")
        out.create, out.create_for = media_pod(body, session, name, settings), rid
        out.status_ops = [
            session_guard(rid),
            {"op": "add", "path": "/status/session/pod", "value": name},
        ]
        out.note = "media pod created"
    elif pod is None and pod_exists is False:
        # A pod deleted gracefully wrote INACTIVE on its way out; one that vanished did not.
        error = f"media pod {session.pod} was deleted"
        out.status_ops = session_end_patch(rid, IngressStatus.ENDPOINT_ERROR, error, live or interrupted)
        out.note = "media pod deleted"
    return out


def url_session_due(body: Obj) -> bool:
    """Whether a URL ingress should start pulling: it is ready and has never had a session
    (it is not reusable: one pull, ending COMPLETE or ERROR, then it stays as it is)."""
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    ready = condition(status, "Ready")
    return (
        spec.get("inputType") == InputType.URL
        and not meta.get("deletionTimestamp")
        and bool(status.get("ingressId"))
        and status.get("ingressId") == (meta.get("labels") or {}).get(ID_LABEL)
        and ready.get("status") == "True"
        and ready.get("observedGeneration") == meta.get("generation")
        and not (status.get("state") or {}).get("resourceId")
    )


def media_pod(body: Obj, session: Session, name: str, settings: Settings) -> Obj:
    """The Pod that serves one session."""
    meta = body["metadata"]
    ingress_id = meta["labels"][ID_LABEL]
    labels = {
        ID_LABEL: ingress_id,
        RESOURCE_LABEL: session.resource_id,
        "app.kubernetes.io/name": "livekit-ingress",
        COMPONENT_LABEL: MEDIA,
    }
    secret = settings.livekit_secret_name

    def from_secret(key: str) -> Obj:
        return {"secretKeyRef": {"name": secret, "key": key}}

    env = [
        {"name": "INGRESS_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "INGRESS_NAME", "value": meta["name"]},
        {"name": "RESOURCE_ID", "value": session.resource_id},
        {"name": "SOURCE_URL", "value": session.source},
        {"name": "LIVEKIT_URL", "value": settings.livekit_ws_url},
        {"name": "LIVEKIT_API_KEY", "valueFrom": from_secret("apiKey")},
        {"name": "LIVEKIT_API_SECRET", "valueFrom": from_secret("apiSecret")},
        {"name": "MEDIA_PORT", "value": str(MEDIA_PORT)},
        *({"name": k, "value": v} for k, v in sorted(settings.media_env.items())),
    ]
    container: Obj = {
        "name": MEDIA,
        "image": settings.media_image,
        "command": list(settings.media_command),
        "env": env,
        "ports": [{"name": "http", "containerPort": MEDIA_PORT}],
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": MEDIA_PORT},
            "periodSeconds": 2,
        },
        "resources": settings.media_resources,
        "securityContext": settings.media_security_context,
    }
    if settings.media_image_pull_policy:
        container["imagePullPolicy"] = settings.media_image_pull_policy
    # Only what is set goes in: an unset option leaves the cluster's defaults (and admission
    # webhooks' additions) alone.
    optional: Obj = {
        "nodeSelector": settings.media_node_selector,
        "tolerations": settings.media_tolerations,
        "imagePullSecrets": [{"name": s} for s in settings.media_image_pull_secrets],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels,
            **({"annotations": dict(settings.media_annotations)} if settings.media_annotations else {}),
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": settings.media_service_account,
            # The pod writes its final state and leaves the room on SIGTERM in well under this.
            "terminationGracePeriodSeconds": 15,
            "securityContext": settings.media_pod_security_context,
            "containers": [container],
            **{key: value for key, value in optional.items() if value},
        },
    }


async def converge(kube: Kube, settings: Settings, body: Obj, pods: list[PodView]) -> Plan:
    """Do what `plan` asks for this CR."""
    meta = body["metadata"]
    session: Any = (body.get("status") or {}).get("session") or {}
    exists = None
    if session.get("pod") and not any(p.resource_id == session.get("resourceId") for p in pods):
        exists = await kube.pod_exists(session["pod"])
    todo = plan(body, pods, settings, exists)
    extra = {"ingress_id": meta.get("labels", {}).get(ID_LABEL), "resource_id": session.get("resourceId")}
    # Create before recording the pod, and record the end before deleting: whoever looks in
    # between (a pod event, a CR event) must never see a recorded pod that does not exist.
    if todo.create is not None:
        try:
            await kube.create_pod(todo.create)
        except ApiError as err:
            if err.status.code not in (403, 422):  # else a retry would fail the same way
                raise
            error = f"could not create the media pod: {err.status.message}"
            todo.status_ops = session_end_patch(todo.create_for, IngressStatus.ENDPOINT_ERROR, error, True)
            todo.note = "media pod refused by the API server"
    if todo.status_ops and await kube.json_patch_status(meta["name"], todo.status_ops) is None:
        log.info("session moved on before the change; nothing written", extra=extra)
        return todo
    for name in todo.delete:
        await kube.delete_pod(name)
    if todo.note:
        log.info(todo.note, extra=extra)
    return todo
