"""Real media at both ends of a test: ffmpeg as the encoder, a `livekit` rtc participant as the
subscriber that decodes what arrives. Shared by the end-to-end tests and bench/."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from livekit import api, rtc


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


@dataclass
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


async def push(url: str, seconds: float = 10, **kwargs: object) -> Push:
    proc = await asyncio.create_subprocess_exec(
        *ffmpeg_push_args(url, seconds, **kwargs),  # type: ignore[arg-type]
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return Push(proc)


@dataclass
class Received:
    """What a subscriber got from one participant."""

    video_sizes: list[tuple[int, int]] = field(default_factory=list)
    audio_rates: list[tuple[int, int]] = field(default_factory=list)  # (sample rate, channels)
    video_track: rtc.RemoteVideoTrack | None = None
    audio_track: rtc.RemoteAudioTrack | None = None
    video_publication: rtc.RemoteTrackPublication | None = None


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
    ) -> Received:
        """Wait for `identity`'s tracks of these kinds, then decode the given number of frames."""
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
                publication.set_video_quality(rtc.VideoQuality.Value(quality))
            elif isinstance(track, rtc.RemoteAudioTrack):
                got.audio_track = track
        jobs = []
        if got.video_track is not None:
            jobs.append(self._video(got, video_frames))
        if got.audio_track is not None:
            jobs.append(self._audio(got, audio_frames))
        await asyncio.wait_for(asyncio.gather(*jobs), max(1.0, deadline - time.monotonic()))
        return got

    async def _video(self, got: Received, frames: int) -> None:
        assert got.video_track is not None
        stream = rtc.VideoStream(got.video_track)
        self._streams.append(stream)
        async for event in _take(stream, frames):
            got.video_sizes.append((event.frame.width, event.frame.height))

    async def _audio(self, got: Received, frames: int) -> None:
        assert got.audio_track is not None
        stream = rtc.AudioStream(got.audio_track, sample_rate=48000, num_channels=2)
        self._streams.append(stream)
        async for event in _take(stream, frames):
            got.audio_rates.append((event.frame.sample_rate, event.frame.num_channels))


async def _take(stream: AsyncIterator[object], n: int) -> AsyncIterator[object]:
    count = 0
    async for item in stream:
        yield item
        count += 1
        if count >= n:
            return
