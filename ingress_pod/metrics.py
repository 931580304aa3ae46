"""Prometheus metrics of the media pod, and the HTTP server for /healthz and /metrics.

Process CPU and memory come with prometheus_client's default process collector.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import Counter, Gauge, Info

from ingress_operator.models import IngressStatus, InputType
from ingress_operator.promhttp import identify, serve_metrics

FRAMES_DECODED = Counter("lki_media_frames_decoded_total", "Frames decoded from the input", ["kind"])
FRAMES_DROPPED = Counter(
    "lki_media_frames_dropped_total",
    "Decoded frames not published: late (a newer one replaced it), stale, over the frame rate",
    ["kind", "reason"],
)
FRAMES_PUBLISHED = Counter("lki_media_frames_published_total", "Frames handed to LiveKit", ["kind"])
INPUT_BITRATE = Gauge(
    "lki_media_input_bitrate_bps", "Input bit rate over the last seconds of media", ["kind"]
)
SESSION_STATE = Gauge("lki_media_session_state", "1 for the session's current status, else 0", ["state"])
# One pod serves one session: this labels the pod's series with the ingress they belong to.
SESSION_INFO = Info("lki_media", "The session this media pod serves")
identify("media")


def describe_session(ingress_id: str, resource_id: str, input_type: InputType) -> None:
    """Export which ingress and session this pod serves (`lki_media_info`)."""
    SESSION_INFO.info({"ingress_id": ingress_id, "resource_id": resource_id, "input_type": input_type.value})


def set_state(status: IngressStatus) -> None:
    """Export `status` as the session's state."""
    for state in IngressStatus:
        SESSION_STATE.labels(state.value).set(1 if state is status else 0)


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def serve(host: str, port: int) -> web.AppRunner:
    """Start serving /healthz (readiness: the process runs) and /metrics; the caller cleans up
    the returned runner."""
    app = web.Application()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", serve_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
