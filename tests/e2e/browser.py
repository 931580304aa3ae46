"""Headless Chromium as a WHIP client: Debian's chromium loads whip_client/publish.html from a
server on 127.0.0.1 (another origin than the front door's, so CORS is exercised) and the page
publishes with the browser's own WebRTC and fetch, reporting each step back to that server.
Also what the tests and bench/whip.py read of the front door's side: its UDP relay's count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

PAGE = Path(__file__).parent / "whip_client" / "publish.html"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    # Host candidates as addresses, not mDNS names nothing here resolves.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]


class Page:
    """One published page: its reports (dicts with `ev`) arrive on `reports`."""

    def __init__(self) -> None:
        self.reports: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.process: asyncio.subprocess.Process | None = None

    async def next(self, event: str, within: float = 30, fresh: bool = False) -> dict[str, Any]:
        """The next report of this kind (others are skipped); an `error` report raises. With
        `fresh`, one sent from now on (what is queued is dropped: the page's stats, every 2 s)."""
        while fresh and not self.reports.empty():
            if self.reports.get_nowait()["ev"] == "error":
                raise AssertionError("the page failed")
        async with asyncio.timeout(within):
            while True:
                report = await self.reports.get()
                if report["ev"] == "error":
                    raise AssertionError(f"the page failed: {report['message']}")
                if report["ev"] == event:
                    return report


async def relayed_packets(whip_url: str) -> float:
    """Packets the front door's UDP relay has passed to media pods so far (its /metrics)."""
    sample = 'lki_frontdoor_whip_relayed_packets_total{direction="to_pod"}'
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(urllib.parse.urljoin(whip_url, "/metrics")) as resp,
    ):
        text = await resp.text()
    return float(next(line for line in text.splitlines() if line.startswith(sample)).split()[-1])


@contextlib.asynccontextmanager
async def chromium_whip(whip_url: str, key: str, **params: object) -> AsyncIterator[Page]:
    """Run the page against `whip_url` with `key` (params: see publish.html); the browser is
    killed on leaving."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed (tools/install.sh apt)"
    page = Page()

    async def report(request: web.Request) -> web.Response:
        page.reports.put_nowait(json.loads(await request.text()))
        return web.Response()

    async def html(_: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE)

    app = web.Application()
    app.router.add_get("/publish.html", html)
    app.router.add_post("/report", report)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    query = urllib.parse.urlencode({"whip": whip_url, "key": key, **{k: str(v) for k, v in params.items()}})
    with tempfile.TemporaryDirectory(prefix="lki-chromium-") as profile:
        page.process = await asyncio.create_subprocess_exec(
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"http://127.0.0.1:{port}/publish.html?{query}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # its renderer and GPU processes go with it
        )
        try:
            yield page
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(page.process.pid, signal.SIGKILL)
            await page.process.wait()
            await runner.cleanup()
