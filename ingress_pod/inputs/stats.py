"""Input measurements over a sliding window of media time, and real-time pacing.

Both work on media timestamps (seconds), not arrival times: the front door sends the latest
GOP in one burst when a session starts, and arrival-time windows would report that burst as
a bitrate spike.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# Media time that jumps back, or forward by more than a plausible gap, is a discontinuity (a
# new timeline, a loop): measurements start over rather than span it.
_MAX_GAP = 5.0


def _discontinuous(previous: float, t: float) -> bool:
    return t < previous - 1.0 or t > previous + _MAX_GAP


class RateWindow:
    """Packets of one stream over the last `span` seconds of media time: bit rate and packet
    rate (the frame rate, for video). Fed by the decode thread, read by the event loop."""

    def __init__(self, span: float = 5.0) -> None:
        self._span = span
        self._entries: deque[tuple[float, int]] = deque()
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, t: float, size: int) -> None:
        """Count a packet of `size` bytes at media time `t` (its decode timestamp)."""
        with self._lock:
            if self._entries and _discontinuous(self._entries[-1][0], t):
                self._entries.clear()
                self._bytes = 0
            self._entries.append((t, size))
            self._bytes += size
            while self._entries and self._entries[0][0] < t - self._span:
                self._bytes -= self._entries.popleft()[1]

    def rates(self) -> tuple[int, float]:
        """(bits per second, packets per second) over the window; zeros until two packets."""
        with self._lock:
            if len(self._entries) < 2:
                return 0, 0.0
            first_t, first_size = self._entries[0]
            duration = self._entries[-1][0] - first_t
            if duration <= 0:
                return 0, 0.0
            # n packets span n-1 intervals: leave the first packet's bytes out, so a window of
            # equal packets gives exactly size/interval.
            bits = (self._bytes - first_size) * 8
            return round(bits / duration), (len(self._entries) - 1) / duration


# A stream whose timestamps step back by more than this has jumped to another timeline; less is
# rounding (millisecond timestamps) or reordering jitter.
_JITTER = 0.05


@dataclass
class _Stream:
    """One stream as `Timelines` follows it."""

    last: float  # its previous timestamp
    step: float  # its usual step between frames, from the last regular one
    offset: float  # subtracted from its timestamps to put them on the shared timeline


class Timelines:
    """Puts the timestamps of several streams on one shared timeline that never jumps.

    A stream that steps back, or forward by more than `max_gap` to a time more than `tolerance`
    ahead of where the input is (`position`), has jumped to another timeline: an HLS
    discontinuity, an encoder restart, a timestamp wrap. It continues right after its previous
    frame instead; the other stream, jumping to the same timeline a moment later, takes the same
    offset, so the two stay in sync. A new stream near another one's timestamps shares its
    timeline (video starting 1.5 s after the audio waits those 1.5 s); one far from all of them
    (a different timeline) and more than `tolerance` off the position is aligned to it the same
    way as a jump. A gap in one stream that fits the position (an audio dropout) is kept.
    """

    def __init__(self, max_gap: float = 1.0, tolerance: float = 1.0) -> None:
        self._max_gap = max_gap
        self._tolerance = tolerance
        self._streams: dict[str, _Stream] = {}
        self._jump_offset: float | None = None  # the offset the latest jump gave its stream

    def shared(self, t: float, stream: str, position: float | None) -> float:
        """`stream`'s time `t` on the shared timeline; `position` is the shared time the input
        is at (None before anything was placed)."""
        timeline = self._streams.get(stream)
        if timeline is None:
            # Within a plausible gap of another stream's time (as RateWindow reckons one): the
            # same timeline, whatever the position.
            near = [other for other in self._streams.values() if abs(t - other.last) <= _MAX_GAP]
            if near:
                offset = min(near, key=lambda other: abs(t - other.last)).offset
            elif position is not None and abs(t - position) > self._tolerance:
                offset = t - position
            else:
                offset = 0.0
            self._streams[stream] = _Stream(t, 0.0, offset)
            return t - offset
        step = t - timeline.last
        ahead = t - timeline.offset - position if position is not None else 0.0
        if step < -_JITTER or (step > self._max_gap and ahead > self._tolerance):
            offset = timeline.offset + step - timeline.step
            # A stream's continuation is only as exact as its frame step: this close, it is the
            # timeline another stream jumped to, with the same offset.
            if self._jump_offset is not None and abs(offset - self._jump_offset) <= self._tolerance / 4:
                offset = self._jump_offset
            timeline.offset = self._jump_offset = offset
        elif step > 0:
            timeline.step = step
        timeline.last = t
        return t - timeline.offset


class Pacer:
    """Releases media no faster than its own timestamps: for every URL input, files (read
    faster than real time) and live sources alike (a live playlist's segments arrive whole).
    A source that falls behind re-anchors rather than being caught up. Each stream (`delay`'s
    `stream`) goes through `Timelines`, so a timestamp jump makes neither a sleep nor a burst
    of catching up."""

    def __init__(
        self, max_drift: float = 1.0, max_gap: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_drift = max_drift
        self._clock = clock
        self._timelines = Timelines(max_gap, tolerance=max_drift)
        self._anchor: tuple[float, float] | None = None  # (shared media time, clock time)

    def delay(self, t: float, stream: str = "") -> float:
        """Seconds to wait before releasing `stream`'s media time `t`."""
        now = self._clock()
        if self._anchor is None:
            self._anchor = (self._timelines.shared(t, stream, None), now)
            return 0.0
        media0, wall0 = self._anchor
        shared = self._timelines.shared(t, stream, media0 + now - wall0)
        wait = wall0 + shared - media0 - now
        if -self._max_drift <= wait <= self._max_drift:
            return max(wait, 0.0)
        self._anchor = (shared, now)
        return 0.0


class Interleaver(Generic[T]):
    """Reorders the packets of several streams by time (each stream's own order kept), for an
    input paced in real time from a single thread.

    Demuxers return packets in file order, and an MPEG-TS muxer puts one stream up to about a
    second ahead of the other: paced in that order, the thread waits for the leading stream's
    packets while the other's are due, then releases those in a burst. A packet leaves once
    every one of `streams` has one waiting (so nothing earlier can still come), when more than
    `horizon` seconds are waiting (a stream paused, ended or never started), or when a stream
    has more than `max_items` waiting (packets without timestamps do not move the position).
    """

    def __init__(
        self, streams: Iterable[str], horizon: float = 1.0, max_gap: float = 1.0, max_items: int = 512
    ) -> None:
        self._horizon = horizon
        self._max_items = max_items
        self._timelines = Timelines(max_gap, tolerance=max_gap)
        self._queues: dict[str, deque[tuple[float, T]]] = {stream: deque() for stream in streams}
        self._position: float | None = None  # the latest shared time put in

    def put(self, item: T, stream: str, t: float | None) -> list[T]:
        """Take `stream`'s item at media time `t` (None: no timestamp, it follows the stream's
        previous item); return the items that may leave now, in order."""
        queue = self._queues.setdefault(stream, deque())
        if t is None:
            shared = queue[-1][0] if queue else (self._position or 0.0)
        else:
            shared = self._timelines.shared(t, stream, self._position)
        self._position = shared if self._position is None else max(self._position, shared)
        queue.append((shared, item))
        out: list[T] = []
        while (
            all(self._queues.values())
            or self._waiting() > self._horizon
            or any(len(queue) > self._max_items for queue in self._queues.values())
        ):
            out.append(self._pop())
        return out

    def flush(self) -> list[T]:
        """Every item still waiting, in order (at the end of the input)."""
        out: list[T] = []
        while any(self._queues.values()):
            out.append(self._pop())
        return out

    def _waiting(self) -> float:
        heads = [queue[0][0] for queue in self._queues.values() if queue]
        return (self._position or 0.0) - min(heads) if heads else 0.0

    def _pop(self) -> T:
        queue = min((queue for queue in self._queues.values() if queue), key=lambda queue: queue[0][0])
        return queue.popleft()[1]


class FrameRateLimiter:
    """Passes frames at no more than `fps` by media time: a 60 fps source published at 30 keeps
    every other frame. A quarter interval of slack lets millisecond timestamps (33, 67, 100 ms
    at 30 fps) through."""

    def __init__(self, fps: float) -> None:
        self._interval = 1.0 / fps
        self._next: float | None = None

    def admit(self, t: float) -> bool:
        """Whether the frame at media time `t` is published."""
        slack = self._interval / 4
        if self._next is None or _discontinuous(self._next, t) or t >= self._next + self._interval:
            # First frame, a jump, or a source slower than the limit: restart the grid here.
            self._next = t
        elif t < self._next - slack:
            return False
        # Advance on the grid, not from `t`: the average rate stays exact.
        self._next += self._interval
        return True
