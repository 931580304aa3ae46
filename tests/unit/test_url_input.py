"""URL input over HTTP(S): every container a user may link, the codec policy, and each way a
source can fail, against files made by ffmpeg and an aiohttp server on 127.0.0.1.

`UrlServer`, `drain` and `make_media` are shared with the HLS and SRT tests."""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest
import pytest_asyncio
from aiohttp import web

from ingress_pod.inputs import codecs, urls
from ingress_pod.inputs.av_input import AvInput, InputOptions
from ingress_pod.inputs.base import InputInfo
from ingress_pod.inputs.errors import Corrupt, InputError, Stalled, Unreachable, Unsupported

FFMPEG = shutil.which("ffmpeg")
OPENSSL = shutil.which("openssl")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is needed to make test media")

VIDEO = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=15"]
AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "15", "-pix_fmt", "yuv420p"]


def ffmpeg(*args: str) -> None:
    """Run Debian's ffmpeg quietly (it makes the test media; PyAV only reads)."""
    subprocess.run([FFMPEG or "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


# name: the ffmpeg arguments after the inputs (one second of 160x120 at 15 fps, 48 kHz mono)
CONTAINERS: dict[str, list[str]] = {
    # The mov muxer writes the moov atom after the media unless told to move it.
    "moov-at-end.mp4": [*VIDEO, *AUDIO, "-t", "1", *H264, "-c:a", "aac"],
    "a.mov": [*VIDEO, *AUDIO, "-t", "1", *H264, "-c:a", "aac"],
    "a.mkv": [*VIDEO, *AUDIO, "-t", "1", *H264, "-c:a", "libvorbis"],
    "vp8.webm": [*VIDEO, *AUDIO, "-t", "1", "-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libopus"],
    "vp9.webm": [
        *VIDEO,
        *AUDIO,
        "-t",
        "1",
        "-c:v",
        "libvpx-vp9",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-c:a",
        "libvorbis",
    ],
    "a.ts": [*VIDEO, *AUDIO, "-t", "1", *H264, "-c:a", "aac"],
    "theora.ogg": [*VIDEO, *AUDIO, "-t", "1", "-c:v", "libtheora", "-c:a", "libvorbis"],
    "opus.ogg": [*AUDIO, "-t", "1", "-c:a", "libopus"],
    "a.mp3": [*AUDIO, "-t", "1", "-c:a", "libmp3lame"],
    "a.aac": [*AUDIO, "-t", "1", "-c:a", "aac", "-f", "adts"],
    "a.wav": [*AUDIO, "-t", "1", "-c:a", "pcm_s16le"],
    "av1.mp4": [*VIDEO, "-t", "1", "-c:v", "libsvtav1", "-preset", "12"],
    "prores.mov": [*VIDEO, "-t", "1", "-c:v", "prores_ks", "-profile:v", "0"],
    "ffv1.mkv": [*VIDEO, "-t", "1", "-c:v", "ffv1"],
    "wma.asf": [*AUDIO, "-t", "1", "-c:a", "wmav2"],
}


def make_media(root: Path, names: list[str]) -> None:
    """Make the named CONTAINERS files in `root`."""
    for name in names:
        ffmpeg(*CONTAINERS[name], str(root / name))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if FFMPEG is None:
        pytest.skip("ffmpeg is needed to make test media")
    root = tmp_path_factory.mktemp("url-media")
    make_media(root, list(CONTAINERS))
    # An MP3 with cover art: the picture is a video stream to FFmpeg, not a track to publish.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64", "-frames:v", "1", str(root / "cover.png"))
    ffmpeg(
        "-i", str(root / "a.mp3"), "-i", str(root / "cover.png"), "-map", "0", "-map", "1", "-c", "copy",
        "-disposition:v", "attached_pic", str(root / "cover.mp3"),
    )  # fmt: skip
    return root


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class UrlServer:
    """An HTTP server on 127.0.0.1 serving `root`'s files (with Range support) and any handler
    a test sets in `routes`; `requests` records each request's path and Range header."""

    root: Path
    port: int = 0
    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.requests.append((path, request.headers.get("Range")))
        if path in self.routes:
            return await self.routes[path](request)
        file = self.root / path
        if not file.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(file)


async def start_server(
    root: Path, ssl_context: ssl.SSLContext | None = None
) -> tuple[UrlServer, web.AppRunner]:
    """Serve `root` on a free port of 127.0.0.1 (HTTPS with `ssl_context`)."""
    server = UrlServer(root)
    app = web.Application()
    app.router.add_get("/{path:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    server.port = runner.addresses[0][1]
    return server, runner


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[UrlServer]:
    server, runner = await start_server(tmp_path)
    yield server
    await runner.cleanup()


@dataclass
class Drained:
    """What an AvInput delivered, read to its end."""

    info: InputInfo | None
    error: InputError | None
    video: int  # frames that reached the loop
    audio: int
    audio_seconds: float  # of the audio frames that reached the loop
    first_frame: float | None  # seconds from start to the first frame of either kind
    elapsed: float  # seconds from start to the end of input
    video_gaps: list[float]  # seconds between consecutive video frames reaching the loop
    last_video_time: float | None  # media time of the last video frame


async def drain(options: InputOptions, limit: float = 20, play: bool = True) -> Drained:
    """Run an AvInput to its end (at most `limit` seconds), taking every frame as it comes;
    `play`s it at once, as a session does once in its room (False: never)."""
    source = AvInput(options, asyncio.get_running_loop())
    started = time.monotonic()
    first: list[float] = []
    video_arrivals: list[float] = []
    video_times: list[float | None] = []
    audio_frames = 0
    audio_seconds = 0.0

    async def take_video() -> None:
        while True:
            frame = await source.video.get()
            video_arrivals.append(time.monotonic())
            video_times.append(frame.time)
            first.append(video_arrivals[-1])

    async def take_audio() -> None:
        nonlocal audio_frames, audio_seconds
        while True:
            frame = await source.audio.get()
            audio_frames += 1
            audio_seconds += frame.samples / frame.sample_rate
            first.append(time.monotonic())

    takers = [asyncio.create_task(take_video()), asyncio.create_task(take_audio())]
    source.start()
    if play:
        source.play()
    try:
        try:
            error = await asyncio.wait_for(source.ended, limit)
        finally:
            source.stop()
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.02)  # let the takers see what was handed over last
    finally:
        for task in takers:
            task.cancel()
    return Drained(
        info=source.opened.result() if source.opened.done() else None,
        error=error,
        video=len(video_times),
        audio=audio_frames,
        audio_seconds=audio_seconds,
        first_frame=min(first) - started if first else None,
        elapsed=elapsed,
        video_gaps=[b - a for a, b in itertools.pairwise(video_arrivals)],
        last_video_time=video_times[-1] if video_times else None,
    )


def video_times(path: Path) -> list[float | None]:
    """The media times of a file's video frames, read from disk."""
    with av.open(str(path)) as container:
        return [frame.time for frame in container.decode(video=0)]


def last_video_time(path: Path) -> float | None:
    """The media time of a file's last video frame, read from disk."""
    return video_times(path)[-1]


def url_input(url: str, **kw: object) -> InputOptions:
    """Options as the session sets them for a URL ingress, read faster than real time unless
    `realtime` is given (these tests check what is read, not when)."""
    options: dict[str, object] = {
        "codecs": codecs.URL,
        "realtime": False,
        "open_timeout": 5,
        "read_timeout": 5,
    }
    options.update(kw)
    return InputOptions(url=url, **options)  # type: ignore[arg-type]


@needs_ffmpeg
@pytest.mark.parametrize(
    ("name", "video", "audio"),
    [
        ("moov-at-end.mp4", ("h264", "video/H264"), ("aac", "audio/aac")),
        ("a.mov", ("h264", "video/H264"), ("aac", "audio/aac")),
        ("a.mkv", ("h264", "video/H264"), ("vorbis", "audio/x-vorbis")),
        ("vp8.webm", ("vp8", "video/VP8"), ("opus", "audio/opus")),
        ("vp9.webm", ("vp9", "video/VP9"), ("vorbis", "audio/x-vorbis")),
        ("a.ts", ("h264", "video/H264"), ("aac", "audio/aac")),
        ("theora.ogg", ("theora", "video/x-theora"), ("vorbis", "audio/x-vorbis")),
        ("opus.ogg", None, ("opus", "audio/opus")),
        ("a.mp3", None, ("mp3", "audio/mpeg")),
        ("cover.mp3", None, ("mp3", "audio/mpeg")),
        ("a.aac", None, ("aac", "audio/aac")),
        ("a.wav", None, ("pcm_s16le", "audio/x-pcm_s16le")),
        ("av1.mp4", ("av1", "video/AV1"), None),
    ],
)
async def test_containers_over_http_open_decode_and_report_their_streams(
    media: Path, server: UrlServer, name: str, video: tuple[str, str] | None, audio: tuple[str, str] | None
) -> None:
    shutil.copy(media / name, server.root / name)
    result = await drain(url_input(server.url(name)))
    assert result.error is None
    assert result.info is not None
    if video is None:
        assert result.info.video is None and result.video == 0
    else:
        assert result.info.video is not None
        assert (result.info.video.codec, result.info.video.mime_type) == video
        assert (result.info.video.width, result.info.video.height, result.info.video.framerate) == (
            160,
            120,
            15,
        )
        assert result.video > 0
    if audio is None:
        assert result.info.audio is None and result.audio == 0
    else:
        assert result.info.audio is not None
        assert (result.info.audio.codec, result.info.audio.mime_type) == audio
        assert (result.info.audio.channels, result.info.audio.sample_rate) == (1, 48000)
        assert result.audio > 0


@needs_ffmpeg
async def test_mp4_with_its_index_at_the_end_is_read_through_range_requests(
    media: Path, server: UrlServer
) -> None:
    data = (media / "moov-at-end.mp4").read_bytes()
    mdat, moov = data.index(b"mdat"), data.index(b"moov")
    assert moov > mdat  # the file this test is about
    shutil.copy(media / "moov-at-end.mp4", server.root / "x.mp4")
    result = await drain(url_input(server.url("x.mp4")))
    assert result.error is None and result.last_video_time == pytest.approx(14 / 15)
    # FFmpeg read on to the moov atom, then came back to the media (after the box header) with a
    # second request.
    assert server.requests == [("x.mp4", "bytes=0-"), ("x.mp4", f"bytes={mdat + 4}-")]


@needs_ffmpeg
async def test_a_connection_dropped_mid_file_is_resumed(media: Path, server: UrlServer) -> None:
    ffmpeg(*VIDEO, *AUDIO, "-t", "3", *H264, "-c:a", "aac", str(server.root / "long.ts"))
    data = (server.root / "long.ts").read_bytes()

    async def drops_every_40kb(request: web.Request) -> web.StreamResponse:
        start = int(request.headers.get("Range", "bytes=0-").removeprefix("bytes=").split("-")[0])
        response = web.StreamResponse(
            status=206,
            headers={
                "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}",
                "Content-Length": str(len(data) - start),
                "Accept-Ranges": "bytes",
            },
        )
        await response.prepare(request)
        await response.write(data[start : start + 40_000])
        if start + 40_000 < len(data):
            assert request.transport is not None
            request.transport.close()
        return response

    server.routes["long.ts"] = drops_every_40kb
    result = await drain(url_input(server.url("long.ts")))
    assert result.error is None
    assert result.last_video_time == last_video_time(server.root / "long.ts")  # read to the end
    assert ("long.ts", "bytes=40000-") in server.requests


URL_VIDEO = "H.264, H.265, VP8, VP9, AV1, MPEG-4, MPEG-2, Theora"


@needs_ffmpeg
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("prores.mov", f"unsupported video codec prores: URL input takes {URL_VIDEO}"),
        ("ffv1.mkv", f"unsupported video codec ffv1: URL input takes {URL_VIDEO}"),
        (
            "wma.asf",
            "unsupported audio codec wmav2: URL input takes AAC, MP3, MP2, Opus, Vorbis, FLAC, AC-3, E-AC-3, "
            "ALAC, PCM",
        ),
    ],
)
async def test_codecs_outside_the_url_list_are_refused_by_name(
    media: Path, server: UrlServer, name: str, message: str
) -> None:
    shutil.copy(media / name, server.root / name)
    result = await drain(url_input(server.url(name)))
    assert isinstance(result.error, Unsupported)
    assert result.error.message == message
    assert result.video == result.audio == 0


