"""Reading one input with PyAV: demux and decode in a single worker thread.

The thread owns the container, the decoders and the audio resampler (PyAV objects are never
shared between threads). It hands decoded video frames and resampled audio frames (s16,
48 kHz) to the event loop through drop-oldest queues, and reports its outcome (end of input
or an InputError) once. Failures a user can cause (unreachable source, unsupported codec,
corrupt data, no media) become InputErrors with a message fit for the ingress status.

This is the one place inputs are opened: FFmpeg reads files, HTTP(S) and HLS itself (with the
options of `urls`), SRT arrives through `srt.SrtSource`. Real-time inputs (URL ingresses) are
decoded in time order across streams and paced at their media clock (`stats`); one of known
length holds its first frame until the session is in the room (`play`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import av
import av.error
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.packet import Packet
from av.stream import Discard, Disposition, Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from ingress_pod import metrics
from ingress_pod.inputs import urls
from ingress_pod.inputs.base import VIDEO_QUEUE, AudioInfo, InputInfo, MediaInput, Resampler, VideoInfo
from ingress_pod.inputs.codecs import CodecPolicy, Kind
from ingress_pod.inputs.errors import Corrupt, InputError, Unreachable, Unsupported, no_media, stalled
from ingress_pod.inputs.srt import SrtSource
from ingress_pod.inputs.stats import Interleaver, Pacer

log = logging.getLogger(__name__)

T = TypeVar("T")

# A stream whose last packets all failed to produce a frame is undecodable; live streams
# recover from one bad packet well within this many.
MAX_PACKETS_WITHOUT_FRAME = 90

# Stream probing stops after this much media (µs): FFmpeg's default (5 s) holds a video-only
# or audio-only FLV for seconds waiting for the other stream; the front door sends both
# sequence headers first, so one second is plenty.
_OPEN_OPTIONS = {"analyzeduration": "1000000"}
# A live sender delivers FFmpeg's frame-rate probe (about 20 frames) in real time: 0.73 s of a
# 0.9 s SRT open. H.264/HEVC in MPEG-TS carry their rate in the stream (still found without it).
_SRT_OPTIONS = {"fpsprobesize": "0"}
# Seconds allowed for finding out why a connection failed (see urls.diagnose).
_DIAGNOSE_TIMEOUT = 5.0

# Streams that are pictures, not a video track: cover art of MP3, M4A and FLAC files.
_PICTURES = Disposition.attached_pic | Disposition.timed_thumbnails


@dataclass(frozen=True)
class InputOptions:
    """What to read and how."""

    url: str
    format: str | None = None
    codecs: CodecPolicy | None = None  # the codecs this input type takes (codecs.RTMP, codecs.URL); None: any
    # Pace frames at their media clock (URL inputs: files, HLS and SRT); RTMP arrives in real
    # time and is handed on as it comes.
    realtime: bool = False
    audio_channels: int = 2  # of the resampled output
    open_timeout: float = 10.0
    read_timeout: float = 10.0


def redact(url: str) -> str:
    """`url` without credentials or query (either may hold a secret), for status and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if port:
        host = f"{host}:{port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) if parts.scheme else parts.path


# FFmpeg's HTTP errors, as the status names them. It keeps the code of 400, 401, 403 and 404
# only: other codes arrive as "some 4xx" or "some 5xx".
_HTTP_STATUS: list[tuple[type[av.error.FFmpegError], str]] = [
    (av.error.HTTPBadRequestError, "HTTP 400 Bad Request"),
    (av.error.HTTPUnauthorizedError, "HTTP 401 Unauthorized"),
    (av.error.HTTPForbiddenError, "HTTP 403 Forbidden"),
    (av.error.HTTPNotFoundError, "HTTP 404 Not Found"),
    (av.error.HTTPClientError, "HTTP 4xx client error"),
    (av.error.HTTPServerError, "HTTP 5xx server error"),
]


def classify(err: av.error.FFmpegError, options: InputOptions, *, opened: bool) -> InputError:
    """The InputError for a PyAV failure while opening (`opened` False) or reading the input."""
    reason = err.strerror or type(err).__name__
    if isinstance(err, av.error.ExitError | av.error.TimeoutError):
        # PyAV's timeout interrupts the blocking read, which FFmpeg reports as an exit request.
        return stalled(options.read_timeout) if opened else no_media(options.open_timeout)
    if isinstance(err, av.error.InvalidDataError | av.error.EOFError):
        if opened:
            return Corrupt(f"corrupt input: not a readable stream ({reason})")
        if options.format:
            return Corrupt(f"corrupt input: not a readable {options.format.upper()} stream ({reason})")
        # Nothing FFmpeg knows: an HTML error page, a JSON answer, an empty body.
        return Corrupt(f"corrupt input: not a media file ({redact(options.url)})")
    if isinstance(err, av.error.LookupError | av.error.PatchWelcomeError):
        return Unsupported(f"unsupported input: {reason}")
    if isinstance(err, av.error.HTTPError | av.error.HTTPClientError | OSError):
        reason = next((status for kind, status in _HTTP_STATUS if isinstance(err, kind)), reason)
        if opened:
            return Unreachable(f"input connection lost: {reason}")
        return Unreachable(f"source unreachable: {reason} ({redact(options.url)})")
    return Corrupt(f"could not read input: {reason}")


