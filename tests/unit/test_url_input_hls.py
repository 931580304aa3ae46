"""URL input from HLS: VOD and live playlists, a master playlist's variants, missing and slow
segments, a playlist that stops updating, and real-time pacing across timestamp jumps; the
playlists and segments are made by ffmpeg and served on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from ingress_pod.inputs.errors import Stalled
from ingress_pod.inputs.stats import Interleaver, Pacer
from tests.unit.test_url_input import (
    AUDIO,
    FFMPEG,
    H264,
    VIDEO,
    UrlServer,
    drain,
    ffmpeg,
    start_server,
    url_input,
)

pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is needed to make test media")

SEGMENT = 0.5  # seconds: a keyframe every 8 frames at 16 fps
FPS = 16
KEYFRAMES = ["-r", str(FPS), "-g", "8", "-keyint_min", "8", "-sc_threshold", "0"]


@pytest.fixture(scope="module")
def hls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Segments and playlists: three variants of 4 s (master.m3u8, v0-v2.m3u8), and eight
    segments for a live playlist (live_000.ts …)."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is needed to make test media")
    root = tmp_path_factory.mktemp("hls")
    # Three variants, each with its own audio at its own sample rate (which tells them apart).
    ffmpeg(
        *VIDEO, *AUDIO, "-t", "4",
        "-filter_complex", "[0:v]split=3[a][b][c];[b]scale=128:96[b2];[c]scale=96:72[c2]",
        "-map", "[a]", "-map", "[b2]", "-map", "[c2]", "-map", "1:a", "-map", "1:a", "-map", "1:a",
        *H264, *KEYFRAMES, "-b:v:0", "300k", "-b:v:1", "150k", "-b:v:2", "80k",
        "-c:a", "aac", "-ar:a:0", "48000", "-ar:a:1", "44100", "-ar:a:2", "32000",
        "-f", "hls", "-hls_time", str(SEGMENT), "-hls_playlist_type", "vod",
        "-hls_segment_filename", str(root / "v%v_%03d.ts"), "-var_stream_map", "v:0,a:0 v:1,a:1 v:2,a:2",
        str(root / "v%v.m3u8"),
    )  # fmt: skip
    # The highest bandwidth is not listed first: it is chosen, not taken in order.
    (root / "master.m3u8").write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=140800,RESOLUTION=96x72,CODECS="avc1.42c00b,mp4a.40.2"\nv2.m3u8\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=382800,RESOLUTION=160x120,CODECS="avc1.42c00d,mp4a.40.2"\nv0.m3u8\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=217800,RESOLUTION=128x96,CODECS="avc1.42c00c,mp4a.40.2"\nv1.m3u8\n'
    )
    ffmpeg(
        *VIDEO, *AUDIO, "-t", "4", *H264, *KEYFRAMES, "-c:a", "aac",
        "-f", "hls", "-hls_time", str(SEGMENT), "-hls_playlist_type", "vod",
        "-hls_segment_filename", str(root / "live_%03d.ts"), str(root / "unused.m3u8"),
    )  # fmt: skip
    return root


@pytest.fixture
async def server(hls: Path) -> AsyncIterator[UrlServer]:
    server, runner = await start_server(hls)
    yield server
    await runner.cleanup()


def segments(server: UrlServer, variant: str) -> list[int]:
    """The segment numbers of `variant` the server was asked for, in order."""
    found = [re.fullmatch(rf"{variant}_(\d+)\.ts", path) for path in server.paths()]
    return [int(match.group(1)) for match in found if match]


async def test_a_vod_media_playlist_is_read_to_its_end(server: UrlServer) -> None:
    result = await drain(url_input(server.url("v0.m3u8")))
    assert result.error is None
    assert result.info is not None and result.info.video is not None and result.info.audio is not None
    assert (result.info.video.width, result.info.video.height) == (160, 120)
    assert segments(server, "v0") == list(range(8))


async def test_the_master_playlists_highest_variant_is_read_and_the_others_dropped(server: UrlServer) -> None:
    result = await drain(url_input(server.url("master.m3u8")))
    assert result.error is None
    assert result.info is not None and result.info.video is not None and result.info.audio is not None
    assert (result.info.video.width, result.info.video.height) == (160, 120)  # v0: 382800 bit/s
    assert result.info.audio.sample_rate == 48000  # v0's own audio
    assert segments(server, "v0") == list(range(8))
    # FFmpeg reads the start of every variant to find its streams; once the others are
    # discarded it fetches none of their later segments.
    for other in ("v1", "v2"):
        fetched = segments(server, other)
        assert fetched and max(fetched) < 5, (other, fetched)


@dataclass
class LivePlaylist:
    """A live media playlist listing the first `count` of the live segments."""

    count: int
    ended: bool = False

    def text(self) -> str:
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:1", "#EXT-X-MEDIA-SEQUENCE:0"]
        for i in range(self.count):
            lines += [f"#EXTINF:{SEGMENT:.3f},", f"live_{i:03d}.ts"]
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


def serve_live(server: UrlServer, playlist: LivePlaylist) -> None:
    async def live(request: web.Request) -> web.StreamResponse:
        return web.Response(text=playlist.text(), content_type="application/vnd.apple.mpegurl")

    server.routes["live.m3u8"] = live


async def test_a_live_playlist_survives_a_missing_and_a_slow_segment_and_ends_with_endlist(
    server: UrlServer, hls: Path
) -> None:
    playlist = LivePlaylist(count=2)
    serve_live(server, playlist)

    async def missing(request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound()

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.4)
        return web.FileResponse(hls / "live_005.ts")

    server.routes["live_003.ts"] = missing
    server.routes["live_005.ts"] = slow

    async def publish() -> None:
        while playlist.count < 8:  # one segment per segment duration, as an encoder would
            await asyncio.sleep(SEGMENT)
            playlist.count += 1
        playlist.ended = True

    publisher = asyncio.create_task(publish())
    try:
        result = await drain(url_input(server.url("live.m3u8"), realtime=True, read_timeout=3), limit=15)
    finally:
        publisher.cancel()
    assert result.error is None
    assert segments(server, "live")[-1] == 7
    assert "live_003.ts" in server.paths() and "live_005.ts" in server.paths()
    # Seven of the eight segments were published in real time, the missing one is a gap; the slow
    # one made its first frames late (they are caught up, a few dropped).
    assert result.video >= 7 * SEGMENT * FPS * 0.85
    assert 3.0 < result.elapsed < 7.0


async def test_a_live_playlist_that_stops_updating_stalls_within_the_read_timeout(server: UrlServer) -> None:
    serve_live(server, LivePlaylist(count=3))
    # Never played: a live source is not held (the open timeout, 5 s, would show in `elapsed`).
    result = await drain(
        url_input(server.url("live.m3u8"), realtime=True, read_timeout=1.5), limit=15, play=False
    )
    assert isinstance(result.error, Stalled)
    assert result.error.message == "input stalled: no data for 1.5 s"
    # 1.5 s of media played in real time, then 1.5 s without data.
    assert result.video >= 3 * SEGMENT * FPS * 0.8
    assert 2.5 < result.elapsed < 4.5
    assert server.paths().count("live.m3u8") > 2  # FFmpeg kept reloading the playlist meanwhile


@pytest.fixture(scope="module")
def jumps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VOD playlist of four separately encoded segments with discontinuous timestamps."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is needed to make test media")
    root = tmp_path_factory.mktemp("jumps")
    offsets = {
        "a": "0",  # MPEG-TS starts at 1.4 s
        "b": "0",  # back to 1.4 s: a jump back smaller than the pacer's drift
        "c": "1000",  # 1000 s forward
        "d": "95442.9",  # across the 33-bit wrap of the 90 kHz clock (95443.7 s)
    }
    for name, offset in offsets.items():
        ffmpeg(
            *VIDEO, *AUDIO, "-t", "0.6", *H264, "-c:a", "aac", "-output_ts_offset", offset, "-f", "mpegts",
            str(root / f"{name}.ts"),
        )  # fmt: skip
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:1", "#EXT-X-PLAYLIST-TYPE:VOD"]
    for i, name in enumerate(offsets):
        lines += (["#EXT-X-DISCONTINUITY"] if i else []) + ["#EXTINF:0.600,", f"{name}.ts"]
    (root / "jumps.m3u8").write_text("\n".join([*lines, "#EXT-X-ENDLIST"]) + "\n")
    return root


async def test_real_time_pacing_neither_sleeps_nor_bursts_across_timestamp_jumps(jumps: Path) -> None:
    server, runner = await start_server(jumps)
    try:
        result = await drain(url_input(server.url("jumps.m3u8"), realtime=True), limit=15)
    finally:
        await runner.cleanup()
    assert result.error is None
    # 2.4 s of media take 2.4 s: no part skipped in a burst, no hang; no sleep across a jump
    # (the jump back alone would be a 0.6 s gap), with room for a loaded machine.
    assert 2.0 < result.elapsed < 4.0
    assert max(result.video_gaps) < 0.4
    # A burst would have dropped frames (the video queue keeps only the newest).
    assert result.video >= 4 * 9 - 2


async def test_an_audio_format_change_mid_stream_is_resampled(tmp_path: Path) -> None:
    # An ad at 44.1 kHz mono between two parts of a 48 kHz stereo programme.
    parts = {"programme.ts": ("48000", "2"), "ad.ts": ("44100", "1")}
    for name, (rate, channels) in parts.items():
        ffmpeg(
            *VIDEO, "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}", "-t", "0.6", *H264,
            "-c:a", "aac", "-ac", channels, str(tmp_path / name),
        )  # fmt: skip
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:1", "#EXT-X-PLAYLIST-TYPE:VOD"]
    for i, name in enumerate(["programme.ts", "ad.ts", "programme.ts"]):
        lines += (["#EXT-X-DISCONTINUITY"] if i else []) + ["#EXTINF:0.600,", name]
    (tmp_path / "ad.m3u8").write_text("\n".join([*lines, "#EXT-X-ENDLIST"]) + "\n")
    server, runner = await start_server(tmp_path)
    try:
        result = await drain(url_input(server.url("ad.m3u8"), realtime=True), limit=15)
    finally:
        await runner.cleanup()
    assert result.error is None
    assert result.info is not None and result.info.audio is not None
    assert (result.info.audio.sample_rate, result.info.audio.channels) == (48000, 2)
    # Audio throughout: 1.8 s (1.91 s of AAC frames: each part ends on a whole frame).
    assert 1.7 < result.audio_seconds < 2.0
    assert result.video >= 3 * 9 - 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def frames(
    start: float, end: float, video_fps: float = 30, audio_step: float = 0.02
) -> list[tuple[float, str]]:
    """Video and audio frame times over [start, end), in time order."""
    video = [(start + i / video_fps, "video") for i in range(round((end - start) * video_fps))]
    audio = [(start + i * audio_step, "audio") for i in range(round((end - start) / audio_step))]
    return sorted(video + audio)


@pytest.mark.parametrize(
    ("jump", "pause"),
    [
        (-0.6, 0.0),  # an encoder restart: back to 1.4 s
        (3600.0, 0.0),  # a new timeline far ahead
        (-95443.7, 0.0),  # the 90 kHz clock wrapping
        (0.6, 0.6),  # shorter than max_gap: a gap in the media, played as a pause
    ],
)
def test_the_pacer_plays_across_a_timestamp_jump_at_the_media_rate(jump: float, pause: float) -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock)
    released: list[tuple[float, str]] = []
    for t, kind in frames(1.4, 3.4) + frames(3.4 + jump, 4.4 + jump):
        clock.now += pacer.delay(t, kind)
        released.append((clock.now, kind))
    # 3 s of media take 3 s: no sleep across the jump, no burst to catch up after it.
    assert clock.now == pytest.approx(3.0 + pause, abs=0.05)
    video = [at for at, kind in released if kind == "video"]
    gaps = sorted(b - a for a, b in itertools.pairwise(video))
    assert gaps[0] > 0.02 and gaps[-2] < 0.05
    assert gaps[-1] == pytest.approx(pause + 1 / 30, abs=0.02) if pause else gaps[-1] < 0.05


def test_the_interleaver_puts_packets_in_time_order_with_each_stream_in_its_own() -> None:
    interleaver: Interleaver[tuple[float, str]] = Interleaver(["video", "audio"], horizon=1.0)
    items = frames(0.0, 2.0)
    # File order as an MPEG-TS muxer writes it: video 0.3 s ahead of the audio of the same time.
    file_order = sorted(items, key=lambda item: item[0] - (0.3 if item[1] == "video" else 0.0))
    out: list[tuple[float, str]] = []
    for item in file_order:
        out += interleaver.put(item, item[1], item[0])
    out += interleaver.flush()
    assert [t for t, _ in out] == [t for t, _ in items]
    assert sorted(out) == items


def test_the_interleaver_releases_packets_without_timestamps() -> None:
    # Packets without a timestamp do not move the input's position: only a count (512) bounds them.
    interleaver: Interleaver[int] = Interleaver(["video", "audio"])
    out: list[int] = []
    for i in range(2000):
        out += interleaver.put(i, "video", None)
        assert i + 1 - len(out) <= 513
    assert out + interleaver.flush() == list(range(2000))


def test_a_stream_starting_later_in_the_same_file_waits_for_its_time() -> None:
    # Audio from 0 s, video from 1.5 s, the video's packets written 1.5 s ahead of the audio's.
    items = [item for item in frames(0.0, 3.0) if item[1] == "audio" or item[0] >= 1.5]
    file_order = sorted(items, key=lambda item: item[0] - (1.5 if item[1] == "video" else 0.0))
    interleaver: Interleaver[tuple[float, str]] = Interleaver(["video", "audio"])
    clock = FakeClock()
    pacer = Pacer(clock=clock)
    shown: list[tuple[float, float]] = []  # (media time, clock) of each picture
    for item in file_order:
        for t, kind in interleaver.put(item, item[1], item[0]):
            clock.now += pacer.delay(t, kind)
            if kind == "video":
                shown.append((t, clock.now))
    # Each picture at its time, in sync with the sound: none moved to the start of the input.
    assert len(shown) == 45
    assert all(at == pytest.approx(t, abs=0.05) for t, at in shown), shown[:3]


def test_a_stream_on_another_timeline_is_aligned_to_the_input() -> None:
    # Video timestamps an hour away from the audio's: played together, not an hour apart.
    interleaver: Interleaver[tuple[float, str]] = Interleaver(["video", "audio"], horizon=1.0)
    out: list[tuple[float, str]] = []
    for t, kind in frames(0.0, 2.0):
        item = (t + 3600.0 if kind == "video" else t, kind)
        out += interleaver.put(item, kind, item[0])
    out += interleaver.flush()
    video = [t for t, kind in out if kind == "video"]
    assert len(video) == 60 and out.index((video[0], "video")) < 5


def test_the_interleaver_holds_no_more_than_its_horizon_when_a_stream_ends() -> None:
    interleaver: Interleaver[float] = Interleaver(["video", "audio"], horizon=1.0)
    out: list[float] = []
    for t, kind in frames(0.0, 1.0) + [(t, "video") for t in (1 + i / 30 for i in range(60))]:
        out += interleaver.put(t, kind, t)
        assert t - (out[-1] if out else 0.0) <= 1.0 + 1 / 30  # the audio ended at 1 s
    assert len(out) + len(interleaver.flush()) == len(frames(0.0, 1.0)) + 60
