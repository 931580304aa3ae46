"""RTMP end to end on the local stack: ffmpeg pushes to the front door, the operator runs a
media pod, a `livekit` rtc subscriber decodes what arrives in the room, and ListIngress and
the CR show the live state. Every case also checks no media pod is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

import pytest
from livekit import api
from livekit.protocol import ingress as lkingress
from livekit.protocol import models as lkmodels

from local_stack.node.kube import Kube
from tests.e2e.conftest import ID_LABEL, Kubectl, S, wait_for
from tests.e2e.media import push

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]


async def test_push_1080p_reaches_the_room_as_720p_with_three_layers_then_inactive(
    make_ingress: Any, lkapi: api.LiveKitAPI, kubectl: Kubectl
) -> None:
    ingress = await make_ingress(identity="cam-1080")
    assert ingress.info.state.status == S.ENDPOINT_INACTIVE
    encoder = await push(ingress.push_url, seconds=20)
    async with ingress.subscriber() as sub:
        got = await sub.receive("cam-1080", video_frames=40, audio_frames=100, until_size=(1280, 720))
    assert (1280, 720) in got.video_sizes, got.video_sizes
    assert set(got.audio_rates) == {(48000, 2)}

    async def measured() -> lkingress.IngressInfo | None:
        info = await ingress.get()
        live = info.state.status == S.ENDPOINT_PUBLISHING
        return (
            info if live and info.state.video.average_bitrate and info.state.audio.average_bitrate else None
        )

    info = await wait_for(measured, "PUBLISHING with input bitrates", within=15)
    video, audio = info.state.video, info.state.audio
    assert (video.width, video.height) == (1920, 1080)
    assert 25 <= video.framerate <= 31, video.framerate
    assert video.mime_type.lower() == "video/h264" and audio.mime_type == "audio/aac"
    assert audio.channels == 2 and audio.sample_rate == 44100
    assert info.state.resource_id.startswith("RT_") and info.state.room_id.startswith("RM_")
    assert info.state.started_at > 0 and {t.type for t in info.state.tracks} == {0, 1}

    # what `kubectl get lki` shows: ID, Type, Room, Status, Age
    row = kubectl.run("get", "lki", "-l", f"{ID_LABEL}={ingress.info.ingress_id}", "--no-headers").stdout
    expected = [ingress.info.ingress_id, "RTMP", ingress.info.room_name, "ENDPOINT_PUBLISHING"]
    assert row.split()[1:5] == expected, row

    rooms = await lkapi.room.list_participants(api.ListParticipantsRequest(room=ingress.info.room_name))
    (publisher,) = [p for p in rooms.participants if p.identity == "cam-1080"]
    assert publisher.kind == api.ParticipantInfo.Kind.INGRESS and publisher.name == "The Encoder"
    (video_track,) = [t for t in publisher.tracks if t.type == api.TrackType.VIDEO]
    sizes = sorted((layer.width, layer.height) for layer in video_track.layers)
    assert sizes == [(320, 180), (640, 360), (1280, 720)]

    code, err = await encoder.wait()
    assert code == 0, err
    done = await ingress.state_is(S.ENDPOINT_INACTIVE, within=30)
    assert done.state.ended_at >= done.state.started_at > 0


async def test_unknown_key_disabled_ingress_and_a_second_publisher_are_refused(make_ingress: Any) -> None:
    ingress = await make_ingress(identity="refusals")
    base = ingress.info.url
    unknown = await push(f"{base}/not-a-key", seconds=5, size="320x240")
    code, err = await unknown.wait(within=15)
    assert code != 0 and "error" in err.lower(), err

    first = await push(ingress.push_url, seconds=20, size="320x240")
    await ingress.state_is(S.ENDPOINT_PUBLISHING)
    second = await push(ingress.push_url, seconds=5, size="320x240")
    code, err = await second.wait(within=15)
    assert code != 0, err
    assert (await ingress.get()).state.status == S.ENDPOINT_PUBLISHING  # the first one goes on
    await first.stop()
    await ingress.state_is(S.ENDPOINT_INACTIVE)

    disabled = await make_ingress(identity="disabled", enabled=False)
    refused = await push(disabled.push_url, seconds=5, size="320x240")
    code, err = await refused.wait(within=15)
    assert code != 0, err
    assert (await disabled.get()).state.status == S.ENDPOINT_INACTIVE


async def test_update_during_a_push_ends_the_session_and_a_reconnect_starts_a_new_one(
    make_ingress: Any, lkapi: api.LiveKitAPI
) -> None:
    ingress = await make_ingress(identity="updated")
    encoder = await push(ingress.push_url, seconds=60, size="640x360")
    first = await ingress.state_is(S.ENDPOINT_PUBLISHING)
    await lkapi.ingress.update_ingress(
        api.UpdateIngressRequest(ingress_id=ingress.info.ingress_id, participant_name="Renamed")
    )
    code, _ = await encoder.wait(within=30)  # the front door drops the encoder
    assert code != 0
    ended = await ingress.state_is(S.ENDPOINT_INACTIVE)
    assert ended.state.ended_at > 0

    again = await push(ingress.push_url, seconds=30, size="640x360")
    second = await ingress.state_is(S.ENDPOINT_PUBLISHING)
    assert second.state.resource_id != first.state.resource_id
    async with ingress.subscriber() as sub:
        got = await sub.receive("updated", video_frames=5, audio_frames=5)
    assert got.video_sizes and got.audio_rates
    await again.stop()
    await ingress.state_is(S.ENDPOINT_INACTIVE)


async def test_delete_during_a_push_stops_it(make_ingress: Any, lkapi: api.LiveKitAPI) -> None:
    ingress = await make_ingress(identity="deleted")
    encoder = await push(ingress.push_url, seconds=60, size="640x360")
    await ingress.state_is(S.ENDPOINT_PUBLISHING)
    final = await lkapi.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=ingress.info.ingress_id))
    assert final.state.status == S.ENDPOINT_INACTIVE
    code, _ = await encoder.wait(within=30)
    assert code != 0


async def test_pod_killed_mid_session_is_an_error_then_a_new_push_works(
    make_ingress: Any, kube: Kube
) -> None:
    ingress = await make_ingress(identity="killed")
    encoder = await push(ingress.push_url, seconds=60, size="640x360")
    await ingress.state_is(S.ENDPOINT_PUBLISHING)
    pod = await ingress.media_pod(kube)
    os.kill(_pod_pid(pod), signal.SIGKILL)
    failed = await ingress.state_is(S.ENDPOINT_ERROR)
    assert "exit code" in failed.state.error and pod["metadata"]["name"] in failed.state.error
    code, _ = await encoder.wait(within=30)
    assert code != 0

    again = await push(ingress.push_url, seconds=30, size="640x360")
    await ingress.state_is(S.ENDPOINT_PUBLISHING)
    await again.stop()
    await ingress.state_is(S.ENDPOINT_INACTIVE)


def _pod_pid(pod: dict[str, Any]) -> int:
    """The pid of a pod's container on the process node (its container id is `process://<pid>`)."""
    (status,) = pod["status"]["containerStatuses"]
    return int(status["containerID"].removeprefix("process://"))


