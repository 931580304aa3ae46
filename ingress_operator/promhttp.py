"""What every component's metrics share: the `/metrics` handler of the aiohttp components (shim,
front door, media pod) and `lki_build_info`, which says which component a process is. Importing
it registers no other metric, so each process exposes only its own component's."""

from __future__ import annotations

from importlib.metadata import version

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Info, generate_latest

# A scrape target's own labels (pod, job) depend on how Prometheus finds it; this one does not,
# so dashboards join process_cpu_seconds_total and friends on it to show them by component.
BUILD_INFO = Info("lki_build", "The component this process runs and the project version")


def identify(component: str) -> None:
    """Export this process as `component` in `lki_build_info`."""
    BUILD_INFO.info({"component": component, "version": version("livekit-ingress-k8s")})


async def serve_metrics(_: web.Request) -> web.Response:
    """`/metrics` in Prometheus' text format."""
    resp = web.Response(body=generate_latest())
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp
