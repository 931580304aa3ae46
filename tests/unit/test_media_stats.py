"""Input measurements over media time, real-time pacing and the frame rate limit."""

from __future__ import annotations

import pytest

from ingress_pod.inputs.stats import FrameRateLimiter, Pacer, RateWindow


def test_rate_window_of_equal_packets_gives_size_over_interval() -> None:
    window = RateWindow(span=5.0)
    for i in range(31):  # one second at 30 packets/s, 1000 bytes each
        window.add(i / 30, 1000)
    bitrate, rate = window.rates()
    assert bitrate == 240_000
    assert rate == pytest.approx(30.0)


def test_rate_window_forgets_packets_older_than_its_span() -> None:
    window = RateWindow(span=2.0)
    for i in range(100):  # 10 s of 10 packets/s: 100 bytes, then 1000 bytes from 5 s on
        window.add(i / 10, 100 if i < 50 else 1000)
    bitrate, rate = window.rates()
    assert bitrate == 80_000
    assert rate == pytest.approx(10.0)


def test_rate_window_starts_over_after_a_timestamp_jump() -> None:
    window = RateWindow(span=5.0)
    for i in range(50):
        window.add(i / 10, 5000)
    for i in range(11):  # a new timeline, far back
        window.add(i / 10, 100)
    assert window.rates() == (8000, pytest.approx(10.0))


def test_rate_window_needs_two_packets() -> None:
    window = RateWindow()
    assert window.rates() == (0, 0.0)
    window.add(1.0, 500)
    assert window.rates() == (0, 0.0)


def test_rate_window_with_millisecond_timestamps_measures_30_fps() -> None:
    window = RateWindow(span=5.0)
    for i in range(300):  # FLV timestamps: 0, 33, 67, 100, ...
        window.add(round(i * 1000 / 30) / 1000, 1)
    assert window.rates()[1] == pytest.approx(30.0, abs=0.05)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pacer_holds_media_that_runs_ahead_of_the_clock() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock)
    assert pacer.delay(0.0) == 0.0
    assert pacer.delay(0.5) == pytest.approx(0.5)
    clock.now += 0.5
    assert pacer.delay(0.5) == pytest.approx(0.0)
    assert pacer.delay(0.54) == pytest.approx(0.04)


def test_pacer_never_makes_late_media_wait_or_catch_up() -> None:
    clock = FakeClock()
    pacer = Pacer(max_drift=1.0, clock=clock)
    pacer.delay(0.0)
    clock.now += 3.0  # the source stalled for 3 s: re-anchor rather than rush
    assert pacer.delay(1.0) == 0.0
    assert pacer.delay(1.2) == pytest.approx(0.2)


def test_pacer_reanchors_after_a_jump_forward() -> None:
    clock = FakeClock()
    pacer = Pacer(max_drift=1.0, clock=clock)
    pacer.delay(0.0)
    assert pacer.delay(60.0) == 0.0


def frames(fps: float, seconds: float, milliseconds: bool = True) -> list[float]:
    times = [i / fps for i in range(round(fps * seconds))]
    return [round(t * 1000) / 1000 for t in times] if milliseconds else times


@pytest.mark.parametrize(
    ("source_fps", "limit", "expected"),
    [
        (30, 30, 300),
        (29.97, 30, 300),
        (60, 30, 300),
        (50, 25, 250),
        (60, 25, 250),
        (24, 30, 240),
        (30, 25, 250),
    ],
)
def test_frame_rate_limiter_keeps_the_limit_over_ten_seconds(
    source_fps: float, limit: float, expected: int
) -> None:
    limiter = FrameRateLimiter(limit)
    assert sum(limiter.admit(t) for t in frames(source_fps, 10)) == expected


def test_frame_rate_limiter_restarts_after_the_timeline_jumps_back() -> None:
    limiter = FrameRateLimiter(30)
    for t in frames(30, 2):
        limiter.admit(t)
    assert limiter.admit(0.0)
    assert not limiter.admit(0.01)
    assert limiter.admit(1 / 30)
