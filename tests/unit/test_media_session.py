"""Session policy end to end with a real input and a stand-in for the LiveKit room: which
states are written, in which order, and the exit code."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ingress_operator.models import TrackInfo
from ingress_operator.presets import AudioPlan, VideoPlan
from ingress_pod.config import MediaSettings
from ingress_pod.publish import AudioOutput, I420Converter, JoinError, VideoOutput
from ingress_pod.session import Session

FFMPEG = shutil.which("ffmpeg")
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is needed to make test media")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("session-media")
    sources = [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=sample_rate=48000",
    ]
    encode = [
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "30",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
    ]
    ffmpeg = [FFMPEG or "ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    subprocess.run([*ffmpeg, *sources, *encode, str(root / "av.flv")], check=True)
    (root / "garbage.bin").write_bytes(random.Random(7).randbytes(50_000))
    return root


class FakeKube:
    """One CR in memory; JSON patches of the state honour the `test` of the session id."""

    def __init__(self, spec: dict[str, Any], session: str = "RT_1") -> None:
        self.cr: dict[str, Any] = {
            "metadata": {"name": "ing", "labels": {"ingress.lkop.dev/id": "IN_abcdefghijkl"}},
            "spec": spec,
            "status": {
                "session": {"resourceId": session, "source": "x"},
                "state": {
                    "status": "ENDPOINT_BUFFERING",
                    "startedAt": "2026-01-01T00:00:00Z",
                    "resourceId": "RT_1",
                },
            },
        }
        self.states: list[dict[str, Any]] = []
        self.publishing = asyncio.Event()

    async def get_ingress(self, name: str) -> dict[str, Any]:
        return self.cr

    async def json_patch_status(self, name: str, ops: list[dict[str, Any]]) -> dict[str, Any] | None:
        if self.cr["status"]["session"]["resourceId"] != ops[0]["value"]:
            return None
        self.states.append(ops[1]["value"])
        if ops[1]["value"]["status"] == "ENDPOINT_PUBLISHING":
            self.publishing.set()
        return self.cr


class FakeVideoSource:
    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def capture_frame(self, frame: Any) -> None:
        self.sizes.append((frame.width, frame.height))


class FakeAudioSource:
    """Plays what it is given in real time, as the SDK's AudioSource does."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, int]] = []
        self._played_until = 0.0  # when the audio captured so far will have played (monotonic)

    @property
    def queued_duration(self) -> float:
        return max(self._played_until - time.monotonic(), 0.0)

    async def capture_frame(self, frame: Any) -> None:
        self.frames.append((frame.sample_rate, frame.num_channels))
        start = max(self._played_until, time.monotonic())
        self._played_until = start + frame.samples_per_channel / frame.sample_rate

    async def wait_for_playout(self) -> None:
        await asyncio.sleep(self.queued_duration)


class FakePublisher:
    """Stands in for publish.Publisher: joins instantly, records what is captured."""

    join_error: str | None = None
    publish_delay = 0.0  # seconds a track takes to publish

    def __init__(self) -> None:
        self.disconnected: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.video = FakeVideoSource()
        self.audio = FakeAudioSource()
        self.closed = False
        self.audio_unplayed_at_close: float | None = None
        self.plans: list[VideoPlan | AudioPlan] = []

    async def join(self, url: str, token: str, deadline: float) -> str:
        if self.join_error:
            raise JoinError(self.join_error)
        return "RM_room"

    async def publish_video(self, plan: VideoPlan, options: Any) -> VideoOutput:
        await asyncio.sleep(self.publish_delay)
        self.plans.append(plan)
        info = TrackInfo(
            sid="TR_v", type="VIDEO", source="CAMERA", width=plan.top.width, height=plan.top.height
        )
        return VideoOutput(self.video, I420Converter(plan.top.width, plan.top.height), info)  # type: ignore[arg-type]

    async def publish_audio(self, plan: AudioPlan, options: Any) -> AudioOutput:
        await asyncio.sleep(self.publish_delay)
        self.plans.append(plan)
        return AudioOutput(self.audio, TrackInfo(sid="TR_a", type="AUDIO", source="MICROPHONE"))  # type: ignore[arg-type]

    async def close(self) -> None:
        self.closed = True
        self.audio_unplayed_at_close = self.audio.queued_duration


RTMP = {"inputType": "RTMP", "roomName": "r1", "participantIdentity": "enc"}


def settings(source: Path | str, **kw: Any) -> MediaSettings:
    return MediaSettings(
        ingress_namespace="ns",
        ingress_name="ing",
        resource_id="RT_1",
        source_url=str(source),
        livekit_url="ws://127.0.0.1:1",
        livekit_api_key="key",
        livekit_api_secret="secret",  # type: ignore[arg-type]
        open_timeout=5,
        **kw,
    )


async def run(kube: FakeKube, cfg: MediaSettings, publisher: FakePublisher | None = None) -> int:
    publisher = publisher or FakePublisher()
    session = Session(cfg, kube, publisher_factory=lambda: publisher)  # type: ignore[arg-type,return-value]
    return await asyncio.wait_for(session.run(), 20)


