"""Real media at both ends of a test: ffmpeg as the encoder, a `livekit` rtc participant as the
subscriber that decodes what arrives. Shared by the end-to-end tests and bench/.

Also the pieces bench/rtmp.py measures with: a pre-made FLV file pushed with `-c copy` (so the
encoder's CPU is not in the figures), and a wall-clock stamp drawn into the picture by a PyAV
source and read back from the decoded frame by the subscriber (glass-to-room latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import av
import numpy as np
from livekit import api, rtc

T = TypeVar("T")


def ffmpeg_push_args(
    url: str,
    seconds: float,
    size: str = "1920x1080",
    rate: int = 30,
    video: bool = True,
    audio: bool = True,
    video_codec: list[str] | None = None,
    extra_input: list[str] | None = None,
) -> list[str]:
    """ffmpeg publishing synthetic media in real time (-re) over RTMP: H.264 with a one-second
    GOP (as OBS's default keyframe interval keeps sessions starting fast) and AAC."""
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostats", "-re"]
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
    args += extra_input or []
    if video:
        args += video_codec or [
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
            "-pix_fmt", "yuv420p", "-g", str(rate), "-b:v", "3M",
        ]  # fmt: skip
    if audio:
        args += ["-c:a", "aac", "-b:a", "128k", "-ac", "2"]
    return [*args, "-f", "flv", url]


@dataclass(eq=False)
class Push:
    """A running ffmpeg push."""

    proc: asyncio.subprocess.Process
    started: float = field(default_factory=time.monotonic)

    async def wait(self, within: float = 120) -> tuple[int, str]:
        """Exit code and stderr once ffmpeg ends."""
        _, err = await asyncio.wait_for(self.proc.communicate(), within)
        return self.proc.returncode or 0, err.decode(errors="replace")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


RUNNING: set[Push] = set()  # every push started, for a test's teardown to stop


async def push(url: str, seconds: float = 10, **kwargs: object) -> Push:
    return await _spawn(ffmpeg_push_args(url, seconds, **kwargs))  # type: ignore[arg-type]


async def push_file(url: str, path: Path | str) -> Push:
    """Push a media file in real time without re-encoding it: ffmpeg's own CPU stays small
    (a demux and a mux), so a measurement of the receiving side is not shared with an encoder."""
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostats", "-re", "-i", str(path)]
    return await _spawn([*args, "-c", "copy", "-f", "flv", url])


async def _spawn(args: list[str]) -> Push:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    started = Push(proc)
    RUNNING.add(started)
    return started


def make_source_file(
    path: Path | str, seconds: float, size: str = "1920x1080", rate: int = 30, bitrate: str = "6M"
) -> Path:
    """Encode a camera-like FLV once (H.264 High with B-frames and a 2 s GOP, as OBS's x264
    defaults send, and 160 kbps AAC at 48 kHz), to be pushed later with `push_file`. Light
    temporal noise keeps the bitrate near `bitrate` (testsrc2 alone compresses to a fraction of
    it, which would make decoding it cheaper than a camera's picture)."""
    path = Path(path)
    video = f"testsrc2=size={size}:rate={rate}:duration={seconds},noise=alls=8:allf=t"
    args = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostats", "-y",
        "-f", "lavfi", "-i", video,
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-pix_fmt", "yuv420p",
        "-bf", "2", "-g", str(2 * rate), "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate,
        "-c:a", "aac", "-b:a", "160k", "-ac", "2", "-f", "flv", str(path),
    ]  # fmt: skip
    subprocess.run(args, check=True, stdin=subprocess.DEVNULL)
    return path


@dataclass
class Received:
    """What a subscriber got from one participant."""

    video_sizes: list[tuple[int, int]] = field(default_factory=list)
    audio_rates: list[tuple[int, int]] = field(default_factory=list)  # (sample rate, channels)
    video_track: rtc.RemoteVideoTrack | None = None
    audio_track: rtc.RemoteAudioTrack | None = None
    video_publication: rtc.RemoteTrackPublication | None = None


@dataclass
class Watched:
    """What a subscriber decoded of one participant from its arrival to its leaving."""

    video: list[tuple[float, int, int]] = field(default_factory=list)  # (arrival, width, height)
    audio: list[tuple[float, int, int]] = field(default_factory=list)  # (arrival, rate, channels)

    @property
    def sizes(self) -> set[tuple[int, int]]:
        return {(w, h) for _, w, h in self.video}

    @staticmethod
    def span(frames: list[tuple[float, int, int]]) -> float:
        """Seconds from the first frame to the last."""
        return frames[-1][0] - frames[0][0] if frames else 0.0


