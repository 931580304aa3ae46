"""What every input offers the session: queues of decoded (or, for WHIP pass-through, encoded)
frames it fills, the rates of what arrives, the streams it found, and how it ended; and what
inputs share: the audio resampler to the published format.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Generic, TypeVar

import av
from av.audio.frame import AudioFrame

from ingress_pod.inputs.codecs import mime_type
from ingress_pod.inputs.errors import InputError, no_media
from ingress_pod.inputs.handoff import DropOldestQueue
from ingress_pod.inputs.stats import RateWindow

V = TypeVar("V")

OUTPUT_SAMPLE_RATE = 48000
# Newest frames kept for the loop: video keeps the latest frame only (a late frame is worth
# less than a fresh one); audio keeps ~0.2 s of AAC frames, the rest of its latency policy
# is the session's.
VIDEO_QUEUE = 1
AUDIO_QUEUE = 10


@dataclass(frozen=True)
class VideoInfo:
    """The input's video stream as FFmpeg found it."""

    codec: str
    width: int
    height: int
    framerate: float  # nominal, from the container; 0 when unknown

    @property
    def mime_type(self) -> str:
        return mime_type("video", self.codec)


@dataclass(frozen=True)
class AudioInfo:
    """The input's audio stream as FFmpeg found it."""

    codec: str
    channels: int
    sample_rate: int

    @property
    def mime_type(self) -> str:
        return mime_type("audio", self.codec)


@dataclass(frozen=True)
class InputInfo:
    """The streams found in the input (at most one of each kind is used)."""

    video: VideoInfo | None
    audio: AudioInfo | None


class Resampler:
    """Converts decoded audio to the published format (s16, 48 kHz, `channels`). PyAV's
    resampler takes the format of its first frame only and refuses others: it is rebuilt when
    the input's changes mid-stream (an HLS discontinuity into an ad at 44.1 kHz mono)."""

    def __init__(self, channels: int) -> None:
        self._layout = "stereo" if channels == 2 else "mono"
        self._input: tuple[str, str, int] | None = None
        self._resampler: av.AudioResampler | None = None

    def resample(self, frame: AudioFrame) -> list[AudioFrame]:
        """The output frames `frame` completes (the resampler keeps a few samples back)."""
        out: list[AudioFrame | None] = []
        source = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._resampler is None or source != self._input:
            if self._resampler is not None:
                out += self._resampler.resample(None)  # what the previous format left inside
            self._resampler = av.AudioResampler(format="s16", layout=self._layout, rate=OUTPUT_SAMPLE_RATE)
            self._input = source
        out += self._resampler.resample(frame)
        # A resampler with nothing to convert passes frames through, and flushes as [None].
        return [each for each in out if each is not None]


class MediaInput(Generic[V]):
    """An input as the session sees it: the loop takes frames from `video` and `audio` and
    awaits `opened` (the streams found) and `ended` (None at the end of the input, else why it
    failed)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, video_queue: int) -> None:
        self._loop = loop
        self.video: DropOldestQueue[V] = DropOldestQueue(loop, video_queue)
        self.audio: DropOldestQueue[AudioFrame] = DropOldestQueue(loop, AUDIO_QUEUE)
        self.video_rates = RateWindow()
        self.audio_rates = RateWindow()
        self.opened: asyncio.Future[InputInfo] = loop.create_future()
        self.ended: asyncio.Future[InputError | None] = loop.create_future()
        # Media time of the newest decoded audio: the session drops audio already stale against it.
        self.audio_time = 0.0

    def start(self) -> None:
        """Start reading."""
        raise NotImplementedError

    def no_media(self, timeout: float) -> InputError:
        """The error for an input that brought no stream within `timeout` seconds."""
        return no_media(timeout)

    def info(self) -> InputInfo:
        """The streams as they are now (once `opened`): a live input may change its picture size."""
        return self.opened.result()

    def play(self) -> None:
        """The session is in the room, about to publish: a held input may start (a live one
        is never held)."""

    def stop(self) -> None:
        """Stop reading: the session is over."""
        raise NotImplementedError
