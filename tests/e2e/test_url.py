"""URL input end to end on the local stack: an ingress created through the API (or kubectl)
pulls a file, an HLS playlist or an SRT stream served on 127.0.0.1; a `livekit` rtc
subscriber decodes what arrives; the state goes BUFFERING → PUBLISHING → COMPLETE, or ERROR
with a message a user can act on. A finished or failed pull leaves no media pod behind."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from livekit import api
from livekit.protocol import ingress as lkingress

from local_stack.node.kube import Kube
from tests.e2e import sources
from tests.e2e.conftest import Kubectl, S, lki, media_pods_of, subscriber, wait_for
from tests.e2e.media import Watched
from tests.e2e.sources import MediaServer, make_file

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

SECONDS = 3
H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p"]
AAC = ["-c:a", "aac", "-ac", "2"]
HEVC = ["-c:v", "libx265", "-x265-params", "log-level=error"]
VP9 = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"]
# name, file, ffmpeg codec options, has video
CONTAINERS: list[tuple[str, str, list[str], bool]] = [
    ("MP4, index at the end", "clip.mp4", [*H264, *AAC], True),
    ("MOV", "clip.mov", [*H264, *AAC], True),
    ("MKV with HEVC and Opus", "clip.mkv", [*HEVC, "-c:a", "libopus"], True),
    ("WebM with VP9 and Opus", "clip.webm", [*VP9, "-c:a", "libopus"], True),
    ("MPEG-TS with MP2 audio", "clip.ts", [*H264, "-c:a", "mp2"], True),
    ("OGG with Theora and Vorbis", "clip.ogg", ["-c:v", "libtheora", "-q:v", "5", "-c:a", "libvorbis"], True),
    ("MP3", "tone.mp3", ["-c:a", "libmp3lame"], False),
    ("AAC (ADTS)", "tone.aac", AAC, False),
    ("WAV", "tone.wav", ["-c:a", "pcm_s16le"], False),
]  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test file, made once: the containers, a ProRes file, a long file, HLS."""
    root = tmp_path_factory.mktemp("url-sources")
    for _, name, codecs, video in CONTAINERS:
        make_file(root / name, SECONDS, codecs, video=video)
    make_file(root / "prores.mov", 1, ["-c:v", "prores_ks", "-c:a", "pcm_s16le"])
    make_file(root / "long.ts", 40, [*H264, *AAC])
    # A master playlist of two variants: the ingress must follow the 640x360 one.
    variants = [
        "-filter_complex", "[0:v]split=2[hi][lo];[lo]scale=256:144[lo2]",
        "-map", "[hi]", "-map", "[lo2]", "-map", "1:a", "-map", "1:a",
        *H264, "-b:v:0", "900k", "-b:v:1", "150k", *AAC,
        "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod", "-master_pl_name", "master.m3u8",
        "-var_stream_map", "v:0,a:0 v:1,a:1", "-hls_segment_filename", str(root / "vod/v%v/seg%03d.ts"),
    ]  # fmt: skip
    (root / "vod/v0").mkdir(parents=True)
    (root / "vod/v1").mkdir(parents=True)
    make_file(root / "vod/v%v/index.m3u8", SECONDS, variants, size="640x360")
    return root


@pytest.fixture(scope="module")
async def server(files: Path) -> AsyncIterator[MediaServer]:
    async with sources.serving(files) as s:
        yield s


async def pull(
    make_ingress: Any, stack_env: dict[str, str], room: str, url: str, video: bool = True, within: float = 60
) -> tuple[Any, Watched]:
    """Create a URL ingress for `url` with a subscriber already in its room; decode what it
    publishes until it leaves."""
    async with subscriber(stack_env, room) as sub:
        ingress = await make_ingress(input_type=api.IngressInput.URL_INPUT, url=url, identity="puller")
        kinds = ("video", "audio") if video else ("audio",)
        watched = await sub.watch("puller", kinds, within)
    return ingress, watched


async def no_pod_left(kube: Kube, env: dict[str, str], ingress_id: str) -> None:
    """The session's pod is gone while the ingress stays."""

    async def gone() -> bool:
        return not await media_pods_of(kube, env, ingress_id)

    await wait_for(gone, "the media pod to be gone", 30)


def close_to(seconds: float, expected: float) -> bool:
    """Published in real time: neither bursted (a 3 s file decodes in a fraction of a second)
    nor dragged out. The subscriber misses what came before its subscription took (up to
    about a second on a loaded machine)."""
    return expected - 1.0 <= seconds <= expected + 1.0


