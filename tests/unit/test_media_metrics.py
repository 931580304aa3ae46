"""/healthz and /metrics of the media pod."""

from __future__ import annotations

import socket

import aiohttp

from ingress_operator.models import IngressStatus
from ingress_pod import metrics


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_health_and_metrics_are_served() -> None:
    port = free_port()
    runner = await metrics.serve("127.0.0.1", port)
    try:
        metrics.set_state(IngressStatus.ENDPOINT_PUBLISHING)
        metrics.FRAMES_DECODED.labels("video").inc()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                body = await resp.text()
    finally:
        await runner.cleanup()
    assert 'lki_media_session_state{state="ENDPOINT_PUBLISHING"} 1.0' in body
    assert 'lki_media_session_state{state="ENDPOINT_BUFFERING"} 0.0' in body
    assert 'lki_media_frames_decoded_total{kind="video"}' in body
    assert "process_cpu_seconds_total" in body
