"""The front door's own protocol code: FLV framing, the start-up cache, the RTMP status
messages, and a real ffmpeg publishing to (or refused by) the RTMP listener."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import av
import pytest

from ingress_operator.models import InputType
from ingress_pod.frontdoor import flv
from ingress_pod.frontdoor.rtmp import RTMPServer, on_status, stream_key_of
from ingress_pod.frontdoor.sessions import LiveSession, Refused

AVC_KEY = bytes([0x17, 0x01, 0, 0, 0]) + b"key"
AVC_INTER = bytes([0x27, 0x01, 0, 0, 0]) + b"inter"
AVC_HEADER = bytes([0x17, 0x00, 0, 0, 0]) + b"sps/pps"
AAC_HEADER = bytes([0xAF, 0x00, 0x12, 0x10])
AAC_FRAME = bytes([0xAF, 0x01]) + b"aac"
HEVC_KEY = bytes([0x1C, 0x01, 0, 0, 0])
EX_HEVC_HEADER = bytes([0x90]) + b"hvc1"


@pytest.mark.parametrize(
    ("kind", "ts", "body", "expected"),
    [
        # type | size | timestamp low 24 bits | its high byte | stream id 0 | body | 11 + size
        (9, 0, b"", ["09", "000000", "000000", "00", "000000", "", "0000000b"]),
        (8, 40, b"\xaf\x01", ["08", "000002", "000028", "00", "000000", "af01", "0000000d"]),
        (9, 0x01020304, b"\x17", ["09", "000001", "020304", "01", "000000", "17", "0000000c"]),
    ],
)
def test_tag_framing(kind: int, ts: int, body: bytes, expected: list[str]) -> None:
    assert flv.tag(kind, ts, body).hex() == "".join(expected)


@pytest.mark.parametrize(
    ("body", "codec", "key", "seq"),
    [
        (AVC_KEY, "h264", True, False),
        (AVC_INTER, "h264", False, False),
        (AVC_HEADER, "h264", True, True),
        (HEVC_KEY, "hevc", True, False),
        (EX_HEVC_HEADER, "hvc1", True, True),
        (b"", "unknown", False, False),
    ],
)
def test_video_tag_inspection(body: bytes, codec: str, key: bool, seq: bool) -> None:
    assert flv.video_codec(body) == codec
    assert flv.is_keyframe(body) is key
    assert flv.is_video_sequence_header(body) is seq


def test_metadata_body() -> None:
    meta = flv.ON_METADATA + b"\x08\x00\x00\x00\x00"
    assert flv.metadata_body(flv.SET_DATA_FRAME + meta) == meta
    assert flv.metadata_body(meta) == meta
    assert flv.metadata_body(b"\x02\x00\x04onXY") is None


def test_start_cache_keeps_headers_and_the_gop_in_progress() -> None:
    cache = flv.StartCache()
    cache.add(flv.SCRIPT, 0, b"meta")
    cache.add(flv.VIDEO, 0, AVC_HEADER)
    cache.add(flv.AUDIO, 0, AAC_HEADER)
    cache.add(flv.VIDEO, 0, AVC_KEY)
    cache.add(flv.VIDEO, 33, AVC_INTER)
    cache.add(flv.AUDIO, 40, AAC_FRAME)
    cache.add(flv.VIDEO, 1000, AVC_KEY)  # a new GOP: the old one is no use to a new reader
    cache.add(flv.VIDEO, 1033, AVC_INTER)
    expected = flv.FILE_HEADER + b"".join(
        [
            flv.tag(flv.SCRIPT, 0, b"meta"),
            flv.tag(flv.VIDEO, 0, AVC_HEADER),
            flv.tag(flv.AUDIO, 0, AAC_HEADER),
            flv.tag(flv.VIDEO, 1000, AVC_KEY),
            flv.tag(flv.VIDEO, 1033, AVC_INTER),
        ]
    )
    assert cache.snapshot() == expected


def test_start_cache_starts_video_at_a_keyframe_and_bounds_audio_only() -> None:
    cache = flv.StartCache()
    cache.add(flv.VIDEO, 0, AVC_INTER)  # joined mid-GOP: undecodable, not kept
    for ts in range(0, 2000, 20):
        cache.add(flv.AUDIO, ts, AAC_FRAME)
    kept = cache.snapshot()[len(flv.FILE_HEADER) :]
    size = len(flv.tag(flv.AUDIO, 0, AAC_FRAME))
    # half a second of audio: 1480..1980 in 20 ms steps
    assert len(kept) == size * 26


def test_on_status_is_an_amf0_command() -> None:
    chunk = on_status(1, "error", "NetStream.Publish.BadName", "unknown stream key")
    assert chunk.msg_type_id == 0x14 and chunk.msg_stream_id == 1
    payload = chunk.payload
    assert payload.startswith(b"\x02\x00\x08onStatus")
    assert b"NetStream.Publish.BadName" in payload and b"unknown stream key" in payload


@pytest.mark.parametrize(
    ("name", "key"), [("abc", "abc"), ("abc?token=1", "abc"), (" abc ", "abc"), ("", "")]
)
def test_stream_key_of(name: str, key: str) -> None:
    assert stream_key_of(name) == key


# --- a real encoder against the listener -----------------------------------------------------


class FakeSessions:
    """Accepts one key; records what the listener hands over."""

    def __init__(self) -> None:
        self.opened: list[LiveSession] = []
        self.closed: list[str] = []

    async def open(self, stream_key: str, input_type: InputType) -> LiveSession:
        if stream_key != "good-key":
            raise Refused("unknown stream key")
        session = LiveSession("RT_test", "IN_test", "cr")
        session.attach()  # collect everything from the start
        self.opened.append(session)
        return session

    def close(self, session: LiveSession, reason: str) -> None:
        session.end(reason)
        self.closed.append(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _push(port: int, key: str, seconds: float = 2.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-c:a", "aac",
        "-f", "flv", f"rtmp://127.0.0.1:{port}/x/{key}",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, err.decode()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (tools/install.sh apt)")
async def test_ffmpeg_publish_is_relayed_as_decodable_flv(tmp_path: Path) -> None:
    sessions = FakeSessions()
    port = _free_port()
    server = await RTMPServer(sessions).start("127.0.0.1", port)
    try:
        code, err = await _push(port, "good-key")
    finally:
        server.close()
    assert code == 0, err
    assert sessions.closed == ["encoder disconnected"]
    session = sessions.opened[0]
    data = b""
    while (chunk := await session.next_chunk()) is not None:
        data += chunk
    path = tmp_path / "relayed.flv"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.name, video.width, video.height) == ("h264", 320, 240)
        assert container.streams.audio[0].codec_context.name == "aac"
        frames = sum(1 for _ in container.decode(video=0))
    assert 50 <= frames <= 60


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (tools/install.sh apt)")
async def test_unknown_key_is_refused_with_an_rtmp_error_not_a_hang() -> None:
    sessions = FakeSessions()
    port = _free_port()
    server = await RTMPServer(sessions).start("127.0.0.1", port)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        code, err = await _push(port, "wrong-key", seconds=10)
        elapsed = loop.time() - started
    finally:
        server.close()
    assert code != 0 and "error" in err.lower()
    assert elapsed < 5, f"ffmpeg took {elapsed:.1f}s to give up"
    assert sessions.opened == []


async def test_garbage_on_the_rtmp_port_is_dropped() -> None:
    sessions = FakeSessions()
    port = _free_port()
    server = await RTMPServer(sessions).start("127.0.0.1", port)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x03" + bytes(1536) + b"GET / HTTP/1.1\r\n\r\n" * 200)
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 5)  # the server closes: EOF, not a hang
        assert len(rest) <= 1 + 1536 * 2
        writer.close()
    finally:
        server.close()
