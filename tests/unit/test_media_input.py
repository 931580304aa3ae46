"""The PyAV input layer: real decodes of ffmpeg-made files, and each input problem classified
into the error the ingress status shows."""

from __future__ import annotations

import asyncio
import errno
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import numpy as np
import pytest
from av.audio.frame import AudioFrame
from av.video.frame import VideoFrame

from ingress_pod.inputs import codecs
from ingress_pod.inputs.av_input import AvInput, InputOptions, classify, redact
from ingress_pod.inputs.base import InputInfo
from ingress_pod.inputs.errors import Corrupt, InputError, NoMedia, Stalled, Unreachable, Unsupported

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is needed to make test media")


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG or "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Short test files: H.264 + AAC in FLV, H.264 alone, HEVC in FLV, scrambled H.264 payloads."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is needed to make test media")
    root = tmp_path_factory.mktemp("media")
    video_src = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"]
    audio_src = ["-f", "lavfi", "-i", "sine=sample_rate=44100"]
    h264 = ["-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p"]
    ffmpeg(*video_src, *audio_src, *h264, "-c:a", "aac", "-ac", "2", str(root / "av.flv"))
    ffmpeg(*video_src, *h264, str(root / "video.flv"))
    write_hevc_flv(root / "hevc.flv")
    # Seeded: some random bytes pass as FLV tags of an old codec that "decodes" them.
    (root / "garbage.bin").write_bytes(random.Random(7).randbytes(50_000))
    (root / "scrambled.flv").write_bytes(scramble_video((root / "video.flv").read_bytes()))
    return root


def write_hevc_flv(path: Path) -> None:
    """One second of HEVC in (enhanced) FLV, as OBS can send it: Debian's ffmpeg 5.1 cannot
    write that, PyAV's FFmpeg can."""
    with av.open(str(path), "w", format="flv") as out:
        stream = out.add_stream("libx265", rate=30, options={"x265-params": "log-level=none"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(30):
            picture = av.VideoFrame.from_ndarray(np.full((240, 320, 3), i * 8, np.uint8), format="rgb24")
            picture = picture.reformat(format="yuv420p")
            picture.pts = i
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))


def scramble_video(flv: bytes) -> bytes:
    """The FLV with every video tag after the sequence header turned into random bytes (framing kept)."""
    data, pos, seen, rng = bytearray(flv), 13, 0, random.Random(7)
    while pos + 11 <= len(data):
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        body = pos + 11
        if data[pos] == 9:
            seen += 1
            if seen > 1 and size > 5:
                data[body + 5 : body + size] = rng.randbytes(size - 5)
        pos = body + size + 4
    return bytes(data)


@dataclass
class Read:
    info: InputInfo | None
    error: InputError | None
    video: VideoFrame | None
    audio: AudioFrame | None
    video_rates: tuple[int, float]


async def read(options: InputOptions) -> Read:
    """Run an AvInput to its end, keeping the first frame of each kind that reached the loop."""
    source = AvInput(options, asyncio.get_running_loop())
    first_video: list[VideoFrame] = []
    first_audio: list[AudioFrame] = []

    async def take_video() -> None:
        first_video.append(await source.video.get())

    async def take_audio() -> None:
        first_audio.append(await source.audio.get())

    takers = [asyncio.create_task(take_video()), asyncio.create_task(take_audio())]
    source.start()
    error = await asyncio.wait_for(source.ended, 20)
    await asyncio.sleep(0.01)  # let the takers see what was handed over last
    for task in takers:
        task.cancel()
    return Read(
        source.opened.result() if source.opened.done() else None,
        error,
        first_video[0] if first_video else None,
        first_audio[0] if first_audio else None,
        source.video_rates.rates(),
    )


def rtmp(url: str | Path, **kw: object) -> InputOptions:
    return InputOptions(url=str(url), format="flv", codecs=codecs.RTMP, open_timeout=5, read_timeout=5, **kw)  # type: ignore[arg-type]


@needs_ffmpeg
async def test_flv_with_h264_and_aac_decodes_and_reports_its_streams(media: Path) -> None:
    result = await read(rtmp(media / "av.flv"))
    assert result.error is None
    assert result.info is not None and result.info.video and result.info.audio
    assert (result.info.video.codec, result.info.video.width, result.info.video.height) == ("h264", 320, 240)
    assert result.info.video.framerate == 30
    assert result.info.video.mime_type == "video/H264"
    assert (result.info.audio.codec, result.info.audio.channels, result.info.audio.sample_rate) == (
        "aac",
        2,
        44100,
    )
    assert result.info.audio.mime_type == "audio/aac"
    assert result.video is not None and (result.video.width, result.video.height) == (320, 240)
    # Audio leaves the input resampled for Opus: s16, 48 kHz, the channels asked for.
    assert result.audio is not None
    assert (result.audio.format.name, result.audio.sample_rate, result.audio.layout.nb_channels) == (
        "s16",
        48000,
        2,
    )
    bitrate, framerate = result.video_rates
    assert framerate == pytest.approx(30, abs=0.5)
    assert bitrate > 0


