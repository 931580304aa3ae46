"""The WHIP endpoint (RFC 9725) on the front door's HTTP port.

`POST /w/<stream_key>` (or `POST /w` with `Authorization: Bearer <stream_key>`) opens a session
as an RTMP publish does; the offer goes to the session's media pod over its channel (JSON lines
on the URL the pod reads, see ingress_pod.inputs.whip) and the pod's answer comes back as the
`201 Created` body. The session resource, `/w/<resource_id>/<secret>`, takes `PATCH` (trickled
candidates) and `DELETE`; the secret in its path is the client's capability, as the stream key
was for the POST. Every response carries CORS headers: a page on any origin may publish, since
what authorises it is the key, not a cookie.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ingress_operator.models import InputType
from ingress_pod import sdp
from ingress_pod.frontdoor.sessions import Busy, LiveSession, NotReady, Refused, SessionRegistry, UnknownKey
from ingress_pod.frontdoor.udp import UdpRelay

log = logging.getLogger(__name__)

PREFIX = "/w"
# Browsers send 4-10 KiB offers; a megabyte-sized body is not an offer.
MAX_SDP_BYTES = 64 << 10
# The client waits for the answer while a media pod starts: up to this long.
ANSWER_TIMEOUT = 30.0
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "OPTIONS, POST, PATCH, DELETE",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Accept-Patch, Accept-Post",
    "Access-Control-Max-Age": "86400",
}
SDP = "application/sdp"
TRICKLE = "application/trickle-ice-sdpfrag"
# Candidates a client may trickle into one session: a browser has a handful per interface.
MAX_TRICKLED = 64
# How a refusal reads in HTTP (the first class that matches).
REFUSALS: list[tuple[type[Refused], type[web.HTTPException]]] = [
    (UnknownKey, web.HTTPNotFound),
    (Busy, web.HTTPConflict),
    (NotReady, web.HTTPServiceUnavailable),
    (Refused, web.HTTPForbidden),
]


class MalformedSdp(ValueError):
    """An offer or a trickled fragment that is not what WHIP takes: the client gets 400."""


@dataclass(eq=False)
class WhipSession:
    """A front-door session opened by a WHIP POST: what its resource URL and answer need."""

    session: LiveSession
    ice_ufrag: str  # the offer's: a PATCH with another one asks for an ICE restart
    base_url: str  # the ingress's WHIP URL, as clients reach it (behind any proxy)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    # Settled once: {"sdp": answer}, {"error": why the pod could not answer} (the client's
    # doing: 422), {"failed": …} (the pod's: 502) or {"ended": …} (the session ended first: 503).
    answer: asyncio.Future[dict[str, str]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    trickled: int = 0

    @property
    def location(self) -> str:
        """The session's URL: under the ingress's own WHIP URL, so it works behind a proxy."""
        return f"{self.base_url.rstrip('/')}/{self.session.resource_id}/{self.secret}"

    @property
    def etag(self) -> str:
        return f'"{self.session.resource_id}"'

    def settle(self, outcome: dict[str, str]) -> bool:
        """Give the POST its outcome, unless it has one; whether this one counted."""
        if self.answer.done():
            return False
        self.answer.set_result(outcome)
        return True


class Whip:
    """The WHIP sessions of this front door, over the shared session registry."""

    def __init__(
        self, registry: SessionRegistry, relay: UdpRelay | None = None, answer_timeout: float = ANSWER_TIMEOUT
    ) -> None:
        self.registry = registry
        self.relay = relay
        self.answer_timeout = answer_timeout
        self.sessions: dict[str, WhipSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self, app: web.Application) -> None:
        """Add the WHIP endpoint, its session resources and the pods' answer URL to `app`."""
        for path in (PREFIX, PREFIX + "/{stream_key}", PREFIX + "/{resource_id}/{secret}"):
            app.router.add_route("OPTIONS", path, self.options)
        app.router.add_post(PREFIX, self.publish)
        app.router.add_post(PREFIX + "/{stream_key}", self.publish)
        app.router.add_patch(PREFIX + "/{resource_id}/{secret}", self.patch)
        app.router.add_delete(PREFIX + "/{resource_id}/{secret}", self.delete)
        app.router.add_post("/sessions/{resource_id}/{token}/answer", self.pod_answer)
        app.middlewares.append(cors)

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"Accept-Post": SDP, "Accept-Patch": TRICKLE})

    async def publish(self, request: web.Request) -> web.Response:
        """A client's offer: 201 with the pod's answer, or a 4xx/5xx saying why not."""
        key = request.match_info.get("stream_key") or _bearer(request)
        if not key:
            raise _error(
                web.HTTPUnauthorized, "no stream key: POST to <url>/<stream key> or send a Bearer token"
            )
        offer = await _read_sdp(request, SDP)
        try:
            ufrag = check_offer(offer)
        except MalformedSdp as err:
            raise _error(web.HTTPBadRequest, str(err)) from None
        try:
            session = await self.registry.open(key, InputType.WHIP)
        except Refused as refusal:
            log.info("WHIP publish refused", extra={"reason": str(refusal), "peer": request.remote})
            kind = next(http for refused, http in REFUSALS if isinstance(refusal, refused))
            raise _error(kind, str(refusal)) from None
        entry = self.registry.store.entries.get(session.ingress_id)
        whip = WhipSession(session, ufrag, (entry and entry.cr.status.url) or PREFIX)
        self.sessions[session.resource_id] = whip
        self._spawn(self._forget_when_ended(whip))
        session.send(_line({"offer": offer}))
        log.info("WHIP publishing", extra={**session.log_extra, "peer": request.remote})
        try:
            outcome = await asyncio.wait_for(asyncio.shield(whip.answer), self.answer_timeout)
        except TimeoutError:
            self.registry.fail(session, f"no media pod answered within {self.answer_timeout:g} s")
            raise _error(web.HTTPServiceUnavailable, "no media pod answered in time; try again") from None
        except asyncio.CancelledError:  # the client hung up before its answer
            self.registry.close(session, "the WHIP client left before the answer")
            raise
        if "error" in outcome:
            raise _error(web.HTTPUnprocessableEntity, outcome["error"])
        if "failed" in outcome:
            self.registry.fail(session, outcome["failed"])
            raise _error(web.HTTPBadGateway, outcome["failed"])
        if "ended" in outcome:
            raise _error(
                web.HTTPServiceUnavailable, f"the session ended before its answer: {outcome['ended']}"
            )
        headers = {"Location": whip.location, "ETag": whip.etag, "Accept-Patch": TRICKLE}
        return web.Response(status=201, text=outcome["sdp"], content_type=SDP, headers=headers)

    async def patch(self, request: web.Request) -> web.Response:
        """Trickled candidates go on to the pod; an ICE restart is refused (aiortc has none)."""
        whip = self._resource(request)
        if request.headers.get("If-Match", whip.etag) not in (whip.etag, "*"):
            raise _error(
                web.HTTPPreconditionFailed, f"no session with entity-tag {request.headers['If-Match']}"
            )
        fragment = await _read_sdp(request, TRICKLE)
        try:
            ufrag, candidates = parse_sdpfrag(fragment)
        except MalformedSdp as err:
            raise _error(web.HTTPBadRequest, str(err)) from None
        if ufrag and ufrag != whip.ice_ufrag:
            raise _error(
                web.HTTPUnprocessableEntity,
                "ICE restart is not supported: DELETE this session and POST a new offer",
            )
        whip.trickled += len(candidates)
        if whip.trickled > MAX_TRICKLED:
            raise _error(web.HTTPTooManyRequests, f"more than {MAX_TRICKLED} trickled candidates")
        for mid, candidate in candidates:
            whip.session.send(_line({"candidate": candidate, "mid": mid}))
        return web.Response(status=204)

    async def delete(self, request: web.Request) -> web.Response:
        """The client ends its session: the pod leaves the room, the ingress goes INACTIVE."""
        whip = self._resource(request)
        self.registry.close(whip.session, "the WHIP client ended the session")
        return web.Response(status=200)

    async def pod_answer(self, request: web.Request) -> web.Response:
        """The media pod's answer to the offer, or why it has none (it writes ERROR itself).
        The relay's route is in place before the client has the answer."""
        session = self.registry.reader(request.match_info["resource_id"], request.match_info["token"])
        whip = self.sessions.get(request.match_info["resource_id"])
        if session is None or whip is None or whip.session is not session:
            raise web.HTTPNotFound(text="no such session\n")
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not any(isinstance(body.get(k), str) for k in ("sdp", "error")):
            whip.settle({"failed": "the media pod's answer is malformed"})
            raise web.HTTPBadRequest(text='an answer is {"sdp": …} or {"error": …}\n')
        if session.ended.is_set() or whip.answer.done():
            raise web.HTTPGone(text="the client is gone\n")
        if isinstance(body.get("error"), str):
            whip.settle({"error": body["error"]})
            return web.Response(status=204)
        answer = body["sdp"]
        if self.relay is not None:
            try:
                answer = self.relay.route(session.resource_id, answer, whip.ice_ufrag)
            except ValueError as err:
                whip.settle({"failed": f"the media pod's answer has no usable candidate: {err}"})
                raise web.HTTPBadRequest(text=f"{err}\n") from None
        whip.settle({"sdp": answer})
        return web.Response(status=204)

    def _resource(self, request: web.Request) -> WhipSession:
        whip = self.sessions.get(request.match_info["resource_id"])
        if whip is None or not secrets.compare_digest(whip.secret, request.match_info["secret"]):
            raise _error(web.HTTPNotFound, "no such WHIP session")
        return whip

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forget_when_ended(self, whip: WhipSession) -> None:
        """A session ended from any side (DELETE, the pod, the operator) frees its ingress, and
        a POST still waiting for its answer gets the reason at once."""
        await whip.session.ended.wait()
        whip.settle({"ended": whip.session.end_reason})
        self.registry.close(whip.session, whip.session.end_reason)
        self.sessions.pop(whip.session.resource_id, None)
        if self.relay is not None:
            self.relay.remove_session(whip.session.resource_id)