@pytest.mark.parametrize(("case", "name", "codecs", "video"), CONTAINERS, ids=[c[0] for c in CONTAINERS])
async def test_a_file_is_published_in_real_time_then_complete(
    case: str,
    name: str,
    codecs: list[str],
    video: bool,
    make_ingress: Any,
    server: MediaServer,
    stack_env: dict[str, str],
    room: str,
    kube: Kube,
) -> None:
    ingress, watched = await pull(make_ingress, stack_env, room, server.url(f"files/{name}"), video)
    assert ingress.info.reusable is False
    info = await ingress.state_is(S.ENDPOINT_COMPLETE, 30)
    state = info.state
    assert state.resource_id.startswith("UR_")
    assert state.ended_at > state.started_at
    assert state.error == ""
    assert {(rate, ch) for _, rate, ch in watched.audio} == {(48000, 2)}
    assert close_to(Watched.span(watched.audio), SECONDS), Watched.span(watched.audio)
    if video:
        assert (320, 240) in watched.sizes, watched.sizes
        assert close_to(Watched.span(watched.video), SECONDS), Watched.span(watched.video)
        assert (state.video.width, state.video.height) == (320, 240)
    else:
        assert watched.video == []
        assert state.video.mime_type == ""
    assert state.audio.sample_rate == 48000
    await no_pod_left(kube, stack_env, info.ingress_id)


async def test_hls_follows_the_best_variant(
    make_ingress: Any, server: MediaServer, stack_env: dict[str, str], room: str
) -> None:
    ingress, watched = await pull(make_ingress, stack_env, room, server.url("files/vod/master.m3u8"))
    info = await ingress.state_is(S.ENDPOINT_COMPLETE, 30)
    assert (info.state.video.width, info.state.video.height) == (640, 360)
    assert (640, 360) in watched.sizes, watched.sizes
    assert close_to(Watched.span(watched.video), SECONDS), Watched.span(watched.video)


async def test_live_hls_survives_a_missing_segment_and_completes_at_its_end(
    make_ingress: Any, files: Path, server: MediaServer, stack_env: dict[str, str], room: str
) -> None:
    live = files / "live"
    segments = sources.make_hls_segments(live, seconds=7)
    segments[4] = ("gone.ts", segments[4][1])  # listed, but 404
    playlist = sources.LivePlaylist(live / "live.m3u8", segments)
    writer = asyncio.create_task(playlist.run(count=len(segments)))
    try:
        ingress, watched = await pull(make_ingress, stack_env, room, server.url("files/live/live.m3u8"))
    finally:
        await writer
    info = await ingress.state_is(S.ENDPOINT_COMPLETE, 30)
    assert info.state.error == ""
    # Live: the pull starts near the playlist's live edge, and one segment was never there.
    assert Watched.span(watched.video) >= 3.0, Watched.span(watched.video)
    assert (320, 240) in watched.sizes


async def test_srt_caller_pulls_a_stream_until_the_sender_ends_it(
    make_ingress: Any, files: Path, stack_env: dict[str, str], room: str
) -> None:
    async with sources.srt_sender(files / "clip.ts") as sender:
        ingress, watched = await pull(make_ingress, stack_env, room, sender.url)
        _, err = await asyncio.wait_for(sender.process.communicate(), 30)
    assert sender.process.returncode == 0, err.decode(errors="replace")
    info = await ingress.state_is(S.ENDPOINT_COMPLETE, 30)
    assert info.state.video.mime_type == "video/H264"
    assert (320, 240) in watched.sizes
    assert close_to(Watched.span(watched.video), SECONDS), Watched.span(watched.video)


ERRORS: list[tuple[str, str, str]] = [
    # case, url (a path on the test server, or a URL with {closed} for an unused port), error
    ("host unreachable", "http://127.0.0.1:{closed}/clip.mp4", "unreachable"),
    ("HTTP 404", "files/nothing.mp4", "404"),
    ("HTTP 403", "status/403/clip.mp4", "403"),
    ("a web page", "page.html", "not a media"),
    ("unsupported codec", "files/prores.mov", "unsupported video codec prores"),
    ("body stalls", "stall/clip.ts", "stalled"),
    ("SRT: nobody listening", "srt://127.0.0.1:{closed}", "unreachable"),
]


