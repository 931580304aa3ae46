"""The `/metrics` handler every aiohttp component serves (shim, front door, media pod); apart from
any component's metrics, so importing it registers none."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


async def serve_metrics(_: web.Request) -> web.Response:
    """`/metrics` in Prometheus' text format."""
    resp = web.Response(body=generate_latest())
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp
