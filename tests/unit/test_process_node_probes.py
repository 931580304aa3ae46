"""Probe bookkeeping and execution of the process node."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from local_stack.node.probes import ProbeTiming, ProbeTracker, resolve_port, run_probe


def test_timing_defaults_are_the_apis() -> None:
    assert ProbeTiming.of({}) == ProbeTiming(0.0, 10.0, 1.0, 1, 3)
    t = ProbeTiming.of(
        {
            "initialDelaySeconds": 2,
            "periodSeconds": 1,
            "timeoutSeconds": 3,
            "successThreshold": 2,
            "failureThreshold": 1,
        }
    )
    assert t == ProbeTiming(2.0, 1.0, 3.0, 2, 1)


@pytest.mark.parametrize(
    ("success", "failure", "initial", "observations", "verdicts"),
    [
        (1, 3, None, [True], [True]),
        (1, 3, None, [False, False, False], [None, None, False]),
        (1, 3, True, [False, False, True, False], [True, True, True, True]),
        (2, 1, None, [True, False, True, True], [None, False, False, True]),
        (1, 2, True, [False, False, True], [True, False, True]),
    ],
)
def test_tracker(
    success: int, failure: int, initial: bool | None, observations: list[bool], verdicts: list[bool | None]
) -> None:
    tracker = ProbeTracker(ProbeTiming(0, 1, 1, success, failure), initial=initial)
    assert [tracker.observe(o) for o in observations] == verdicts


@pytest.mark.parametrize(("port", "expected"), [(8080, 8080), ("8081", 8081), ("http", 9000)])
def test_resolve_port(port: int | str, expected: int) -> None:
    assert resolve_port(port, {"ports": [{"name": "http", "containerPort": 9000}]}) == expected


def test_resolve_port_unknown_name() -> None:
    with pytest.raises(ValueError):
        resolve_port("grpc", {"ports": []})


async def _serve(handler: Any) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


async def test_http_and_tcp_probes() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=200 if request.path == "/ok" else 503)

    runner, port = await _serve(handler)
    try:
        ok, _ = await run_probe({"httpGet": {"path": "/ok", "port": port}}, {}, "127.0.0.1", {}, None)
        bad, detail = await run_probe({"httpGet": {"path": "/bad", "port": port}}, {}, "127.0.0.1", {}, None)
        tcp, _ = await run_probe({"tcpSocket": {"port": port}}, {}, "127.0.0.1", {}, None)
    finally:
        await runner.cleanup()
    assert ok and not bad and "503" in detail and tcp
    closed, _ = await run_probe({"tcpSocket": {"port": port}}, {}, "127.0.0.1", {}, None)
    assert not closed


async def test_exec_probe_uses_env_and_times_out() -> None:
    ok, _ = await run_probe(
        {"exec": {"command": ["sh", "-c", 'test "$X" = 1']}},
        {},
        "127.0.0.1",
        {"X": "1", "PATH": "/usr/bin:/bin"},
        None,
    )
    bad, _ = await run_probe(
        {"exec": {"command": ["sh", "-c", "exit 1"]}}, {}, "127.0.0.1", {"PATH": "/usr/bin:/bin"}, None
    )
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    slow, detail = await run_probe(
        {"exec": {"command": ["sleep", "5"]}, "timeoutSeconds": 1},
        {},
        "127.0.0.1",
        {"PATH": "/usr/bin:/bin"},
        None,
    )
    assert ok and not bad and not slow and "timed out" in detail
    assert loop.time() - t0 < 3


async def test_grpc_probes_are_reported_unsupported() -> None:
    ok, detail = await run_probe({"grpc": {"port": 1}}, {}, "127.0.0.1", {}, None)
    assert not ok and "not supported" in detail