@web.middleware
async def cors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """CORS headers on every WHIP response, errors included (a browser hides a response
    without them from the page, and with it the reason)."""
    if not request.path.startswith(PREFIX):
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as err:
        err.headers.update(CORS)
        raise
    response.headers.update(CORS)
    return response


def check_offer(offer: str) -> str:
    """The offer's ICE username fragment; MalformedSdp for what is not a usable SDP offer."""
    parts = sdp.sections(offer)
    if parts[0][:1] != ["v=0"]:
        raise MalformedSdp("malformed SDP offer: it must start with v=0")
    if not any(part[0].startswith(("m=audio ", "m=video ")) for part in parts[1:]):
        raise MalformedSdp("malformed SDP offer: no audio or video media section")
    ufrag = sdp.attribute([line for part in parts for line in part], "ice-ufrag")
    if not ufrag:
        raise MalformedSdp("malformed SDP offer: no a=ice-ufrag")
    return ufrag


def parse_sdpfrag(fragment: str) -> tuple[str, list[tuple[str | None, str]]]:
    """(ICE ufrag or "", [(mid, candidate line)]) of a trickle-ice-sdpfrag body (RFC 8840); an
    `a=end-of-candidates` becomes an empty candidate. MalformedSdp for a candidate that is not
    one (RFC 8839 5.1)."""
    ufrag, mid, candidates = "", None, []
    for line in fragment.replace("\r\n", "\n").split("\n"):
        if line.startswith("a=ice-ufrag:"):
            ufrag = line.split(":", 1)[1].strip()
        elif line.startswith("a=mid:"):
            mid = line.split(":", 1)[1].strip()
        elif line.startswith("a=candidate:"):
            candidates.append((mid, _candidate(line[2:].strip())))
        elif line.startswith("a=end-of-candidates"):
            candidates.append((mid, ""))
    return ufrag, candidates