async def test_rtmp_session_publishes_then_goes_inactive_at_end_of_input(media: Path) -> None:
    kube, publisher = FakeKube(RTMP), FakePublisher()
    assert await run(kube, settings(media / "av.flv"), publisher) == 0
    statuses = [s["status"] for s in kube.states]
    assert statuses[0] == "ENDPOINT_BUFFERING" and statuses[-1] == "ENDPOINT_INACTIVE"
    assert "ENDPOINT_PUBLISHING" in statuses
    buffering, last = kube.states[0], kube.states[-1]
    assert buffering["video"]["width"] == 640 and buffering["audio"]["mimeType"] == "audio/aac"
    publishing = [s for s in kube.states if s["status"] == "ENDPOINT_PUBLISHING"][-1]
    assert publishing["roomId"] == "RM_room"
    assert sorted(t["type"] for t in publishing["tracks"]) == ["AUDIO", "VIDEO"]
    assert last["endedAt"] and last["tracks"] == [] and last["startedAt"] == "2026-01-01T00:00:00Z"
    # 640x360 under the default 720p preset: the top layer is the source's own size.
    assert publisher.video.sizes and set(publisher.video.sizes) == {(640, 360)}
    assert publisher.audio.frames and set(publisher.audio.frames) == {(48000, 2)}
    assert publisher.closed


async def test_url_session_completes_at_end_of_input(media: Path) -> None:
    spec = {"inputType": "URL", "roomName": "r1", "participantIdentity": "enc", "url": "http://x/a.flv"}
    kube = FakeKube(spec)
    assert await run(kube, settings(media / "av.flv")) == 0
    assert kube.states[-1]["status"] == "ENDPOINT_COMPLETE"


async def test_a_url_session_plays_its_last_audio_out_before_leaving(media: Path) -> None:
    spec = {"inputType": "URL", "roomName": "r1", "participantIdentity": "enc", "url": "http://x/a.flv"}
    kube, publisher = FakeKube(spec), FakePublisher()
    # The audio that came while its track was publishing stays queued in the source all along.
    publisher.publish_delay = 0.1
    started = time.monotonic()
    assert await run(kube, settings(media / "av.flv"), publisher) == 0
    assert kube.states[-1]["status"] == "ENDPOINT_COMPLETE"
    # The file's end was heard before the session left the room, and not much later.
    assert publisher.audio_unplayed_at_close is not None and publisher.audio_unplayed_at_close < 0.005
    assert time.monotonic() - started < 3


async def test_corrupt_input_ends_in_error_with_exit_code_1(media: Path) -> None:
    kube = FakeKube(RTMP)
    assert await run(kube, settings(media / "garbage.bin")) == 1
    (state,) = kube.states
    assert state["status"] == "ENDPOINT_ERROR"
    assert state["error"].startswith("corrupt input: not a readable FLV stream")
    assert state["endedAt"]


async def test_join_failure_is_an_error_naming_the_room(media: Path) -> None:
    kube, publisher = FakeKube(RTMP), FakePublisher()
    publisher.join_error = "unauthorized"
    assert await run(kube, settings(media / "av.flv"), publisher) == 1
    assert kube.states[-1]["status"] == "ENDPOINT_ERROR"
    assert kube.states[-1]["error"] == "could not join room r1: unauthorized"


async def test_a_stale_session_exits_without_writing(media: Path) -> None:
    kube = FakeKube(RTMP, session="RT_newer")
    assert await run(kube, settings(media / "av.flv")) == 0
    assert kube.states == []


async def test_a_session_taken_over_midway_stops_quietly(media: Path) -> None:
    kube = FakeKube(RTMP)
    original = kube.json_patch_status

    async def take_over_after_first(name: str, ops: list[dict[str, Any]]) -> dict[str, Any] | None:
        result = await original(name, ops)
        kube.cr["status"]["session"]["resourceId"] = "RT_2"
        return result

    kube.json_patch_status = take_over_after_first  # type: ignore[method-assign]
    assert await run(kube, settings(media / "av.flv")) == 0
    assert [s["status"] for s in kube.states] == ["ENDPOINT_BUFFERING"]


async def test_stop_leaves_the_room_and_goes_inactive(media: Path) -> None:
    # A URL input is read at its own pace: the session is still live when stopped.
    spec = {"inputType": "URL", "roomName": "r1", "participantIdentity": "enc", "url": "http://x/a.flv"}
    kube, publisher = FakeKube(spec), FakePublisher()
    session = Session(settings(media / "av.flv"), kube, publisher_factory=lambda: publisher)  # type: ignore[arg-type,return-value]
    task = asyncio.create_task(session.run())
    await asyncio.wait_for(kube.publishing.wait(), 5)
    session.stop()
    assert await asyncio.wait_for(task, 5) == 0
    assert kube.states[-1]["status"] == "ENDPOINT_INACTIVE" and kube.states[-1]["endedAt"]
    assert publisher.closed