def test_every_listed_codec_has_a_decoder_in_pyav() -> None:
    for name in codecs.CODECS:
        assert av.codec.Codec(name, "r").type in ("video", "audio")
    assert av.codec.Codec("pcm_s24le", "r").type == "audio"
    codecs.URL.check("audio", "pcm_f32le")  # every PCM format is taken
    with pytest.raises(
        Unsupported, match=re.escape("unsupported video codec hevc: RTMP input must be H.264")
    ):
        codecs.RTMP.check("video", "hevc")
    codecs.RTMP.check("audio", "nellymoser")  # RTMP takes any audio, as before


async def test_refused_connection_is_unreachable(server: UrlServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await drain(url_input(f"http://127.0.0.1:{port}/x.mp4"))
    assert isinstance(result.error, Unreachable)
    assert result.error.message == f"source unreachable: Connection refused (http://127.0.0.1:{port}/x.mp4)"


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (404, "HTTP 404 Not Found"),
        (403, "HTTP 403 Forbidden"),
        (401, "HTTP 401 Unauthorized"),
        (410, "HTTP 4xx client error"),
        (503, "HTTP 5xx server error"),
    ],
)
async def test_http_errors_name_the_status_without_credentials_or_query(
    server: UrlServer, status: int, text: str
) -> None:
    async def refuse(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text="no")

    server.routes["x.mp4"] = refuse
    url = server.url("x.mp4").replace("http://", "http://user:secret@") + "?token=secret"
    result = await drain(url_input(url))
    assert isinstance(result.error, Unreachable)
    assert result.error.message == f"source unreachable: {text} ({server.url('x.mp4')})"


