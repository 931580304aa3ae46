"""Sources for URL ingresses to pull, all on 127.0.0.1: media files made with ffmpeg, an HTTP
server with the ways a server can fail (403, 404, an HTML page, a body that stalls), a live
HLS playlist the test writes as it runs, and an SRT listener. Shared by tests and bench/."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

FFMPEG = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostats", "-y"]
# Two seconds of light temporal noise keeps encoders honest without slowing the tests down.
VIDEO = "testsrc2=size={size}:rate={rate}:duration={seconds},noise=alls=4:allf=t"
AUDIO = "sine=frequency=440:sample_rate=48000:duration={seconds}"


def make_file(
    path: Path,
    seconds: float,
    codecs: Sequence[str],
    size: str = "320x240",
    rate: int = 30,
    video: bool = True,
    audio: bool = True,
    extra: Sequence[str] = (),
) -> Path:
    """A synthetic file: testsrc2 and a 440 Hz tone, encoded with `codecs` (ffmpeg options)."""
    args = [*FFMPEG]
    if video:
        args += ["-f", "lavfi", "-i", VIDEO.format(size=size, rate=rate, seconds=seconds)]
    if audio:
        args += ["-f", "lavfi", "-i", AUDIO.format(seconds=seconds)]
    subprocess.run([*args, *codecs, *extra, str(path)], check=True, stdin=subprocess.DEVNULL)
    return path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class MediaServer:
    """An aiohttp server for `root`: `/files/<path>` with range requests (as any web server
    serves media), `/status/<code>` answering that status, `/page.html` (a web page, not
    media), `/stall/<path>` sending the head of a file and then nothing."""

    root: Path
    port: int = 0
    _runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def start(self) -> MediaServer:
        app = web.Application()
        app.router.add_get("/files/{path:.+}", self._file)
        app.router.add_get("/status/{code:\\d+}/{path:.*}", self._status)
        app.router.add_get("/page.html", self._page)
        app.router.add_get("/stall/{path:.+}", self._stall)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _file(self, request: web.Request) -> web.StreamResponse:
        path = (self.root / request.match_info["path"]).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="no\n")

    async def _page(self, _: web.Request) -> web.Response:
        body = "<!doctype html><html><head><title>Not media</title></head><body>Hello</body></html>\n"
        return web.Response(text=body * 200, content_type="text/html")

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        data = (self.root / request.match_info["path"]).read_bytes()
        response = web.StreamResponse(headers={"Content-Type": "video/mp2t"})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 3])
        await asyncio.sleep(3600)  # the client gives up first; the server's cleanup cancels this
        return response


@contextlib.asynccontextmanager
async def serving(root: Path) -> AsyncIterator[MediaServer]:
    server = await MediaServer(root).start()
    try:
        yield server
    finally:
        await server.stop()


def make_hls_segments(folder: Path, seconds: int, size: str = "320x240") -> list[tuple[str, float]]:
    """One-second MPEG-TS segments of H.264 + AAC in `folder` and their durations, for a test to
    list in a playlist of its own making."""
    folder.mkdir(parents=True, exist_ok=True)
    codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-c:a", "aac"]
    make_file(
        folder / "index.m3u8",
        seconds,
        codecs,
        size=size,
        extra=[
            "-f",
            "hls",
            "-hls_time",
            "1",
            "-hls_list_size",
            "0",
            "-hls_segment_filename",
            str(folder / "seg%03d.ts"),
        ],
    )
    out, duration = [], 0.0
    for line in (folder / "index.m3u8").read_text().splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(line.split(":", 1)[1].rstrip(","))
        elif line and not line.startswith("#"):
            out.append((line, duration))
    return out


class LivePlaylist:
    """A live HLS media playlist written while a test runs: a sliding window of the segments
    published so far, `#EXT-X-ENDLIST` when the stream ends."""

    def __init__(self, path: Path, segments: list[tuple[str, float]], window: int = 3) -> None:
        self.path, self.segments, self.window = path, segments, window
        self.published = 0

    def write(self, ended: bool = False) -> None:
        first = max(0, self.published - self.window)
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            "#EXT-X-TARGETDURATION:1",
            f"#EXT-X-MEDIA-SEQUENCE:{first}",
        ]
        for name, duration in self.segments[first : self.published]:
            lines += [f"#EXTINF:{duration:.3f},", name]
        if ended:
            lines.append("#EXT-X-ENDLIST")
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.path)  # a reader never sees half a playlist

    async def run(self, count: int, ended: bool = True, first: int = 2) -> None:
        """Publish `first` segments at once, then one per segment duration, `count` in all; end
        the stream when `ended` (else the playlist just stops changing, as a stalled encoder's)."""
        self.published = min(first, count)
        self.write()
        while self.published < count:
            await asyncio.sleep(self.segments[self.published][1])
            self.published += 1
            self.write()
        if ended:
            self.write(ended=True)


@dataclass
class SrtSender:
    """A running `srt_sender`: the URL to call it at, and its ffmpeg."""

    url: str
    process: asyncio.subprocess.Process


@contextlib.asynccontextmanager
async def srt_sender(path: Path) -> AsyncIterator[SrtSender]:
    """ffmpeg serving `path` (MPEG-TS) in real time as an SRT listener on a free UDP port of
    127.0.0.1; it waits for one caller, sends the file and exits (killed on leaving if not)."""
    port = free_port(socket.SOCK_DGRAM)
    process = await asyncio.create_subprocess_exec(
        *FFMPEG, "-re", "-i", str(path), "-c", "copy", "-f", "mpegts",
        f"srt://127.0.0.1:{port}?mode=listener&listen_timeout=60000000",
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        yield SrtSender(f"srt://127.0.0.1:{port}", process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