@dataclass(frozen=True)
class InboundVideo:
    """A subscriber's receive counters for one video stream (from WebRTC's inbound-rtp stats)."""

    frames_decoded: int
    frames_dropped: int
    width: int
    height: int
    freeze_count: int


class Subscriber:
    """A participant in a room that subscribes to one identity's tracks and decodes them."""

    def __init__(self, ws_url: str, key: str, secret: str, room: str, identity: str = "") -> None:
        self.ws_url, self.room_name = ws_url, room
        self.token = (
            api.AccessToken(key, secret)
            .with_identity(identity or f"sub-{time.monotonic_ns()}")
            .with_grants(api.VideoGrants(room_join=True, room=room, can_publish=False))
            .to_jwt()
        )
        self.room = rtc.Room()
        self.tracks: asyncio.Queue[tuple[rtc.Track, rtc.RemoteTrackPublication, str]] = asyncio.Queue()
        self._streams: list[rtc.VideoStream | rtc.AudioStream] = []

        self.left: asyncio.Queue[str] = asyncio.Queue()
        self.room.on("participant_disconnected", lambda who: self.left.put_nowait(who.identity))

        @self.room.on("track_subscribed")
        def _subscribed(
            track: rtc.Track, publication: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant
        ) -> None:
            self.tracks.put_nowait((track, publication, who.identity))

    async def __aenter__(self) -> Subscriber:
        await self.room.connect(self.ws_url, self.token)
        return self

    async def __aexit__(self, *_: object) -> None:
        for stream in self._streams:
            with contextlib.suppress(Exception):
                await stream.aclose()
        await self.room.disconnect()

    async def receive(
        self,
        identity: str,
        video_frames: int = 30,
        audio_frames: int = 50,
        within: float = 60,
        kinds: tuple[str, ...] = ("video", "audio"),
        quality: str = "VIDEO_QUALITY_HIGH",
        until_size: tuple[int, int] | None = None,
    ) -> Received:
        """Wait for `identity`'s tracks of these kinds, then decode the given number of frames;
        with `until_size`, video goes on (within `within`) until a frame of that size arrived:
        the SFU starts a subscriber on a low layer and moves up as its bandwidth estimate grows."""
        deadline = time.monotonic() + within
        got = await self.tracks_of(identity, within, kinds, quality)
        jobs = []
        if got.video_track is not None:
            jobs.append(self._video(got, video_frames, until_size))
        if got.audio_track is not None:
            jobs.append(self._audio(got, audio_frames))
        await asyncio.wait_for(asyncio.gather(*jobs), max(1.0, deadline - time.monotonic()))
        return got

    async def tracks_of(
        self,
        identity: str,
        within: float = 60,
        kinds: tuple[str, ...] = ("video", "audio"),
        quality: str = "VIDEO_QUALITY_HIGH",
    ) -> Received:
        """Wait for `identity`'s tracks of these kinds and ask for a video layer; decode nothing
        (for a caller that reads the frames itself, e.g. through `video_stream`)."""
        got = Received()
        deadline = time.monotonic() + within
        while ("video" in kinds and got.video_track is None) or (
            "audio" in kinds and got.audio_track is None
        ):
            track, publication, who = await asyncio.wait_for(self.tracks.get(), deadline - time.monotonic())
            if who != identity:
                continue
            if isinstance(track, rtc.RemoteVideoTrack):
                got.video_track, got.video_publication = track, publication
                if publication.simulcasted:
                    publication.set_video_quality(rtc.VideoQuality.Value(quality))
            elif isinstance(track, rtc.RemoteAudioTrack):
                got.audio_track = track
        return got

    async def watch(
        self, identity: str, kinds: tuple[str, ...] = ("video", "audio"), within: float = 60
    ) -> Watched:
        """Decode `identity`'s tracks (the highest video layer) from their arrival until it
        leaves the room, noting when each frame arrived. Each track is decoded from the moment
        it is subscribed, not once all have come: a late second track must not cut the first."""
        deadline = time.monotonic() + within
        out = Watched()
        recorders: list[asyncio.Task[None]] = []

        async def subscribe() -> None:
            while True:
                track, publication, who = await self.tracks.get()
                if who != identity:
                    continue
                if isinstance(track, rtc.RemoteVideoTrack) and "video" in kinds:
                    if publication.simulcasted:
                        publication.set_video_quality(rtc.VideoQuality.VIDEO_QUALITY_HIGH)
                    video = self.video_stream(track)
                    recorders.append(
                        asyncio.create_task(_record(video, out.video, lambda f: (f.width, f.height)))
                    )
                elif isinstance(track, rtc.RemoteAudioTrack) and "audio" in kinds:
                    audio = rtc.AudioStream(track, sample_rate=48000, num_channels=2)
                    self._streams.append(audio)
                    recorders.append(
                        asyncio.create_task(
                            _record(audio, out.audio, lambda f: (f.sample_rate, f.num_channels))
                        )
                    )

        subscriber = asyncio.create_task(subscribe())
        try:
            while await asyncio.wait_for(self.left.get(), deadline - time.monotonic()) != identity:
                pass
        finally:
            for task in [subscriber, *recorders]:
                task.cancel()
            await asyncio.gather(subscriber, *recorders, return_exceptions=True)
        return out

    def video_stream(self, track: rtc.RemoteVideoTrack) -> rtc.VideoStream:
        """An I420 stream of the track's frames, closed with the subscriber."""
        stream = rtc.VideoStream(track, format=rtc.VideoBufferType.I420)
        self._streams.append(stream)
        return stream

    async def inbound_video(self) -> list[InboundVideo]:
        """The WebRTC receive counters of every video stream this participant gets: the frames
        the native side decoded, without a `VideoStream` handing each frame to Python (which
        costs a copy and an event per frame; the decode happens in either case)."""
        stats = await self.room.get_rtc_stats()
        out = []
        # Both lists: with a single peer connection (the SDK's default against a recent server)
        # what this participant receives is reported under the publisher's transport.
        for entry in [*stats.subscriber_stats, *stats.publisher_stats]:
            if entry.WhichOneof("stats") != "inbound_rtp":
                continue
            rtp = entry.inbound_rtp
            if rtp.stream.kind != "video":
                continue
            out.append(
                InboundVideo(
                    frames_decoded=rtp.inbound.frames_decoded,
                    frames_dropped=rtp.inbound.frames_dropped,
                    width=rtp.inbound.frame_width,
                    height=rtp.inbound.frame_height,
                    freeze_count=rtp.inbound.freeze_count,
                )
            )
        return out

    async def _video(self, got: Received, frames: int, until_size: tuple[int, int] | None) -> None:
        assert got.video_track is not None
        stream = rtc.VideoStream(got.video_track)
        self._streams.append(stream)
        async for event in stream:
            got.video_sizes.append((event.frame.width, event.frame.height))
            enough = len(got.video_sizes) >= frames
            if enough and (until_size is None or until_size in got.video_sizes):
                return

    async def _audio(self, got: Received, frames: int) -> None:
        assert got.audio_track is not None
        stream = rtc.AudioStream(got.audio_track, sample_rate=48000, num_channels=2)
        self._streams.append(stream)
        async for event in _take(stream, frames):
            got.audio_rates.append((event.frame.sample_rate, event.frame.num_channels))