async def test_a_web_page_is_not_a_media_file(server: UrlServer) -> None:
    (server.root / "watch.html").write_text(
        "<!doctype html><html><body>" + "<p>video</p>" * 400 + "</body></html>"
    )
    result = await drain(url_input(server.url("watch.html") + "?v=secret"))
    assert isinstance(result.error, Corrupt)
    assert result.error.message == f"corrupt input: not a media file ({server.url('watch.html')})"


@needs_ffmpeg
async def test_a_source_that_goes_silent_mid_body_stalls_within_the_read_timeout(server: UrlServer) -> None:
    ffmpeg(*VIDEO, *AUDIO, "-t", "3", *H264, "-c:a", "aac", str(server.root / "long.ts"))
    data = (server.root / "long.ts").read_bytes()
    silent = asyncio.Event()

    async def goes_silent(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": "video/mp2t", "Content-Length": str(len(data))}
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])  # enough for FFmpeg to find the streams
        silent.set()
        await asyncio.sleep(10)  # the server's cleanup cancels this
        return response

    server.routes["long.ts"] = goes_silent
    result = await drain(url_input(server.url("long.ts"), read_timeout=1.5))
    assert isinstance(result.error, Stalled)
    assert result.error.message == "input stalled: no data for 1.5 s"
    assert silent.is_set() and result.video > 0
    # Without the stall, the input would wait for the server's 10 s.
    assert 1.5 <= result.elapsed < 4