@needs_ffmpeg
async def test_mono_output_and_a_video_only_input(media: Path) -> None:
    result = await read(rtmp(media / "av.flv", audio_channels=1))
    assert result.audio is not None and result.audio.layout.nb_channels == 1
    video_only = await read(rtmp(media / "video.flv"))
    assert video_only.error is None
    assert video_only.info is not None and video_only.info.audio is None and video_only.info.video is not None


@needs_ffmpeg
async def test_hevc_over_rtmp_is_unsupported_but_accepted_from_a_url(media: Path) -> None:
    result = await read(rtmp(media / "hevc.flv"))
    assert isinstance(result.error, Unsupported)
    assert result.error.message == "unsupported video codec hevc: RTMP input must be H.264"
    assert result.video is None

    pulled = await read(InputOptions(url=str(media / "hevc.flv")))
    assert pulled.error is None
    assert (
        pulled.info is not None
        and pulled.info.video is not None
        and pulled.info.video.mime_type == "video/H265"
    )


@needs_ffmpeg
async def test_garbage_bytes_are_a_corrupt_stream(media: Path) -> None:
    forced = await read(rtmp(media / "garbage.bin"))
    assert isinstance(forced.error, Corrupt)
    assert forced.error.message.startswith("corrupt input: not a readable FLV stream")
    probed = await read(InputOptions(url=str(media / "garbage.bin")))
    assert isinstance(probed.error, Corrupt)
    assert probed.error.message == f"corrupt input: not a media file ({media / 'garbage.bin'})"


@needs_ffmpeg
async def test_undecodable_video_payloads_are_a_corrupt_video_stream(media: Path) -> None:
    result = await read(rtmp(media / "scrambled.flv"))
    assert isinstance(result.error, Corrupt)
    assert result.error.message.startswith("corrupt video stream: could not decode h264")


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A server that accepts connections (the kernel does) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        yield sock.getsockname()[1]


async def test_unreachable_source(closed_port: int) -> None:
    result = await read(rtmp(f"http://user:pw@127.0.0.1:{closed_port}/sessions/RT_x?token=s"))
    assert isinstance(result.error, Unreachable)
    assert (
        result.error.message
        == f"source unreachable: Connection refused (http://127.0.0.1:{closed_port}/sessions/RT_x)"
    )


async def test_a_source_that_sends_nothing_times_out_as_no_media(silent_server: int) -> None:
    options = InputOptions(
        url=f"http://127.0.0.1:{silent_server}/x", format="flv", open_timeout=0.5, read_timeout=0.5
    )
    result = await read(options)
    assert isinstance(result.error, NoMedia)
    assert result.error.message == "no audio or video received within 0.5 s"


OPTIONS = InputOptions(url="https://u:p@cdn.example/live/a.m3u8?sig=secret", format="flv", read_timeout=7)


@pytest.mark.parametrize(
    ("err", "opened", "kind", "message"),
    [
        (
            av.error.ExitError(-1, "Immediate exit requested"),
            False,
            NoMedia,
            "no audio or video received within 10 s",
        ),
        (av.error.ExitError(-1, "Immediate exit requested"), True, Stalled, "input stalled: no data for 7 s"),
        (
            av.error.HTTPNotFoundError(-1, "Server returned 404 Not Found"),
            False,
            Unreachable,
            "source unreachable: HTTP 404 Not Found (https://cdn.example/live/a.m3u8)",
        ),
        (
            av.error.ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
            True,
            Unreachable,
            "input connection lost: Connection reset by peer",
        ),
        (
            av.error.InvalidDataError(-1, "Invalid data found when processing input"),
            False,
            Corrupt,
            "corrupt input: not a readable FLV stream (Invalid data found when processing input)",
        ),
        (
            av.error.EOFError(-1, "End of file"),
            False,
            Corrupt,
            "corrupt input: not a readable FLV stream (End of file)",
        ),
        (
            av.error.ProtocolNotFoundError(-1, "Protocol not found"),
            False,
            Unsupported,
            "unsupported input: Protocol not found",
        ),
        (
            av.error.UnknownError(-1, "Unknown error occurred"),
            True,
            Corrupt,
            "could not read input: Unknown error occurred",
        ),
    ],
)
def test_pyav_errors_are_classified(
    err: av.error.FFmpegError, opened: bool, kind: type[InputError], message: str
) -> None:
    classified = classify(err, OPTIONS, opened=opened)
    assert type(classified) is kind
    assert classified.message == message


def test_redact_drops_credentials_and_query() -> None:
    assert redact("srt://user:pw@host:9000/path?passphrase=x") == "srt://host:9000/path"
    assert redact("/tmp/file.flv") == "/tmp/file.flv"