async def _record(
    stream: rtc.VideoStream | rtc.AudioStream,
    into: list[tuple[float, int, int]],
    what: Callable[[Any], tuple[int, int]],
) -> None:
    async for event in stream:
        into.append((time.monotonic(), *what(event.frame)))


async def _take(stream: AsyncIterator[T], n: int) -> AsyncIterator[T]:
    count = 0
    async for item in stream:
        yield item
        count += 1
        if count >= n:
            return


# --- a wall-clock stamp in the picture (glass-to-room latency) -----------------------------------

STAMP_MODULO = 1 << 24  # milliseconds: wraps every 4.7 hours, far longer than any reading
STAMP_BLOCKS = 32  # 24 bits of time, then 8 check bits
STAMP_STRIP = 1 / 8  # the strip's share of the picture's height, at the top
_BLACK, _WHITE, _GREY = 16, 235, 128  # limited-range luma


def stamp_now() -> int:
    return int(time.time() * 1000) % STAMP_MODULO


def stamp_age_ms(stamp: int, now: int | None = None) -> int:
    """Milliseconds from a stamp to `now` (default: this moment), across the wrap."""
    return ((stamp_now() if now is None else now) - stamp) % STAMP_MODULO


def _stamp_bits(value: int) -> list[int]:
    """24 value bits, most significant first, then the inverted XOR of its three bytes: an
    all-black or all-white strip (a frame before the first stamped one) never checks out."""
    check = ~((value >> 16) ^ (value >> 8) ^ value) & 0xFF
    word = (value << 8) | check
    return [(word >> (STAMP_BLOCKS - 1 - i)) & 1 for i in range(STAMP_BLOCKS)]