@needs_ffmpeg
async def test_a_paced_file_holds_its_first_frame_until_played(media: Path, server: UrlServer) -> None:
    shutil.copy(media / "a.ts", server.root / "a.ts")
    source = AvInput(url_input(server.url("a.ts"), realtime=True), asyncio.get_running_loop())
    source.start()
    try:
        await asyncio.wait_for(source.opened, 5)
        await asyncio.sleep(0.5)  # the session joining its room
        # Nothing played to an empty room: paced from the open, a frame would be out by now.
        assert len(source.video) == len(source.audio) == 0 and not source.ended.done()
        source.play()
        played = time.monotonic()
        first = await asyncio.wait_for(source.video.get(), 2)
        assert time.monotonic() - played < 0.3
        # The file's first picture, not a later one the queue kept.
        assert first.time == pytest.approx(video_times(server.root / "a.ts")[0])
    finally:
        source.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    if OPENSSL is None:
        pytest.skip("openssl is needed to make a certificate")
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [
            OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@needs_ffmpeg
async def test_https_sources_need_a_trusted_certificate(
    media: Path, tmp_path: Path, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    shutil.copy(media / "a.ts", tmp_path / "a.ts")
    server, runner = await start_server(tmp_path, context)
    url = f"https://127.0.0.1:{server.port}/a.ts"
    try:
        untrusted = await drain(url_input(url))
        assert isinstance(untrusted.error, Unreachable)
        assert (
            untrusted.error.message
            == f"source unreachable: TLS certificate not trusted: self-signed certificate ({url})"
        )
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # as a cluster's CA bundle would list it
        trusted = await drain(url_input(url))
        assert trusted.error is None and trusted.video > 0
    finally:
        await runner.cleanup()


def test_an_unknown_host_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_host(*args: object, **kw: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    assert urls.diagnose("https://cdn.example/a.m3u8", 1) == "cannot resolve host cdn.example"
    assert urls.diagnose("http://cdn.example:8080/a.mp4", 1) == "cannot resolve host cdn.example"
    assert urls.diagnose("srt://cdn.example:9000", 1) is None
