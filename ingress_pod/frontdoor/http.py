"""The front door's HTTP side: media pods read their session here (an RTMP session's FLV stream,
a WHIP session's channel of JSON lines); the WHIP endpoint (`whip`); health and metrics.

A session's URL holds its resource id and a random token: it is in the CR's status (for the
operator to hand to the pod), so whoever may read LiveKitIngress status could read the stream
before the pod does; it can be read once. In a cluster, a NetworkPolicy that lets only media
pods reach this port closes that too.
"""

from __future__ import annotations

import logging
from functools import partial

from aiohttp import web
from prometheus_client import Counter, Gauge

from ingress_operator.models import InputType
from ingress_operator.promhttp import identify, serve_metrics
from ingress_pod.frontdoor.sessions import RESOURCE_PREFIX, SessionRegistry
from ingress_pod.frontdoor.udp import UdpRelay
from ingress_pod.frontdoor.whip import MAX_SDP_BYTES, Whip

log = logging.getLogger(__name__)

REGISTRY = web.AppKey("registry", SessionRegistry)
SESSIONS = Gauge("lki_frontdoor_sessions", "Live sessions on this front door by input type", ["input_type"])
BYTES_OUT = Counter(
    "lki_frontdoor_bytes_to_pods_total", "Session bytes handed to media pods (FLV, WHIP messages)"
)
identify("frontdoor")


async def session_source(request: web.Request) -> web.StreamResponse:
    """Stream one session's FLV to its media pod, from the start-up cache to the end."""
    registry = request.app[REGISTRY]
    session = registry.reader(request.match_info["resource_id"], request.match_info["token"])
    if session is None:
        raise web.HTTPNotFound(text="no such session\n")
    if session.attached:
        raise web.HTTPConflict(text="session already has a reader\n")
    session.attach()
    log.info("media pod attached", extra=session.log_extra)
    content_type = "video/x-flv" if session.input_type is InputType.RTMP else "application/x-ndjson"
    resp = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-store"})
    await resp.prepare(request)
    try:
        while (chunk := await session.next_chunk()) is not None:
            await resp.write(chunk)
            BYTES_OUT.inc(len(chunk))
        if session.overflowed:  # the pod would take the end for the encoder's: say why here
            registry.fail(session, session.end_reason)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):  # aiohttp raises RuntimeError on a closed transport
        pass
    finally:
        session.end(session.end_reason or "the media pod disconnected")
        registry.by_resource.pop(session.resource_id, None)
    return resp


async def healthz(request: web.Request) -> web.Response:
    ready = request.app[REGISTRY].store.healthy
    return web.Response(status=200 if ready else 503, text="ok\n" if ready else "syncing\n")


def _live(registry: SessionRegistry, input_type: InputType) -> int:
    """How many live sessions of this input type there are."""
    return sum(s.input_type is input_type for s in registry.by_ingress.values())


def make_app(registry: SessionRegistry, relay: UdpRelay | None = None) -> web.Application:
    """The front door's HTTP app; `relay` (the WHIP UDP port) adds its candidate to answers."""
    app = web.Application(client_max_size=MAX_SDP_BYTES)
    app[REGISTRY] = registry
    Whip(registry, relay).routes(app)
    app.router.add_get("/sessions/{resource_id}/{token}", session_source)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", serve_metrics)
    for input_type in RESOURCE_PREFIX:
        SESSIONS.labels(input_type.value).set_function(partial(_live, registry, input_type))
    return app