@pytest.mark.parametrize(
    ("case", "request_fields", "source", "sizes", "tracks"),
    [
        # 406x720 as the preset fits it; libwebrtc's simulcast crops sides to multiples of 4
        ("portrait", {}, {"size": "720x1280"}, [(404, 720)], {"video", "audio"}),
        (
            "540p 2 layers",
            {"video": api.IngressVideoOptions(preset=lkingress.H264_540P_25FPS_2_LAYERS)},
            {"size": "1280x720"},
            [(960, 540)],
            {"video", "audio"},
        ),
        (
            "1 layer",
            {"video": api.IngressVideoOptions(preset=lkingress.H264_720P_30FPS_1_LAYER)},
            {"size": "1280x720"},
            [(1280, 720)],
            {"video", "audio"},
        ),
        (
            "custom options",
            {
                "video": api.IngressVideoOptions(
                    name="custom-cam",
                    options=lkingress.IngressVideoEncodingOptions(
                        video_codec=lkmodels.H264_BASELINE,
                        frame_rate=20,
                        layers=[
                            lkmodels.VideoLayer(quality=lkmodels.HIGH, width=854, height=480, bitrate=900_000)
                        ],
                    ),
                ),
                "audio": api.IngressAudioOptions(name="custom-mic", preset=lkingress.OPUS_MONO_64KBS),
            },
            {"size": "1280x720"},
            [(852, 480)],  # libwebrtc sends sides in multiples of 4 (as 406 → 404 above)
            {"video", "audio"},
        ),
        ("audio only", {}, {"video": False}, [], {"audio"}),
        ("video only", {}, {"audio": False, "size": "640x360"}, [(640, 360)], {"video"}),
    ],
)
async def test_encodings_and_inputs(
    make_ingress: Any,
    lkapi: api.LiveKitAPI,
    case: str,
    request_fields: dict[str, Any],
    source: dict[str, Any],
    sizes: list[tuple[int, int]],
    tracks: set[str],
) -> None:
    identity = "enc-" + case.replace(" ", "-")
    ingress = await make_ingress(identity=identity, **request_fields)
    encoder = await push(ingress.push_url, seconds=25, **source)
    async with ingress.subscriber() as sub:
        want = sizes[0] if sizes else None
        got = await sub.receive(
            identity, video_frames=20, audio_frames=20, kinds=tuple(sorted(tracks)), until_size=want
        )
    if sizes:
        assert sizes[0] in got.video_sizes, got.video_sizes
    assert bool(got.audio_rates) == ("audio" in tracks)
    info = await ingress.state_is(S.ENDPOINT_PUBLISHING)
    kinds = {"video" if t.type == 1 else "audio" for t in info.state.tracks}
    assert kinds == tracks
    names = {t.name for t in info.state.tracks}
    if case == "custom options":
        assert names == {"custom-cam", "custom-mic"}
    await encoder.stop()
    await ingress.state_is(S.ENDPOINT_INACTIVE)


