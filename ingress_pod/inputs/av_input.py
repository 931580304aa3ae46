"""Reading one input with PyAV: demux and decode in a single worker thread.

The thread owns the container, the decoders and the audio resampler (PyAV objects are never
shared between threads). It hands decoded video frames and resampled audio frames (s16,
48 kHz) to the event loop through drop-oldest queues, and reports its outcome (end of input
or an InputError) once. Failures a user can cause (unreachable source, unsupported codec,
corrupt data, no media) become InputErrors with a message fit for the ingress status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import av
import av.error
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from ingress_pod import metrics
from ingress_pod.inputs.handoff import DropOldestQueue
from ingress_pod.inputs.stats import Pacer, RateWindow

log = logging.getLogger(__name__)

Kind = Literal["video", "audio"]
T = TypeVar("T")

OUTPUT_SAMPLE_RATE = 48000
# Newest frames kept for the loop: video keeps the latest frame only (a late frame is worth
# less than a fresh one); audio keeps ~0.2 s of AAC frames, the rest of its latency policy
# is the session's.
VIDEO_QUEUE = 1
AUDIO_QUEUE = 10
# A stream whose last packets all failed to produce a frame is undecodable; live streams
# recover from one bad packet well within this many.
MAX_PACKETS_WITHOUT_FRAME = 90

# Stream probing stops after this much media (µs): FFmpeg's default (5 s) holds a video-only
# or audio-only FLV for seconds waiting for the other stream; the front door sends both
# sequence headers first, so one second is plenty.
_OPEN_OPTIONS = {"analyzeduration": "1000000"}

# livekit/ingress reports GStreamer caps mapped to WebRTC names (pipeline.go getVideoState /
# getAudioState); codecs it has no mapping for keep a GStreamer-like name.
_MIME_TYPES = {
    "h264": "video/H264",
    "hevc": "video/H265",
    "vp8": "video/VP8",
    "vp9": "video/VP9",
    "av1": "video/AV1",
    "aac": "audio/aac",
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
}


def mime_type(kind: Kind, codec: str) -> str:
    """The mime type LiveKit reports in InputVideoState/InputAudioState for an FFmpeg codec."""
    return _MIME_TYPES.get(codec, f"{kind}/x-{codec}")


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


class InputError(Exception):
    """An input the session cannot use; the message is what the ingress status shows."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unreachable(InputError):
    """The source could not be opened or its connection was lost."""


class Unsupported(InputError):
    """The input carries a codec this ingress cannot take."""


class Corrupt(InputError):
    """The input is not readable media, or a stream of it does not decode."""


class NoMedia(InputError):
    """No audio or video arrived in time."""


class Stalled(InputError):
    """The input stopped sending data without ending."""


def no_media(timeout: float) -> NoMedia:
    """The error for an input that brought no stream within `timeout` seconds."""
    return NoMedia(f"no audio or video received within {timeout:g} s")


@dataclass(frozen=True)
class InputOptions:
    """What to read and how."""

    url: str
    format: str | None = None
    h264_only: bool = False  # RTMP input: LiveKit's RTMP ingress takes H.264 video only
    realtime: bool = False  # pace frames by their timestamps (files); live sources pace themselves
    audio_channels: int = 2  # of the resampled output
    open_timeout: float = 10.0
    read_timeout: float = 10.0