def draw_stamp(luma: np.ndarray, value: int) -> None:
    """Draw `value` into a luma plane (rows x columns, uint8) in place: 32 black/white blocks
    across the full width of the top eighth. Blocks are 40 px wide at 1280 (60 at 1920), so they
    still cover 10 px in a 320x180 layer."""
    height, width = luma.shape
    strip = max(1, round(height * STAMP_STRIP))
    for i, bit in enumerate(_stamp_bits(value % STAMP_MODULO)):
        luma[:strip, i * width // STAMP_BLOCKS : (i + 1) * width // STAMP_BLOCKS] = _WHITE if bit else _BLACK


def read_stamp(luma: np.ndarray) -> int | None:
    """The stamp in a decoded luma plane of any size (the strip scales with the picture), or
    None when the check bits disagree (no stamp, or one the codec smeared)."""
    height, width = luma.shape
    strip = max(1, round(height * STAMP_STRIP))
    rows = luma[strip // 4 : max(strip // 4 + 1, 3 * strip // 4)]
    bits = []
    for i in range(STAMP_BLOCKS):
        x0, x1 = i * width // STAMP_BLOCKS, (i + 1) * width // STAMP_BLOCKS
        # The block's middle half: its edges blur into the neighbours after scaling and coding.
        pad = (x1 - x0) // 4
        patch = rows[:, x0 + pad : max(x0 + pad + 1, x1 - pad)]
        bits.append(1 if float(patch.mean()) > _GREY else 0)
    word = 0
    for bit in bits:
        word = (word << 1) | bit
    value = word >> 8
    return value if _stamp_bits(value) == bits else None


def i420_luma(frame: rtc.VideoFrame) -> np.ndarray:
    """The Y plane of an rtc I420 frame as rows x columns (no copy)."""
    plane = frame.get_plane(0)
    assert plane is not None
    luma = np.frombuffer(plane, dtype=np.uint8)
    return luma.reshape(frame.height, len(luma) // frame.height)[:, : frame.width]


def push_stamped(
    url: str,
    seconds: float,
    size: tuple[int, int] = (1280, 720),
    rate: int = 30,
    realtime: bool = True,
    stop: threading.Event | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> int:
    """Publish a stamped picture to `url` (an RTMP URL, or a file path for an offline check) as
    FLV with PyAV: each frame carries the wall-clock time it was made, so a subscriber's clock
    minus the stamp it reads back is the glass-to-room latency. x264 ultrafast/zerolatency with
    no B-frames and a one-second GOP adds no frame of delay of its own; silent AAC rides along
    because real encoders send audio. Blocking (run it in a thread); returns frames sent."""
    width, height = size
    out = av.open(url, "w", format="flv")
    try:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.bit_rate = 3_000_000
        video.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(rate), "bf": "0"}
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        audio.bit_rate = 128_000
        picture = np.full((height * 3 // 2, width), _GREY, dtype=np.uint8)
        luma = picture[:height]
        silence = np.zeros((2, 1024), dtype=np.float32)
        bar = max(8, width // 40)
        started = time.monotonic()
        samples = 0
        frame_no = 0
        while frame_no < seconds * rate and not (stop and stop.is_set()):
            if realtime:
                delay = started + frame_no / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            # A moving bar under the strip: some motion for the encoder, as a camera gives it.
            luma[:] = _GREY
            x = (frame_no * 8) % (width - bar)
            luma[:, x : x + bar] = _WHITE
            value = stamp_now()
            draw_stamp(luma, value)
            vframe = av.VideoFrame.from_ndarray(picture, format="yuv420p")
            vframe.pts, vframe.time_base = frame_no, Fraction(1, rate)
            out.mux(video.encode(vframe))
            if on_frame:
                on_frame(value)
            frame_no += 1
            while samples < frame_no * 48000 / rate:
                aframe = av.AudioFrame.from_ndarray(silence, format="fltp", layout="stereo")
                aframe.sample_rate, aframe.pts, aframe.time_base = 48000, samples, Fraction(1, 48000)
                out.mux(audio.encode(aframe))
                samples += 1024
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    finally:
        out.close()
    return frame_no