async def test_unsupported_codec_is_an_error_with_a_message(make_ingress: Any) -> None:
    ingress = await make_ingress(identity="flv1")
    encoder = await push(ingress.push_url, seconds=20, size="320x240", video_codec=["-c:v", "flv1"])
    failed = await ingress.state_is(S.ENDPOINT_ERROR)
    assert "codec" in failed.state.error.lower(), failed.state.error
    await encoder.stop()


def _push_hevc(url: str, seconds: float) -> None:
    """HEVC over enhanced RTMP, as OBS 30+ sends it: Debian's ffmpeg 5.1 can't, PyAV's FFmpeg can."""
    import fractions
    import time

    import numpy as np
    from av import VideoFrame
    from av import open as av_open

    with av_open(url, "w", format="flv") as out:
        stream = out.add_stream("libx265", rate=30, options={"x265-params": "log-level=none"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        picture = np.zeros((240, 320, 3), dtype=np.uint8)
        start = time.monotonic()
        for n in range(int(seconds * 30)):
            picture[:, :, 0] = n % 256
            frame = VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = n, fractions.Fraction(1, 30)
            out.mux(stream.encode(frame))
            time.sleep(max(0.0, start + n / 30 - time.monotonic()))


async def test_hevc_is_an_error_with_a_message(make_ingress: Any) -> None:
    ingress = await make_ingress(identity="hevc")
    pusher = asyncio.create_task(asyncio.to_thread(_push_hevc, ingress.push_url, 20))
    failed = await ingress.state_is(S.ENDPOINT_ERROR)
    assert "hevc" in failed.state.error.lower(), failed.state.error
    with contextlib.suppress(Exception):  # the front door drops it: PyAV raises on the next write
        await asyncio.wait_for(pusher, 30)


async def test_garbage_video_is_an_error_with_a_message(make_ingress: Any) -> None:
    ingress = await make_ingress(identity="garbage")
    # H.264 packets with most of their bytes overwritten: FLV-framed, but nothing decodes
    noise = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-bsf:v", "noise=amount=2"]
    encoder = await push(ingress.push_url, seconds=30, size="320x240", audio=False, video_codec=noise)
    failed = await ingress.state_is(S.ENDPOINT_ERROR, within=45)
    assert failed.state.error, failed.state
    await encoder.stop()


async def test_a_push_shorter_than_a_pod_start_still_ends_inactive(make_ingress: Any) -> None:
    ingress = await make_ingress(identity="short")
    encoder = await push(ingress.push_url, seconds=0.5, size="320x240")
    code, err = await encoder.wait(within=15)
    assert code == 0, err
    done = await ingress.state_is(S.ENDPOINT_INACTIVE, within=30)
    assert done.state.resource_id.startswith("RT_") and done.state.ended_at > 0


async def test_deleting_the_media_pod_ends_the_session_cleanly(make_ingress: Any, kube: Kube) -> None:
    ingress = await make_ingress(identity="pod-deleted")
    encoder = await push(ingress.push_url, seconds=60, size="640x360")
    await ingress.state_is(S.ENDPOINT_PUBLISHING)
    pod = await ingress.media_pod(kube)
    await kube.delete(f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}")
    ended = await ingress.state_is(S.ENDPOINT_INACTIVE, within=30)  # SIGTERM: the pod ends it
    assert ended.state.ended_at > 0 and not ended.state.error
    code, _ = await encoder.wait(within=30)  # its reader gone, the front door drops the encoder
    assert code != 0


async def test_a_front_door_crash_ends_its_sessions_and_pushes_work_after(
    make_ingress: Any, stack: Any
) -> None:
    ingress = await make_ingress(identity="fd-crash")
    encoder = await push(ingress.push_url, seconds=60, size="640x360")
    await ingress.state_is(S.ENDPOINT_PUBLISHING)
    await stack.akill_component("frontdoor")  # SIGKILL: no clean end for anyone
    code, _ = await encoder.wait(within=30)
    assert code != 0
    await stack.astart_component("frontdoor")

    async def ended() -> lkingress.IngressInfo | None:
        info = await ingress.get()
        over = info.state.status in (S.ENDPOINT_INACTIVE, S.ENDPOINT_ERROR) and info.state.ended_at
        return info if over else None

    # The pod reads a closed connection as the stream's end (INACTIVE); had it not been
    # running, the new front door would have ended the session (ERROR "front door restarted").
    await wait_for(ended, "the session to end", 30)
    again = await push(ingress.push_url, seconds=30, size="640x360")
    await ingress.state_is(S.ENDPOINT_PUBLISHING)
    await again.stop()
    await ingress.state_is(S.ENDPOINT_INACTIVE)
