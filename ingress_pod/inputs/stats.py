"""Input measurements over a sliding window of media time, and real-time pacing.

Both work on media timestamps (seconds), not arrival times: the front door sends the latest
GOP in one burst when a session starts, and arrival-time windows would report that burst as
a bitrate spike.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

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


class Pacer:
    """Releases media no faster than its own timestamps: for inputs read faster than real
    time (files). A source that falls behind re-anchors rather than being caught up."""

    def __init__(self, max_drift: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_drift = max_drift
        self._clock = clock
        self._anchor: tuple[float, float] | None = None  # (media time, clock time)

    def delay(self, t: float) -> float:
        """Seconds to wait before releasing media time `t`."""
        now = self._clock()
        if self._anchor is not None:
            media0, wall0 = self._anchor
            wait = wall0 + (t - media0) - now
            if -self._max_drift <= wait <= self._max_drift:
                return max(wait, 0.0)
        self._anchor = (t, now)
        return 0.0


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
