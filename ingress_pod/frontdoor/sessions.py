"""Sessions on the front door: the policy of who may publish, and the hand-over of one encoder's
stream (RTMP: its FLV; WHIP: the offer and candidates, frontdoor.whip) to the media pod that
serves its session.

An encoder's publish becomes a session when its stream key names an enabled ingress with no
live publisher: the front door writes `status.session` (and state BUFFERING) into the CR, the
operator starts a media pod for it, and the pod reads the stream from this process over HTTP.
Either side ending ends the session: the encoder leaving gives the pod end-of-stream, and the
pod leaving (or the operator ending the session in the CR) closes the encoder's connection.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from ingress_operator import ids
from ingress_operator.kube import Kube
from ingress_operator.models import (
    IngressState,
    IngressStatus,
    InputType,
    Session,
    session_end_patch,
    session_start_patch,
)
from ingress_operator.store import IngressStore
from ingress_pod.frontdoor import flv
from ingress_pod.frontdoor.flv import StartCache

log = logging.getLogger(__name__)

LIVE = (IngressStatus.ENDPOINT_BUFFERING, IngressStatus.ENDPOINT_PUBLISHING)
# The first characters of a session's resource id name its input type, as LiveKit's do.
RESOURCE_PREFIX = {InputType.RTMP: "RT_", InputType.WHIP: "WH_"}

# A session whose pod has not attached by then is given up: no node could run it. Until then
# a session the encoder already left stays readable (a short push still gets published).
ATTACH_TIMEOUT_S = 60.0
# Bytes queued for a pod that reads too slowly before the session is dropped.
MAX_QUEUED_BYTES = 32 << 20


class Refused(Exception):
    """A publish the front door turns down; the message goes back to the encoder (RTMP: an
    `onStatus` error; WHIP: an HTTP status by subclass, whip.REFUSALS)."""


class UnknownKey(Refused):
    """No ingress of this input type has the stream key."""


class Busy(Refused):
    """The ingress already has a live publisher."""


class NotReady(Refused):
    """The ingress can't take a publisher yet (not reconciled, or being updated)."""


