"""WHIP end to end on the local stack, with headless Chromium as the client (its own WebRTC and
fetch, from a page on another origin): the front door answers through a media pod, a `livekit`
rtc subscriber decodes what arrives in the room, and ListIngress shows the live state.

GStreamer's `whipsink` would be the second client the issue names; Debian bookworm's
gstreamer1.0-plugins-bad (1.22) does not have it (docs/media.md "WHIP").
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import aiohttp
import pytest
from livekit import api

from local_stack.node.kube import Kube
from tests.e2e.browser import chromium_whip, relayed_packets
from tests.e2e.conftest import S, media_pods_of, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

WHIP = api.IngressInput.WHIP_INPUT
# Enough of an offer for the front door's checks, which come before any pod is asked.
SKETCH_OFFER = "v=0\r\ns=-\r\nt=0 0\r\na=ice-ufrag:abcd\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


async def post(url: str, body: str, content_type: str = "application/sdp", **headers: str) -> tuple[int, str]:
    """POST `body` as a WHIP client would; (status, text)."""
    headers = {"Content-Type": content_type, **headers}
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.text()


async def test_browser_publishes_vp8_through_the_relay_as_it_is_then_delete_leaves_inactive(
    make_ingress: Any, stack_env: dict[str, str], kube: Kube
) -> None:
    ingress = await make_ingress(input_type=WHIP, identity="browser")
    assert ingress.info.url == stack_env["WHIP_BASE_URL"] and not ingress.info.enable_transcoding
    before = await relayed_packets(stack_env["WHIP_BASE_URL"])
    async with (
        ingress.statuses() as statuses,
        ingress.subscriber() as sub,
        chromium_whip(
            ingress.info.url, ingress.info.stream_key, codec="VP8", path="relay", w=640, h=360, seconds=0
        ) as page,
    ):
        answer = await page.next("answer", within=60)
        assert answer["status"] == 201, answer
        # The session's URL, under the ingress's own WHIP URL (so it works behind a proxy).
        assert answer["location"].startswith(ingress.info.url + "/WH_")
        got = await sub.receive("browser", video_frames=30, audio_frames=50, within=30)
        assert got.video_publication is not None
        # Pass-through: the browser's own codec and size, one layer.
        assert got.video_publication.mime_type == "video/VP8"
        assert (got.video_publication.width, got.video_publication.height) == (640, 360)
        assert not got.video_publication.simulcasted
        assert set(got.video_sizes) == {(640, 360)}
        assert set(got.audio_rates) == {(48000, 2)}

        async def publishing() -> Any:
            info = await ingress.get()
            live = info.state.status == S.ENDPOINT_PUBLISHING and info.state.video.average_bitrate > 0
            return info if live else None

        info = await wait_for(publishing, "PUBLISHING with an input bitrate", within=15)
        state = info.state
        assert state.resource_id.startswith("WH_") and state.room_id.startswith("RM_")
        assert state.video.mime_type == "video/VP8" and (state.video.width, state.video.height) == (640, 360)
        assert state.audio.mime_type == "audio/opus" and state.audio.sample_rate == 48000
        assert {t.mime_type for t in state.tracks} == {"video/VP8", "audio/opus"}
        # The media went through the front door's UDP port (the page kept only its candidate).
        assert await relayed_packets(stack_env["WHIP_BASE_URL"]) > before + 100

        # A subscriber joining now needs a keyframe: LiveKit asks the pod, the pod asks the
        # browser (RTCP PLI), and the browser encodes one.
        before_late = await page.next("stats", fresh=True)
        async with ingress.subscriber() as late:
            await late.receive("browser", video_frames=10, audio_frames=1, within=10)
        after_late = await page.next("stats", fresh=True)
        assert after_late["plis"] > before_late["plis"] and after_late["keyframes"] > before_late["keyframes"]

        # A second publisher with the same key is turned away while this one is live.
        status, text = await post(f"{ingress.info.url}/{ingress.info.stream_key}", SKETCH_OFFER)
        assert (status, text.strip()) == (409, "ingress already has a live publisher")

        session = answer["location"]
        async with aiohttp.ClientSession() as http:
            # aiortc can't restart ICE: the client is told so, and the session goes on.
            restart = "a=ice-ufrag:new1\r\na=ice-pwd:0123456789abcdefghijklmn\r\n"
            headers = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"}
            async with http.patch(session, data=restart, headers=headers) as resp:
                assert resp.status == 422 and "ICE restart is not supported" in await resp.text()
            async with http.delete(session, headers={"Origin": "http://page.test"}) as resp:
                assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
        assert await asyncio.wait_for(sub.left.get(), 10) == "browser"
        ended = await ingress.state_is(S.ENDPOINT_INACTIVE, within=15)

        async def polled_inactive() -> list[int] | None:
            return statuses if statuses[-1] == S.ENDPOINT_INACTIVE else None

        await wait_for(polled_inactive, "the status poll to see INACTIVE", within=5)
    # BUFFERING from the POST (while the pod starts) until the tracks are out.
    assert statuses == [S.ENDPOINT_INACTIVE, S.ENDPOINT_BUFFERING, S.ENDPOINT_PUBLISHING, S.ENDPOINT_INACTIVE]
    assert ended.state.ended_at >= ended.state.started_at > 0
    assert ended.state.resource_id == state.resource_id

    async def pod_gone() -> bool:
        return not await media_pods_of(kube, stack_env, ingress.info.ingress_id)

    await wait_for(pod_gone, "the media pod to be gone", within=30)


async def test_bearer_h264_straight_to_the_pod_with_trickled_candidates(make_ingress: Any) -> None:
    ingress = await make_ingress(input_type=WHIP, identity="h264")
    async with (
        ingress.subscriber() as sub,
        chromium_whip(
            ingress.info.url,
            ingress.info.stream_key,
            bearer=1,
            codec="H264",
            path="pod",
            trickle=1,
            seconds=15,  # the DELETE comes after the frames the test waits for, even on a slow machine
        ) as page,
    ):
        assert (await page.next("answer", within=60))["status"] == 201
        assert (await page.next("patched"))["status"] == 204
        got = await sub.receive("h264", video_frames=30, audio_frames=30, within=30)
        assert got.video_publication is not None and got.video_publication.mime_type == "video/H264"
        assert (640, 360) in got.video_sizes
        assert (await page.next("deleted", within=30))["status"] == 200
    info = await ingress.state_is(S.ENDPOINT_INACTIVE, within=15)
    assert info.state.video.mime_type == "video/H264"


async def test_transcoding_publishes_the_preset_layers(make_ingress: Any) -> None:
    ingress = await make_ingress(input_type=WHIP, identity="transcoded", enable_transcoding=True)
    async with (
        ingress.subscriber() as sub,
        chromium_whip(
            ingress.info.url, ingress.info.stream_key, codec="VP8", w=1280, h=720, seconds=0
        ) as page,
    ):
        assert (await page.next("answer", within=60))["status"] == 201
        got = await sub.receive(
            "transcoded", video_frames=30, audio_frames=30, within=45, until_size=(1280, 720)
        )
        publication = got.video_publication
        assert publication is not None and publication.simulcasted
        assert (1280, 720) in got.video_sizes
        info = await ingress.state_is(S.ENDPOINT_PUBLISHING, within=15)
        video = next(t for t in info.state.tracks if t.type == 1)
        assert video.simulcast and (video.width, video.height) == (1280, 720)
        assert info.state.video.mime_type == "video/VP8"  # what the browser sent


async def test_a_browser_that_vanishes_leaves_the_ingress_inactive(make_ingress: Any) -> None:
    ingress = await make_ingress(input_type=WHIP, identity="vanishing")
    async with (
        ingress.subscriber() as sub,
        chromium_whip(ingress.info.url, ingress.info.stream_key, seconds=0) as page,
    ):
        assert (await page.next("answer", within=60))["status"] == 201
        await sub.receive("vanishing", video_frames=10, audio_frames=10, within=30)
        assert page.process is not None
        os.killpg(page.process.pid, signal.SIGKILL)  # no DELETE: ICE consent runs out (30 s, RFC 7675)
        assert await asyncio.wait_for(sub.left.get(), 60) == "vanishing"
    await ingress.state_is(S.ENDPOINT_INACTIVE, within=15)


async def test_an_offer_of_no_usable_codec_is_refused_and_the_ingress_shows_why(make_ingress: Any) -> None:
    ingress = await make_ingress(input_type=WHIP, identity="av1")
    async with chromium_whip(
        ingress.info.url, ingress.info.stream_key, codec="AV1", only=1, audio=0, seconds=0
    ) as page:
        answer = await page.next("answer", within=60)
    assert answer["status"] == 422
    assert "unsupported codecs AV1" in answer["body"] and "VP8 or H.264" in answer["body"]
    info = await ingress.state_is(S.ENDPOINT_ERROR, within=15)
    assert "unsupported codecs AV1" in info.state.error


async def test_refusals_name_the_reason(make_ingress: Any) -> None:
    live = await make_ingress(input_type=WHIP, identity="refusals")
    off = await make_ingress(input_type=WHIP, identity="off", enabled=False)
    rtmp = await make_ingress(identity="rtmp")
    base = live.info.url
    key = live.info.stream_key
    cases = [
        (f"{base}/nosuchkey123", SKETCH_OFFER, {}, 404, "unknown stream key"),
        (f"{base}/{rtmp.info.stream_key}", SKETCH_OFFER, {}, 404, "stream key of a RTMP ingress"),
        (f"{base}/{off.info.stream_key}", SKETCH_OFFER, {}, 403, "ingress is disabled"),
        (base, SKETCH_OFFER, {}, 401, "no stream key"),
        (base, SKETCH_OFFER, {"Authorization": "Bearer nosuchkey123"}, 404, "unknown stream key"),
        (
            f"{base}/{key}",
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
            {},
            400,
            "malformed SDP offer: no a=ice-ufrag",
        ),
        (f"{base}/{key}", "hello", {}, 400, "malformed SDP offer: it must start with v=0"),
        (f"{base}/{key}", "v=0\r\ns=-\r\n", {}, 400, "malformed SDP offer: no audio or video media section"),
        (f"{base}/{key}", SKETCH_OFFER + "a=x\r\n" * 20000, {}, 413, "SDP larger than 65536 bytes"),
    ]
    for url, body, headers, status, message in cases:
        got = await post(url, body, **headers)
        assert got[0] == status and message in got[1], (url, got)
    status, text = await post(f"{base}/{key}", SKETCH_OFFER, content_type="text/plain")
    assert status == 415 and "Content-Type must be application/sdp" in text
    # A browser's preflight from another origin is allowed, and says what may be posted.
    async with (
        aiohttp.ClientSession() as http,
        http.options(
            f"{base}/{key}", headers={"Origin": "http://page.test", "Access-Control-Request-Method": "POST"}
        ) as resp,
    ):
        assert resp.status == 204 and resp.headers["Accept-Post"] == "application/sdp"
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    # Nothing refused started a session.
    assert (await live.get()).state.status == S.ENDPOINT_INACTIVE


async def test_a_simulcasting_browser_sends_only_its_best_layer_which_is_forwarded(make_ingress: Any) -> None:
    ingress = await make_ingress(input_type=WHIP, identity="simulcast")
    async with (
        ingress.subscriber() as sub,
        chromium_whip(
            ingress.info.url, ingress.info.stream_key, simulcast=1, w=1280, h=720, seconds=0
        ) as page,
    ):
        assert (await page.next("answer", within=60))["status"] == 201
        got = await sub.receive("simulcast", video_frames=30, audio_frames=10, within=30)
        assert got.video_publication is not None and not got.video_publication.simulcasted
        assert set(got.video_sizes) == {(1280, 720)}
        # The browser's own view: the answer kept layer f alone, so q and h encode nothing.
        encoded: dict[str, int] = {}
        while len(encoded) < 3:
            stats = await page.next("stats", fresh=not encoded)
            encoded[stats["rid"]] = stats["encoded"]
        assert encoded["f"] > 0 and encoded["q"] == encoded["h"] == 0, encoded