def _candidate(line: str) -> str:
    """`line` (`candidate:…`) if it has a candidate's fields, else MalformedSdp."""
    fields = line.split()
    numbers = (fields[1], fields[3], fields[5]) if len(fields) >= 8 else ()
    if len(fields) < 8 or fields[6] != "typ" or not all(n.isdigit() for n in numbers):
        raise MalformedSdp(f"malformed candidate: {line[:200]}")
    return line


async def _read_sdp(request: web.Request, content_type: str) -> str:
    if request.content_type != content_type:
        raise _error(web.HTTPUnsupportedMediaType, f"Content-Type must be {content_type}")
    body = b""
    # One read returns what has arrived so far: an offer spans several TCP segments.
    while len(body) <= MAX_SDP_BYTES and (chunk := await request.content.read(MAX_SDP_BYTES + 1 - len(body))):
        body += chunk
    if len(body) > MAX_SDP_BYTES:
        size = max(request.content_length or 0, len(body))
        message = f"SDP larger than {MAX_SDP_BYTES} bytes\n"
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_SDP_BYTES, actual_size=size, text=message)
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise _error(web.HTTPBadRequest, "malformed SDP: not UTF-8") from None


def _bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _line(message: dict[str, object]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    """A WHIP error: the reason as plain text, for a person reading the client's log."""
    return kind(text=message + "\n")