@pytest.mark.parametrize(("case", "where", "error"), ERRORS, ids=[c[0] for c in ERRORS])
async def test_a_source_that_fails_gives_error_with_its_reason(
    case: str,
    where: str,
    error: str,
    make_ingress: Any,
    server: MediaServer,
    stack_env: dict[str, str],
    kube: Kube,
) -> None:
    kind = socket.SOCK_DGRAM if where.startswith("srt:") else socket.SOCK_STREAM
    url = where.format(closed=sources.free_port(kind)) if "://" in where else server.url(where)
    ingress = await make_ingress(input_type=api.IngressInput.URL_INPUT, url=url, identity="puller")
    info = await ingress.state_is(S.ENDPOINT_ERROR, 45)
    assert error in info.state.error, info.state.error
    assert "Traceback" not in info.state.error
    await no_pod_left(kube, stack_env, info.ingress_id)
    # Not reusable: a failed pull is not retried.
    await asyncio.sleep(1)
    assert (await ingress.get()).state.resource_id == info.state.resource_id


async def test_a_live_playlist_that_stops_updating_gives_error(
    make_ingress: Any, files: Path, server: MediaServer
) -> None:
    stalled = files / "stalled"
    playlist = sources.LivePlaylist(stalled / "live.m3u8", sources.make_hls_segments(stalled, seconds=4))
    writer = asyncio.create_task(playlist.run(count=4, ended=False))
    try:
        ingress = await make_ingress(
            input_type=api.IngressInput.URL_INPUT,
            url=server.url("files/stalled/live.m3u8"),
            identity="puller",
        )
        await ingress.state_is(S.ENDPOINT_PUBLISHING, 30)
    finally:
        await writer
    info = await ingress.state_is(S.ENDPOINT_ERROR, 60)
    assert "stalled" in info.state.error, info.state.error


async def test_delete_stops_the_pull_at_once(
    make_ingress: Any,
    server: MediaServer,
    lkapi: api.LiveKitAPI,
    stack_env: dict[str, str],
    room: str,
    kube: Kube,
) -> None:
    async with subscriber(stack_env, room) as sub:
        ingress = await make_ingress(
            input_type=api.IngressInput.URL_INPUT, url=server.url("files/long.ts"), identity="puller"
        )
        await sub.receive("puller", video_frames=10, audio_frames=10)
        await lkapi.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=ingress.info.ingress_id))
        t0 = time.monotonic()
        while await asyncio.wait_for(sub.left.get(), 10) != "puller":
            pass
        left = time.monotonic() - t0
    assert left < 5, f"the participant stayed {left:.1f} s after DeleteIngress"
    await no_pod_left(kube, stack_env, ingress.info.ingress_id)
    with pytest.raises(api.TwirpError):
        await ingress.get()


async def test_a_pull_whose_pod_is_deleted_ends_in_error_not_inactive(
    make_ingress: Any, server: MediaServer, kubectl: Kubectl, kube: Kube
) -> None:
    ingress = await make_ingress(
        input_type=api.IngressInput.URL_INPUT, url=server.url("files/long.ts"), identity="puller"
    )
    await ingress.state_is(S.ENDPOINT_PUBLISHING, 30)
    pod = await ingress.media_pod(kube)
    kubectl.run("delete", "pod", pod["metadata"]["name"], "--wait=false")  # as an eviction does
    info = await ingress.state_is(S.ENDPOINT_ERROR, 30)
    assert "pull interrupted" in info.state.error, info.state.error


async def test_kubectl_url_ingress_runs_once_and_refuses_changes(
    kubectl: Kubectl, server: MediaServer, lkapi: api.LiveKitAPI, room: str
) -> None:
    name = f"pull-{room}"
    manifest = lki(
        name, inputType="URL", url=server.url("files/tone.mp3"), roomName=room, participantIdentity="radio"
    )
    kubectl.apply(manifest)
    try:

        async def complete() -> dict[str, Any] | None:
            cr = kubectl.get("lki", name)
            state = (cr.get("status") or {}).get("state") or {}
            return cr if state.get("status") == "ENDPOINT_COMPLETE" else None

        cr = await wait_for(complete, "the pull to complete", 60)
        assert cr["status"]["reusable"] is False
        changed = kubectl.run(
            "patch", "lki", name, "--type=merge", "-p", '{"spec":{"roomName":"x"}}', check=False
        )
        assert changed.returncode != 0
        assert "a URL ingress is not reusable and can't be modified" in changed.stderr
        listing = await lkapi.ingress.list_ingress(
            api.ListIngressRequest(ingress_id=cr["status"]["ingressId"])
        )
        (info,) = listing.items
        assert info.state.status == lkingress.IngressState.ENDPOINT_COMPLETE
        assert info.input_type == api.IngressInput.URL_INPUT
    finally:
        kubectl.run("delete", "lki", name, "--wait=false", check=False)