def redact(url: str) -> str:
    """`url` without credentials or query (either may hold a secret), for status and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) if parts.scheme else parts.path


def classify(err: av.error.FFmpegError, options: InputOptions, *, opened: bool) -> InputError:
    """The InputError for a PyAV failure while opening (`opened` False) or reading the input."""
    reason = err.strerror or type(err).__name__
    if isinstance(err, av.error.ExitError | av.error.TimeoutError):
        # PyAV's timeout interrupts the blocking read, which FFmpeg reports as an exit request.
        if opened:
            return Stalled(f"input stalled: no data for {options.read_timeout:g} s")
        return no_media(options.open_timeout)
    if isinstance(err, av.error.InvalidDataError | av.error.EOFError):
        what = f"{options.format.upper()} " if options.format and not opened else ""
        return Corrupt(f"corrupt input: not a readable {what}stream ({reason})")
    if isinstance(err, av.error.LookupError | av.error.PatchWelcomeError):
        return Unsupported(f"unsupported input: {reason}")
    if isinstance(err, av.error.HTTPError | av.error.HTTPClientError | OSError):
        if opened:
            return Unreachable(f"input connection lost: {reason}")
        return Unreachable(f"source unreachable: {reason} ({redact(options.url)})")
    return Corrupt(f"could not read input: {reason}")


def check_video_codec(codec: str, options: InputOptions) -> None:
    """Raise Unsupported for a video codec this input type does not take."""
    if options.h264_only and codec != "h264":
        raise Unsupported(f"unsupported video codec {codec}: RTMP input must be H.264")


class _DecodeWatch:
    """Counts a stream's packets since it last produced a frame, to tell a corrupt stream from
    a momentary decode error."""

    def __init__(self, kind: Kind, codec: str) -> None:
        self.kind = kind
        self.codec = codec
        self.without_frame = 0
        self.ever_decoded = False
        self.last_error: str | None = None

    def produced(self, frames: int) -> None:
        """Note what one packet decoded to; raise Corrupt once the stream looks undecodable."""
        if frames:
            self.without_frame = 0
            self.ever_decoded = True
            return
        self.without_frame += 1
        if self.without_frame >= MAX_PACKETS_WITHOUT_FRAME:
            raise self.corrupt()

    def corrupt(self) -> Corrupt:
        detail = f" ({self.last_error})" if self.last_error else ""
        return Corrupt(f"corrupt {self.kind} stream: could not decode {self.codec}{detail}")


class AvInput:
    """One input read by a worker thread; the event loop takes frames from `video` and
    `audio` and awaits `opened` (the streams found) and `ended` (None at end of input)."""

    def __init__(self, options: InputOptions, loop: asyncio.AbstractEventLoop) -> None:
        self.options = options
        self._loop = loop
        self.video: DropOldestQueue[VideoFrame] = DropOldestQueue(loop, VIDEO_QUEUE)
        self.audio: DropOldestQueue[AudioFrame] = DropOldestQueue(loop, AUDIO_QUEUE)
        self.video_rates = RateWindow()
        self.audio_rates = RateWindow()
        self.opened: asyncio.Future[InputInfo] = loop.create_future()
        self.ended: asyncio.Future[InputError | None] = loop.create_future()
        # Media time of the newest decoded audio: the session drops audio already stale against it.
        self.audio_time = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="av-input", daemon=True)

    def start(self) -> None:
        """Start reading in the worker thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop after its current packet (a blocked read ends at its timeout;
        the thread is a daemon, so it never holds the process)."""
        self._stop.set()

    def _run(self) -> None:
        outcome: InputError | None = None
        try:
            self._read()
        except InputError as err:
            outcome = err
        except Exception as err:  # a bug, not an input problem: keep the traceback
            log.exception("input thread failed")
            outcome = InputError(f"internal error reading input: {err}")
        _settle(self._loop, self.ended, outcome)

    def _read(self) -> None:
        opts = self.options
        try:
            container = av.open(
                opts.url,
                format=opts.format,
                options=_OPEN_OPTIONS,
                timeout=(opts.open_timeout, opts.read_timeout),
            )
        except av.error.FFmpegError as err:
            raise classify(err, opts, opened=False) from None
        try:
            video = container.streams.video[0] if container.streams.video else None
            audio = container.streams.audio[0] if container.streams.audio else None
            if video is None and audio is None:
                # Whatever FFmpeg made of these bytes (random data can pass as FLV data tags), it
                # is not media this ingress can use.
                raise Corrupt("corrupt input: no audio or video stream found")
            info = InputInfo(
                video=_video_info(video) if video else None, audio=_audio_info(audio) if audio else None
            )
            if video is not None:
                check_video_codec(video.codec_context.name, opts)
                # Frame threading holds one frame per thread (latency) and cost 0.118 against
                # 0.105 CPU-s/s single-threaded at 1080p30; slices cost neither.
                video.thread_type = "SLICE"
            _settle(self._loop, self.opened, info)
            self._demux(container, video, audio)
        except av.error.FFmpegError as err:
            raise classify(err, opts, opened=True) from None
        finally:
            container.close()

    def _demux(self, container: InputContainer, video: VideoStream | None, audio: AudioStream | None) -> None:
        opts = self.options
        watches: dict[int, _DecodeWatch] = {}
        if video is not None:
            watches[video.index] = _DecodeWatch("video", video.codec_context.name)
        if audio is not None:
            watches[audio.index] = _DecodeWatch("audio", audio.codec_context.name)
        resampler = av.AudioResampler(
            format="s16", layout="stereo" if opts.audio_channels == 2 else "mono", rate=OUTPUT_SAMPLE_RATE
        )
        pacer = Pacer() if opts.realtime else None
        decoded = {kind: metrics.FRAMES_DECODED.labels(kind) for kind in ("video", "audio")}
        late = {kind: metrics.FRAMES_DROPPED.labels(kind, "late") for kind in ("video", "audio")}
        for packet in container.demux([s for s in (video, audio) if s]):
            if self._stop.is_set():
                return
            kind: Kind = "video" if video is not None and packet.stream.index == video.index else "audio"
            if packet.dts is not None and packet.time_base is not None:
                rates = self.video_rates if kind == "video" else self.audio_rates
                rates.add(float(packet.dts * packet.time_base), packet.size)
            watch = watches[packet.stream.index]
            frames = _decode(packet, watch)
            # The empty packets at the end flush the decoders: count only what they yield.
            if packet.size or frames:
                watch.produced(len(frames))
            for frame in frames:
                wait = pacer.delay(frame.time) if pacer and frame.time is not None else 0.0
                if wait and self._stop.wait(wait):
                    return
                decoded[kind].inc()
                if isinstance(frame, VideoFrame):
                    if self.video.put(frame):
                        late[kind].inc()
                else:
                    if frame.time is not None:
                        self.audio_time = frame.time
                    for out in resampler.resample(frame):
                        if self.audio.put(out):
                            late[kind].inc()
        # A short input can end before the packet limit: one stream that never decoded is as
        # corrupt as a long one.
        for watch in watches.values():
            if watch.without_frame and not watch.ever_decoded:
                raise watch.corrupt()


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[T], value: T) -> None:
    """Resolve `future` from the worker thread (first outcome wins)."""

    def apply() -> None:
        if not future.done():
            future.set_result(value)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for it any more
        loop.call_soon_threadsafe(apply)


def _decode(packet: Packet[Any], watch: _DecodeWatch) -> list[VideoFrame | AudioFrame]:
    try:
        return [f for f in packet.decode() if isinstance(f, VideoFrame | AudioFrame)]
    except av.error.InvalidDataError as err:
        watch.last_error = err.strerror
        return []


def _video_info(stream: VideoStream) -> VideoInfo:
    ctx = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate
    return VideoInfo(
        codec=ctx.name, width=ctx.width, height=ctx.height, framerate=float(rate) if rate else 0.0
    )


def _audio_info(stream: AudioStream) -> AudioInfo:
    ctx = stream.codec_context
    return AudioInfo(codec=ctx.name, channels=ctx.channels, sample_rate=ctx.sample_rate)