def pick_streams(container: InputContainer) -> tuple[VideoStream | None, AudioStream | None]:
    """The video and audio stream to read: the first of each, except in HLS and DASH, where the
    video of the variant with the highest bandwidth wins, with that variant's own audio."""
    videos = [s for s in container.streams.video if not s.disposition & _PICTURES]
    # max() keeps the first of equals: without variants, the first stream.
    video = max(videos, key=_variant_bitrate, default=None)

    def audio_rank(stream: AudioStream) -> tuple[bool, int]:
        # An HLS variant's own audio is muxed in its playlist: FFmpeg gives its streams the
        # playlist's index as id. (Elsewhere ids are track numbers or PIDs: not comparable.)
        same_variant = video is not None and _variant_bitrate(video) > 0 and stream.id == video.id
        return same_variant, _variant_bitrate(stream)

    audio = max(container.streams.audio, key=audio_rank, default=None)
    return video, audio


def _variant_bitrate(stream: Stream) -> int:
    """The bandwidth of the HLS/DASH variant `stream` belongs to; 0 outside variants."""
    try:
        return int(stream.metadata.get("variant_bitrate", 0))
    except ValueError:
        return 0


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


class AvInput(MediaInput[VideoFrame]):
    """One input read by a worker thread (PyAV): RTMP's FLV from the front door, or a URL."""

    def __init__(self, options: InputOptions, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, VIDEO_QUEUE)
        self.options = options
        self._stop = threading.Event()
        self._playing = threading.Event()
        self._srt: SrtSource | None = None
        self._thread = threading.Thread(target=self._run, name="av-input", daemon=True)

    def start(self) -> None:
        """Start reading in the worker thread."""
        self._thread.start()

    def play(self) -> None:
        """Let a held input start (the session is in the room, about to publish): a paced input of
        known length holds its first frame until then, at most `open_timeout`."""
        self._playing.set()

    def stop(self) -> None:
        """Ask the thread to stop after its current packet (a blocked read ends at its timeout,
        an SRT source at once; the thread is a daemon, so it never holds the process)."""
        self._stop.set()
        self._playing.set()  # a held thread sees the stop at once
        if self._srt is not None:
            self._srt.stop()

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
        if urllib.parse.urlsplit(opts.url).scheme.lower() == "srt":
            srt = SrtSource(opts.url, opts.open_timeout, opts.read_timeout)
            self._srt = srt
            try:
                if not self._stop.is_set():  # stopped before the source existed: never start it
                    srt.start()
                    self._read_from(srt, "mpegts", srt)
            finally:
                srt.close()
        else:
            self._read_from(opts.url, opts.format, None)

    def _read_from(self, target: str | SrtSource, demuxer: str | None, srt: SrtSource | None) -> None:
        """Open `target` (a URL, or the SRT source to read as a file) and read it to its end."""
        opts = self.options
        try:
            container = av.open(
                target,
                "r",
                format=demuxer,
                options={
                    **_OPEN_OPTIONS,
                    **(_SRT_OPTIONS if srt else {}),
                    **urls.protocol_options(opts.url),
                },
                timeout=(opts.open_timeout, opts.read_timeout),
            )
        except av.error.FFmpegError as err:
            if self._stop.is_set():  # stopped while opening: nothing to report
                return
            # The SRT source knows better why its stream ended than FFmpeg's "invalid data".
            raise (srt and srt.error) or self._open_failed(err) from None
        try:
            video, audio = pick_streams(container)
            if video is None and audio is None:
                # Whatever FFmpeg made of these bytes (random data can pass as FLV data tags), it
                # is not media this ingress can use.
                raise Corrupt("corrupt input: no audio or video stream found")
            # Unread streams are discarded: FFmpeg's HLS demuxer then stops fetching the other
            # variants' segments.
            for stream in container.streams:
                if stream not in (video, audio):
                    stream.discard = Discard.all
            info = InputInfo(
                video=_video_info(video) if video else None, audio=_audio_info(audio) if audio else None
            )
            if opts.codecs is not None:
                if info.video is not None:
                    opts.codecs.check("video", info.video.codec)
                if info.audio is not None:
                    opts.codecs.check("audio", info.audio.codec)
            if video is not None:
                # Frame threading holds one frame per thread (latency) and cost 0.118 against
                # 0.105 CPU-s/s single-threaded at 1080p30; slices cost neither.
                video.thread_type = "SLICE"
            _settle(self._loop, self.opened, info)
            self._demux(container, video, audio)
            if srt is not None and srt.error is not None:
                raise srt.error
        except av.error.FFmpegError as err:
            raise (srt and srt.error) or classify(err, opts, opened=True) from None
        finally:
            container.close()

    def _open_failed(self, err: av.error.FFmpegError) -> InputError:
        opts = self.options
        # FFmpeg says "Input/output error" for an unknown host and for TLS failures alike.
        if (
            isinstance(err, av.error.OSError)
            and err.errno == errno.EIO
            and (reason := urls.diagnose(opts.url, min(opts.open_timeout, _DIAGNOSE_TIMEOUT)))
        ):
            return Unreachable(f"source unreachable: {reason} ({redact(opts.url)})")
        return classify(err, opts, opened=False)

    def _demux(self, container: InputContainer, video: VideoStream | None, audio: AudioStream | None) -> None:
        opts = self.options
        read: list[tuple[Kind, VideoStream | AudioStream]] = []
        if video is not None:
            read.append(("video", video))
        if audio is not None:
            read.append(("audio", audio))
        kinds: dict[int, Kind] = {stream.index: kind for kind, stream in read}
        watches = {stream.index: _DecodeWatch(kind, _codec(stream)) for kind, stream in read}
        resampler = Resampler(opts.audio_channels)
        pacer = Pacer() if opts.realtime else None
        # Paced from the open, a file would play its first frames before the session is in the room
        # (the video queue keeps the newest frame, stale audio is dropped). A live source (no
        # duration: SRT, a live playlist) is not held: the wait would stay in its latency.
        hold = pacer is not None and container.duration is not None
        decoded = {kind: metrics.FRAMES_DECODED.labels(kind) for kind in ("video", "audio")}
        late = {kind: metrics.FRAMES_DROPPED.labels(kind, "late") for kind in ("video", "audio")}

        packets = _timed(container.demux([stream for _, stream in read]), opts.read_timeout)
        if pacer is not None:
            packets = _interleaved(packets, list(kinds.values()), lambda packet: kinds[packet.stream.index])
        for packet in packets:
            if self._stop.is_set():
                return
            kind = kinds[packet.stream.index]
            if (dts := _dts(packet)) is not None:
                rates = self.video_rates if kind == "video" else self.audio_rates
                rates.add(dts, packet.size)
            watch = watches[packet.stream.index]
            frames = _decode(packet, watch)
            # The empty packets at the end flush the decoders: count only what they yield.
            if packet.size or frames:
                watch.produced(len(frames))
            for frame in frames:
                if hold:
                    hold = False
                    self._playing.wait(opts.open_timeout)
                    if self._stop.is_set():
                        return
                wait = pacer.delay(frame.time, kind) if pacer and frame.time is not None else 0.0
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


