"""The IngressState document the media pod writes, and when it writes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingress_operator.models import IngressState, IngressStatus, InputAudioState, InputVideoState, TrackInfo
from ingress_pod.inputs.base import AudioInfo, InputInfo, VideoInfo
from ingress_pod.state import StateReporter, input_states, inputs_changed, patch_ops

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
INFO = InputInfo(VideoInfo("h264", 1920, 1080, 30.0), AudioInfo("aac", 2, 44100))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class Writer:
    """Records patches; answers None (a failed `test`) once `current` is another session."""

    def __init__(self, current: str = "RT_1") -> None:
        self.current = current
        self.patches: list[list[dict[str, Any]]] = []

    async def json_patch_status(self, name: str, ops: list[dict[str, Any]]) -> dict[str, Any] | None:
        assert name == "ing"
        if ops[0]["value"] != self.current:
            return None
        self.patches.append(ops)
        return {}

    @property
    def states(self) -> list[dict[str, Any]]:
        return [ops[1]["value"] for ops in self.patches]


def test_patch_tests_the_session_then_adds_the_state() -> None:
    state = IngressState(status=IngressStatus.ENDPOINT_PUBLISHING, started_at=T0, resource_id="RT_1")
    assert patch_ops("RT_1", state) == [
        {"op": "test", "path": "/status/session/resourceId", "value": "RT_1"},
        {
            "op": "add",
            "path": "/status/state",
            "value": {
                "status": "ENDPOINT_PUBLISHING",
                "startedAt": "2026-01-02T03:04:05Z",
                "resourceId": "RT_1",
                "tracks": [],
            },
        },
    ]


def test_input_states_use_measured_rates_and_livekit_mime_types() -> None:
    video, audio = input_states(INFO, (4_500_000, 29.971), (128_000, 43.1))
    assert video == InputVideoState(
        mime_type="video/H264", average_bitrate=4_500_000, width=1920, height=1080, framerate=29.97
    )
    assert audio == InputAudioState(
        mime_type="audio/aac", average_bitrate=128_000, channels=2, sample_rate=44100
    )


def test_input_states_fall_back_to_the_nominal_frame_rate_and_skip_missing_streams() -> None:
    video, audio = input_states(InputInfo(VideoInfo("h264", 640, 360, 25.0), None), (0, 0.0), (0, 0.0))
    assert video is not None and video.framerate == 25.0 and video.average_bitrate == 0
    assert audio is None


@pytest.mark.parametrize(
    ("video_rates", "audio_rates", "changed"),
    [
        ((4_500_000, 30.0), (128_000, 43.0), False),
        ((4_900_000, 30.2), (135_000, 43.0), False),  # within 10 % and half a frame per second
        ((5_000_000, 30.0), (128_000, 43.0), True),
        ((4_500_000, 25.0), (128_000, 43.0), True),
        ((4_500_000, 30.0), (150_000, 43.0), True),
    ],
)
def test_input_stats_are_rewritten_only_on_a_real_change(
    video_rates: tuple[int, float], audio_rates: tuple[int, float], changed: bool
) -> None:
    old = input_states(INFO, (4_500_000, 30.0), (128_000, 43.0))
    assert inputs_changed(old, input_states(INFO, video_rates, audio_rates)) is changed


def test_a_stream_appearing_or_a_size_change_is_a_change() -> None:
    old = input_states(INFO, (4_500_000, 30.0), (128_000, 43.0))
    assert inputs_changed((old[0], None), old)
    resized = input_states(
        InputInfo(VideoInfo("h264", 1280, 720, 30.0), INFO.audio), (4_500_000, 30.0), (128_000, 43.0)
    )
    assert inputs_changed(old, resized)


async def test_reporter_keeps_the_front_doors_start_and_writes_the_session_lifecycle() -> None:
    writer, clock = Writer(), Clock()
    front_door = IngressState(status=IngressStatus.ENDPOINT_BUFFERING, started_at=T0, resource_id="RT_1")
    reporter = StateReporter(writer, "ing", "RT_1", front_door, clock=clock)
    video, audio = input_states(INFO, (0, 0.0), (0, 0.0))
    track = TrackInfo(
        sid="TR_1", type="VIDEO", name="cam", source="CAMERA", mime_type="video/H264", width=1280
    )

    assert await reporter.buffering(video, audio)
    assert await reporter.publishing("RM_1", [track])
    assert await reporter.inputs(video, audio)  # unchanged: no write
    assert await reporter.ended(IngressStatus.ENDPOINT_INACTIVE)

    buffering, publishing, ended = writer.states
    assert buffering["status"] == "ENDPOINT_BUFFERING" and buffering["video"]["mimeType"] == "video/H264"
    assert publishing["status"] == "ENDPOINT_PUBLISHING"
    assert publishing["roomId"] == "RM_1" and publishing["tracks"][0]["sid"] == "TR_1"
    assert ended["status"] == "ENDPOINT_INACTIVE" and ended["tracks"] == [] and ended["roomId"] == "RM_1"
    assert {s["startedAt"] for s in writer.states} == {"2026-01-02T03:04:05Z"}
    assert ended["endedAt"] and ended["updatedAt"] > publishing["updatedAt"]
    assert "error" not in ended


async def test_reporter_of_a_new_session_starts_its_own_clock() -> None:
    writer = Writer("RT_2")
    old = IngressState(
        status=IngressStatus.ENDPOINT_INACTIVE, started_at=T0 - timedelta(days=1), resource_id="RT_1"
    )
    reporter = StateReporter(writer, "ing", "RT_2", old, clock=Clock())
    assert await reporter.ended(IngressStatus.ENDPOINT_ERROR, "corrupt input")
    assert writer.states[0]["startedAt"] == "2026-01-02T03:04:06Z"
    assert writer.states[0]["error"] == "corrupt input"


async def test_reporter_says_so_when_another_session_took_over() -> None:
    writer = Writer("RT_other")
    reporter = StateReporter(writer, "ing", "RT_1", None, clock=Clock())
    assert not await reporter.publishing("RM_1", [])
    assert writer.patches == []
    assert reporter.state.status is IngressStatus.ENDPOINT_BUFFERING