@dataclass(eq=False)
class LiveSession:
    """One encoder's stream, from publish until either side leaves."""

    resource_id: str
    ingress_id: str
    cr_name: str
    input_type: InputType = InputType.RTMP
    # The pod's URL holds it: the resource id alone is public (ListIngress shows it).
    token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    # RTMP: the FLV start-up cache a late pod begins with. WHIP sends the pod messages instead.
    cache: StartCache | None = field(default_factory=StartCache)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: str = ""
    overflowed: bool = False  # the pod fell too far behind: the session ends with ERROR
    attached: bool = False
    confirmed: bool = False  # written into the CR: from then on the CR says whether it lives
    _queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    _queued: int = 0

    @property
    def log_extra(self) -> dict[str, str]:
        return {"ingress_id": self.ingress_id, "resource_id": self.resource_id}

    def feed(self, kind: int, timestamp_ms: int, body: bytes) -> None:
        """One tag from the encoder: into the start-up cache until the pod attaches, then
        queued for it."""
        if self.ended.is_set():
            return
        if not self.attached:
            assert self.cache is not None, "feed() is for RTMP sessions"
            self.cache.add(kind, timestamp_ms, body)
            return
        framed = flv.tag(kind, timestamp_ms, body)
        self._queued += len(framed)
        if self._queued > MAX_QUEUED_BYTES:
            self.overflowed = True
            self.end("the media pod reads too slowly")
            return
        self._queue.put_nowait(framed)

    def attach(self) -> None:
        """The pod connects: it gets the start-up cache, then everything live."""
        self.attached = True
        if self.cache is not None:
            snapshot = self.cache.snapshot()
            self.cache = StartCache()  # read once: no use keeping it
            self._queued += len(snapshot)
            self._queue.put_nowait(snapshot)
        if self.ended.is_set():
            self._queue.put_nowait(None)

    def send(self, message: bytes) -> None:
        """A message for the pod (WHIP's channel): queued whether or not it attached yet."""
        if not self.ended.is_set():
            self._queue.put_nowait(message)

    async def next_chunk(self) -> bytes | None:
        """The next bytes for the pod; None at the end of the stream."""
        chunk = await self._queue.get()
        if chunk is not None:
            self._queued -= len(chunk)
        return chunk

    def end(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        if self.attached:  # else attach() queues the cached stream, then the end
            self._queue.put_nowait(None)
        log.info("session ended", extra={**self.log_extra, "reason": reason})


class SessionRegistry:
    """The live sessions of this front door, and the rules for opening one."""

    def __init__(
        self, kube: Kube, store: IngressStore, source_base_url: str, attach_timeout: float = ATTACH_TIMEOUT_S
    ) -> None:
        self.kube = kube
        self.attach_timeout = attach_timeout
        self.store = store
        self.source_base_url = source_base_url.rstrip("/")
        self.by_ingress: dict[str, LiveSession] = {}
        self.by_resource: dict[str, LiveSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        store.listeners.append(self._ingress_changed)

    async def open(self, stream_key: str, input_type: InputType) -> LiveSession:
        """Start a session for a publish with this stream key, or raise Refused."""
        entry = self.store.find_by_stream_key(stream_key)
        if entry is None:
            raise UnknownKey("unknown stream key")
        cr = entry.cr
        if cr.spec.input_type is not input_type:
            raise UnknownKey(f"stream key of a {cr.spec.input_type.value} ingress")
        if cr.spec.enabled is False:
            raise Refused("ingress is disabled")
        ready = next((c for c in cr.status.conditions if c.type == "Ready"), None)
        if cr.status.ingress_id != entry.ingress_id or ready is None:
            raise NotReady("ingress is not ready yet")
        if ready.status != "True":
            raise Refused(f"ingress is not ready: {ready.message or ready.reason}")
        if entry.ingress_id in self.by_ingress:
            raise Busy("ingress already has a live publisher")
        session = LiveSession(ids.guid(RESOURCE_PREFIX[input_type]), entry.ingress_id, entry.name, input_type)
        if input_type is not InputType.RTMP:
            session.cache = None  # WHIP sends the pod messages (`send`), not FLV
        # Taken before the first await, so a second publisher racing this one is refused.
        self.by_ingress[entry.ingress_id] = session
        self.by_resource[session.resource_id] = session
        try:
            obj = await self.kube.json_patch_status(
                entry.name, self._start_patch(session, cr.metadata.generation)
            )
        except Exception:
            self._drop(session)
            raise
        if obj is None:  # the spec changed under us (an update): its session must not start
            self._drop(session)
            raise NotReady("ingress is being updated; publish again")
        self.store.remember(obj)
        session.confirmed = True
        asyncio.get_running_loop().call_later(self.attach_timeout, self._attach_deadline, session)
        log.info("session started", extra=session.log_extra)
        return session

    def _start_patch(self, session: LiveSession, generation: int) -> list[dict[str, Any]]:
        """status.session and state BUFFERING, if the spec is still the one checked."""
        rid = session.resource_id
        doc = Session(
            resource_id=rid,
            source=f"{self.source_base_url}/sessions/{rid}/{session.token}",
            generation=generation,
        )
        return session_start_patch(doc, {"op": "test", "path": "/metadata/generation", "value": generation})

    def reader(self, resource_id: str, token: str) -> LiveSession | None:
        """The session a pod asks for, if the token is right."""
        session = self.by_resource.get(resource_id)
        return session if session and secrets.compare_digest(session.token, token) else None

    async def sweep(self) -> None:
        """After a restart: sessions the CRs say this front door serves are gone with the old
        process; end them, or their ingresses would wait on a source that no longer exists."""
        for entry in list(self.store.entries.values()):
            current = entry.cr.status.session
            if current is None or current.resource_id in self.by_resource:
                continue
            if not current.source.startswith(self.source_base_url + "/"):
                continue
            live = (entry.cr.status.state or IngressState()).status in LIVE
            await self._end_in_cr(entry.name, current.resource_id, "front door restarted", live)

    def end_all(self, reason: str) -> None:
        """End every session (the front door is stopping): each pod sees its stream or channel
        end, and ends its session as for an encoder that left."""
        for session in {*self.by_ingress.values(), *self.by_resource.values()}:
            self.close(session, reason)

    def close(self, session: LiveSession, reason: str) -> None:
        """The encoder is gone: end the session; one no pod read yet stays readable until the
        attach deadline (a push shorter than a pod's start is still published)."""
        session.end(reason)
        if self.by_ingress.get(session.ingress_id) is session:
            del self.by_ingress[session.ingress_id]
        if session.attached:
            self.by_resource.pop(session.resource_id, None)

    def _drop(self, session: LiveSession) -> None:
        if self.by_ingress.get(session.ingress_id) is session:
            del self.by_ingress[session.ingress_id]
        if self.by_resource.get(session.resource_id) is session:
            del self.by_resource[session.resource_id]

    def _attach_deadline(self, session: LiveSession) -> None:
        if session.attached:
            return
        # Ended in the CR too, or it would show BUFFERING for ever: the operator then deletes
        # the pod that never ran.
        self.fail(session, f"no media pod started within {self.attach_timeout:g} s")
        self._drop(session)

    def fail(self, session: LiveSession, reason: str) -> None:
        """End a session with ERROR in its CR: for what only the front door can tell (the pod
        never came, or fell too far behind; either way the pod sees nothing but an end)."""
        session.end(reason)
        task = asyncio.create_task(self._end_in_cr(session.cr_name, session.resource_id, reason, True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end_in_cr(self, cr_name: str, resource_id: str, reason: str, write_state: bool) -> None:
        """Remove a session from its CR, with state ERROR `reason` if `write_state`; an API
        failure leaves it to the pod's own end."""
        ops = session_end_patch(resource_id, IngressStatus.ENDPOINT_ERROR, reason, write_state)
        try:
            await self.kube.json_patch_status(cr_name, ops)
        except Exception as err:  # the CR is gone, or the API server: nothing left to end
            extra = {"cr_name": cr_name, "resource_id": resource_id, "error": str(err)}
            log.warning("could not end the session in the CR", extra=extra)

    def _ingress_changed(self, ingress_id: str) -> None:
        """The CR changed: end our session if the operator ended it or the ingress is gone."""
        session = self.by_ingress.get(ingress_id)
        if session is None or not session.confirmed:
            return
        entry = self.store.entries.get(ingress_id)
        current = entry.cr.status.session if entry else None
        if current is None or current.resource_id != session.resource_id:
            session.end("session ended by the operator" if entry else "ingress deleted")
            self._drop(session)