def _timed(packets: Iterator[Packet[Any]], read_timeout: float) -> Iterator[Packet[Any]]:
    """`packets`, raising Stalled when one took `read_timeout` to come: PyAV's read timeout
    fired. Most demuxers then fail (ExitError), but HLS takes it for the end of a live playlist
    that stopped updating and ends the input as if it were complete."""
    while True:
        started = time.monotonic()
        packet = next(packets, None)
        if time.monotonic() - started >= read_timeout:
            raise stalled(read_timeout)
        if packet is None:
            return
        yield packet


def _interleaved(
    packets: Iterator[Packet[Any]], kinds: list[Kind], kind_of: Callable[[Packet[Any]], Kind]
) -> Iterator[Packet[Any]]:
    """`packets` (of the streams `kinds`) in time order across the streams (see
    stats.Interleaver): a paced input is decoded and released in that order."""
    interleaver: Interleaver[Packet[Any]] = Interleaver(kinds)
    for packet in packets:
        yield from interleaver.put(packet, kind_of(packet), _dts(packet))
    yield from interleaver.flush()


def _dts(packet: Packet[Any]) -> float | None:
    """A packet's decode time in seconds, if it has one."""
    if packet.dts is None or packet.time_base is None:
        return None
    return float(packet.dts * packet.time_base)


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


def _codec(stream: VideoStream | AudioStream) -> str:
    """The stream's codec by FFmpeg's canonical name ("av1", "mp3"), not its decoder's
    ("libdav1d", "mp3float")."""
    return str(stream.codec_context.codec.canonical_name)


def _video_info(stream: VideoStream) -> VideoInfo:
    ctx = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate
    return VideoInfo(
        codec=_codec(stream), width=ctx.width, height=ctx.height, framerate=float(rate) if rate else 0.0
    )


def _audio_info(stream: AudioStream) -> AudioInfo:
    ctx = stream.codec_context
    return AudioInfo(codec=_codec(stream), channels=ctx.channels, sample_rate=ctx.sample_rate)
