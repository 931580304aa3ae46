"""WhipInput against a real WebRTC client: aiortc sending synthetic video and audio over
127.0.0.1, with a small aiohttp server in the front door's place (it serves the offer on the
session channel, takes the pod's answer, can trickle candidates, and closes to end); offers and
candidates it can't take, why no media came, and pass-through's queue overflowing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aioice.ice
import aiortc.codecs
import aiortc.codecs.vpx
import aiortc.rtcrtpreceiver
import numpy
import pytest
import pytest_asyncio
from aiohttp import web
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from aiortc.rtp import RTCP_PSFB_APP, AnyRtcpPacket, RtcpPsfbPacket, unpack_remb_fci
from aiortc.sdp import candidate_from_sdp
from av.audio.frame import AudioFrame
from av.video.frame import VideoFrame
from prometheus_client import REGISTRY

from ingress_pod.inputs.base import InputInfo
from ingress_pod.inputs.encoded import EncodedUnit
from ingress_pod.inputs.errors import InputError, NoMedia, Unsupported, no_media
from ingress_pod.inputs.handoff import DropOldestQueue
from ingress_pod.inputs.whip import FORWARD_QUEUE, TAKES, NegotiationFailed, WhipInput, WhipOptions

LOOPBACK = "127.0.0.1"
WIDTH, HEIGHT = 320, 240
WAIT = 5.0  # seconds any one step may take (ICE and DTLS on loopback take well under one)
STOP_WAIT = 2.0  # for a stopped input to end

T = TypeVar("T")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's ICE candidates on 127.0.0.1 only, as WhipInput makes its own; and what
    WhipInput patches in aioice and aiortc for its pod's one session restored after the test."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [LOOPBACK])
    monkeypatch.setattr(aiortc.rtcrtpreceiver, "get_decoder", aiortc.codecs.get_decoder)


@dataclass
class Channel:
    """The front door's side of a session channel: the offer line first, then the lines a test
    queues (None closes the channel); `answers` gets what the pod posts back."""

    offer: str = ""
    answer_status: int = 204
    url: str = ""
    lines: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    answers: asyncio.Queue[dict[str, str]] = field(default_factory=asyncio.Queue)

    async def session(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the pod left first
            await resp.write(json.dumps({"offer": self.offer}).encode() + b"\n")
            while (line := await self.lines.get()) is not None:
                await resp.write(json.dumps(line).encode() + b"\n")
            await resp.write_eof()
        return resp

    async def answer(self, request: web.Request) -> web.Response:
        self.answers.put_nowait(await request.json())
        return web.Response(status=self.answer_status)

    async def next_answer(self) -> dict[str, str]:
        async with asyncio.timeout(WAIT):
            return await self.answers.get()


@pytest_asyncio.fixture
async def channel() -> AsyncIterator[Channel]:
    served = Channel()
    app = web.Application()
    app.router.add_get("/sessions/WH_test/token", served.session)
    app.router.add_post("/sessions/WH_test/token/answer", served.answer)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0).start()
    served.url = f"http://{LOOPBACK}:{runner.addresses[0][1]}/sessions/WH_test/token"
    try:
        yield served
    finally:
        served.lines.put_nowait(None)
        await runner.cleanup()


class Pattern(VideoStreamTrack):
    """Frames of changing grey at 30 fps, WIDTHxHEIGHT until `size` is changed."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.size = (WIDTH, HEIGHT)

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        self.count += 1
        frame = VideoFrame.from_ndarray(
            numpy.full((self.size[1], self.size[0], 3), self.count * 7 % 256, numpy.uint8), format="rgb24"
        )
        frame.pts, frame.time_base = pts, time_base
        return frame


def client(video: str | None = "VP8", audio: str | None = "opus") -> RTCPeerConnection:
    """A WHIP client sending Pattern video in `video` and aiortc's silence in `audio` (codec
    names as in SDP; None: no such track)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind, codec, track in (("video", video, Pattern()), ("audio", audio, AudioStreamTrack())):
        if codec is None:
            continue
        capabilities = RTCRtpSender.getCapabilities(kind)
        assert capabilities is not None
        transceiver = pc.addTransceiver(track, direction="sendonly")
        transceiver.setCodecPreferences([c for c in capabilities.codecs if c.name in (codec, "rtx")])
    return pc


async def make_offer(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


@contextlib.asynccontextmanager
async def whip_input(
    channel: Channel, pc: RTCPeerConnection, pass_through: bool = True, audio_channels: int = 2
) -> AsyncIterator[WhipInput]:
    """A WhipInput on `channel`, started; `pc` closed and the input stopped (and ended) at the end."""
    source = WhipInput(
        WhipOptions(channel.url, LOOPBACK, pass_through, audio_channels, open_timeout=WAIT),
        asyncio.get_running_loop(),
    )
    source.start()
    try:
        yield source
    finally:
        source.stop()
        await pc.close()
        await asyncio.wait([source.ended], timeout=STOP_WAIT)
    assert source.ended.done(), "the input did not end once stopped"


@contextlib.asynccontextmanager
async def session(
    channel: Channel, pc: RTCPeerConnection, pass_through: bool = True, audio_channels: int = 2
) -> AsyncIterator[WhipInput]:
    """`pc`'s offer answered by a WhipInput over `channel`, the answer given to `pc`: media flows."""
    channel.offer = channel.offer or await make_offer(pc)
    async with whip_input(channel, pc, pass_through, audio_channels) as source:
        answer = await channel.next_answer()
        assert "sdp" in answer, answer
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        yield source


async def take(queue: DropOldestQueue[T], count: int) -> list[T]:
    """The next `count` items of a WhipInput queue, within WAIT seconds."""
    async with asyncio.timeout(WAIT):
        return [await queue.get() for _ in range(count)]


async def units(source: WhipInput, count: int) -> list[EncodedUnit]:
    """The next `count` pass-through video units."""
    taken = await take(source.video, count)
    assert all(isinstance(unit, EncodedUnit) for unit in taken), taken
    return [unit for unit in taken if isinstance(unit, EncodedUnit)]


async def opened(source: WhipInput) -> InputInfo:
    async with asyncio.timeout(WAIT):
        return await source.opened


async def ended(source: WhipInput, within: float = WAIT) -> InputError | None:
    async with asyncio.timeout(within):
        return await source.ended


@pytest.mark.parametrize(("codec", "mime_type"), [("VP8", "video/VP8"), ("H264", "video/H264")])
async def test_pass_through_forwards_encoded_units_from_a_keyframe(
    channel: Channel, codec: str, mime_type: str
) -> None:
    pc = client(video=codec)
    async with session(channel, pc) as source:
        forwarded = await units(source, 10)
        assert {(unit.codec, unit.width, unit.height) for unit in forwarded} == {(codec, WIDTH, HEIGHT)}
        assert forwarded[0].keyframe
        assert [unit.timestamp_us for unit in forwarded] == sorted(unit.timestamp_us for unit in forwarded)
        info = await opened(source)
        assert info.video is not None and info.audio is not None
        assert (info.video.codec, info.video.width, info.video.height) == (codec.lower(), WIDTH, HEIGHT)
        assert info.video.mime_type == mime_type
        assert (info.audio.codec, info.audio.sample_rate, info.audio.mime_type) == (
            "opus",
            48000,
            "audio/opus",
        )
        assert source.video_codec == codec and source.video_rates.rates()[0] > 0

        channel.lines.put_nowait(None)  # DELETE, or the client gone: the front door ends the channel
        assert await ended(source) is None


async def test_transcoding_yields_decoded_frames(channel: Channel) -> None:
    pc = client(audio=None)
    async with session(channel, pc, pass_through=False) as source:
        frames = await take(source.video, 5)
        assert all(isinstance(frame, VideoFrame) for frame in frames)
        assert {(frame.width, frame.height) for frame in frames} == {(WIDTH, HEIGHT)}
        info = await opened(source)  # video only: no wait for audio
        assert info.audio is None and info.video is not None and info.video.codec == "vp8"


@pytest.mark.parametrize("channels", [1, 2])
async def test_audio_is_resampled_for_the_room(channel: Channel, channels: int) -> None:
    pc = client(video=None)
    async with session(channel, pc, audio_channels=channels) as source:
        frames: list[AudioFrame] = await take(source.audio, 10)
        formats = {(f.format.name, f.sample_rate, f.layout.nb_channels) for f in frames}
        assert formats == {("s16", 48000, channels)}
        info = await opened(source)
        assert info.video is None and info.audio is not None
        assert (info.audio.channels, info.audio.sample_rate) == (2, 48000)  # as the client sent it
        assert source.audio_time > 0


def without_candidates(sdp: str) -> tuple[str, list[str]]:
    """`sdp` without its candidate lines, and those candidates (the first m-line's: BUNDLE)."""
    candidates = re.findall(r"^a=(candidate:[^\r\n]+)", sdp, re.M)
    stripped = re.sub(r"^a=(candidate:|end-of-candidates)[^\r\n]*\r\n", "", sdp, flags=re.M)
    return stripped, candidates


def assert_known_to_the_pod(source: WhipInput, candidates: list[str]) -> None:
    """The pod's ICE agent has these host candidates (`candidate:…` lines) as remote ones."""
    assert source._pc is not None
    ice = source._pc.getTransceivers()[0].receiver.transport.transport
    known = {(c.type, c.ip, c.port) for c in ice.getRemoteCandidates()}
    parsed = [candidate_from_sdp(line.removeprefix("candidate:")) for line in candidates]
    assert {("host", c.ip, c.port) for c in parsed} <= known, known


async def test_trickled_candidates_reach_the_pods_ice_agent(channel: Channel) -> None:
    pc = client(audio=None)
    channel.offer, candidates = without_candidates(await make_offer(pc))
    assert candidates and "a=candidate" not in channel.offer
    for candidate in [*candidates, ""]:  # "": a=end-of-candidates
        channel.lines.put_nowait({"candidate": candidate, "mid": "0"})
    async with session(channel, pc) as source:
        assert (await units(source, 1))[0].keyframe
        # ICE connects without them too (the pod learns the client's address from its checks, as a
        # peer-reflexive candidate): only the pod's agent tells that the trickled host ones arrived.
        assert_known_to_the_pod(source, candidates)


async def test_request_keyframe_brings_a_keyframe(channel: Channel) -> None:
    pc = client(audio=None)
    # aiortc's VP8 encoder makes a keyframe every 3000 frames unasked, and whenever the pod's
    # bandwidth estimate moves its bitrate: that estimate needs abs-send-time, left out here.
    channel.offer = re.sub(r"^a=extmap:\d+ \S+/abs-send-time\r\n", "", await make_offer(pc), flags=re.M)
    assert "abs-send-time" not in channel.offer
    async with session(channel, pc) as source:
        first, *deltas = await units(source, 15)
        assert first.keyframe and not any(unit.keyframe for unit in deltas)
        source.request_keyframe()
        async with asyncio.timeout(WAIT):
            while not (await units(source, 1))[0].keyframe:
                pass


def munge(sdp: str, codec: str, into: str) -> str:
    """`sdp` offering `into` where it offered `codec`."""
    return re.sub(rf"^(a=rtpmap:\d+ ){codec}/", rf"\g<1>{into}/", sdp, flags=re.M)


@pytest.mark.parametrize(
    ("video", "audio", "renamed", "error", "message"),
    [
        (None, "PCMU", None, Unsupported, f"unsupported codecs PCMU: {TAKES}"),
        ("VP8", None, "AV1", Unsupported, f"unsupported codecs AV1: {TAKES}"),
        (None, None, None, NegotiationFailed, "negotiation failed: the offer has no audio or video to send"),
    ],
    ids=["pcmu-audio", "unknown-video", "no-media"],
)
async def test_an_offer_it_cannot_answer(
    channel: Channel,
    video: str | None,
    audio: str | None,
    renamed: str | None,
    error: type[InputError],
    message: str,
) -> None:
    pc = client(video, audio)
    if video is None and audio is None:
        pc.createDataChannel("data")  # an offer with an application m-line only
    offer = await make_offer(pc)
    channel.offer = munge(offer, "VP8", renamed) if renamed else offer
    async with whip_input(channel, pc) as source:
        assert await channel.next_answer() == {"error": message}
        outcome = await ended(source)
    assert type(outcome) is error and outcome.message == message


async def test_a_client_that_gave_up_before_the_answer_ends_the_input(channel: Channel) -> None:
    channel.answer_status = 410  # the front door's reply when the client left meanwhile
    pc = client(audio=None)
    channel.offer = await make_offer(pc)
    async with whip_input(channel, pc) as source:
        assert "sdp" in await channel.next_answer()
        assert await ended(source, within=STOP_WAIT) is None


@pytest.mark.parametrize(
    ("bps", "target"),
    [
        (400_000, 400_000),
        # aiortc's VP8 encoder clamps its target to its floor (250 kbit/s).
        (150_000, aiortc.codecs.vpx.MIN_BITRATE),
    ],
)
async def test_limit_bitrate_lowers_the_clients_encoder_bitrate(
    channel: Channel, monkeypatch: pytest.MonkeyPatch, bps: int, target: int
) -> None:
    pc = client(audio=None)
    sender = pc.getTransceivers()[0].sender
    rembs: list[int] = []
    remb_handled = asyncio.Event()
    handle = sender._handle_rtcp_packet

    async def handle_and_note(packet: AnyRtcpPacket) -> None:
        await handle(packet)
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            rembs.append(unpack_remb_fci(packet.fci)[0])
            remb_handled.set()

    monkeypatch.setattr(sender, "_handle_rtcp_packet", handle_and_note)
    async with session(channel, pc) as source:
        await units(source, 1)
        encoder = sender._RTCRtpSender__encoder  # type: ignore[attr-defined]
        # The answer leaves out abs-send-time, so the pod's own estimate sends no REMB of its own.
        assert encoder.target_bitrate == aiortc.codecs.vpx.DEFAULT_BITRATE and not rembs
        source.limit_bitrate(bps)
        async with asyncio.timeout(WAIT):
            await remb_handled.wait()
        assert rembs == [bps]
        assert encoder.target_bitrate == target


async def test_the_input_state_follows_the_clients_picture_size(channel: Channel) -> None:
    pc = client(audio=None)
    pattern = pc.getTransceivers()[0].sender.track
    assert isinstance(pattern, Pattern)
    async with session(channel, pc) as source:
        first = await opened(source)
        assert first.video is not None and (first.video.width, first.video.height) == (WIDTH, HEIGHT)
        pattern.size = (WIDTH // 2, HEIGHT // 2)  # the encoder restarts with a keyframe at the new size
        async with asyncio.timeout(WAIT):
            while (await units(source, 1))[0].width != WIDTH // 2:
                pass
        now = source.info().video
        assert now is not None and (now.width, now.height) == (WIDTH // 2, HEIGHT // 2)


NOTHING_TO_SEND = "negotiation failed: the offer has no audio or video to send"


def directions(*replacements: str) -> Callable[[str], str]:
    """An offer's `a=sendonly` lines made `replacements`, in order."""

    def munge(offer: str) -> str:
        for replacement in replacements:
            offer = offer.replace("a=sendonly", f"a={replacement}", 1)
        assert "a=sendonly" not in offer
        return offer

    return munge


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What was logged at ERROR, or with a traceback."""
    return [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]


@pytest.mark.parametrize(
    ("munge", "message"),
    [
        (
            lambda offer: re.sub(r"^a=setup:\S+", "a=setup:bogus", offer, flags=re.M),
            "negotiation failed: KeyError",
        ),
        (
            lambda offer: re.sub(r"^(a=rtpmap:\d+ VP8)/90000", r"\1", offer, flags=re.M),
            "negotiation failed: IndexError",
        ),
        (
            lambda offer: re.sub(r"^m=video \d+", "m=video x", offer, flags=re.M),
            "negotiation failed: AssertionError",
        ),
        (directions("recvonly", "recvonly"), NOTHING_TO_SEND),
        (directions("inactive", "inactive"), NOTHING_TO_SEND),
        (directions("recvonly", "inactive"), NOTHING_TO_SEND),
    ],
    ids=[
        "setup-bogus",
        "rtpmap-without-clock",
        "port-not-a-number",
        "recvonly",
        "inactive",
        "recvonly-inactive",
    ],
)
async def test_an_offer_aiortc_cannot_take_fails_negotiation(
    channel: Channel, caplog: pytest.LogCaptureFixture, munge: Callable[[str], str], message: str
) -> None:
    # The client's doing, not a bug: the client hears why (422) and no traceback is logged.
    pc = client()
    channel.offer = munge(await make_offer(pc))
    async with whip_input(channel, pc) as source:
        posted = await channel.next_answer()
        outcome = await ended(source)
    assert type(outcome) is NegotiationFailed and outcome.message.startswith(message), outcome
    assert posted == {"error": outcome.message}
    assert errors(caplog) == []


async def test_a_sendrecv_offer_is_answered(channel: Channel) -> None:
    # What a client sends may also be what it would receive: the pod only receives.
    pc = client()
    channel.offer = directions("sendrecv", "sendrecv")(await make_offer(pc))
    async with whip_input(channel, pc) as source:
        answer = await channel.next_answer()
        assert answer["sdp"].count("a=recvonly") == 2, answer
        assert source._expected == {"video", "audio"}


async def test_a_malformed_trickled_candidate_is_skipped(
    channel: Channel, caplog: pytest.LogCaptureFixture
) -> None:
    pc = client(audio=None)
    channel.offer, candidates = without_candidates(await make_offer(pc))
    malformed = [
        "candidate:1 1 udp 2130706431 1.2.3.4 5000",  # no type: aiortc asserts
        "candidate:1 1 udp high 1.2.3.4 5000 typ host",
        "candidate:",
    ]
    for candidate in [*malformed, *candidates, ""]:
        channel.lines.put_nowait({"candidate": candidate, "mid": "0"})
    async with session(channel, pc) as source:
        assert (await units(source, 1))[0].keyframe
        # The client's good candidates, trickled after the bad ones, still reached the pod's agent.
        assert_known_to_the_pod(source, candidates)
        assert not source.ended.done()
    assert errors(caplog) == []


def no_connection(timeout: float) -> str:
    return (
        f"no WebRTC connection within {timeout:g} s: the client's UDP did not reach the pod "
        "(blocked, or frontdoor.whip.advertise is not an address the client can reach)"
    )


async def test_no_media_names_the_webrtc_connection_until_it_is_up(channel: Channel) -> None:
    options = WhipOptions(channel.url, LOOPBACK, pass_through=True, open_timeout=WAIT)
    unstarted = WhipInput(options, asyncio.get_running_loop()).no_media(1.5)
    assert type(unstarted) is NoMedia and unstarted.message == no_connection(1.5)

    pc = client(audio=None)
    channel.offer = await make_offer(pc)
    async with whip_input(channel, pc) as source:
        answer = await channel.next_answer()
        # Answered, but the client never takes the answer: no connection.
        assert source._pc is not None and source._pc.connectionState != "connected"
        assert source.no_media(1.5).message == no_connection(1.5)

        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await units(source, 1)
        connected = source.no_media(1.5)
        assert type(connected) is NoMedia and connected.message == no_media(1.5).message


def dropped(reason: str) -> float:
    """Video frames dropped for `reason` so far."""
    labels = {"kind": "video", "reason": reason}
    return REGISTRY.get_sample_value("lki_media_frames_dropped_total", labels) or 0.0


def encoded(timestamp_us: int, keyframe: bool = False) -> EncodedUnit:
    return EncodedUnit("VP8", bytes([0 if keyframe else 1]), keyframe, WIDTH, HEIGHT, timestamp_us)


async def test_a_pass_through_overflow_clears_the_queue_until_a_keyframe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = WhipInput(WhipOptions("http://127.0.0.1:9/unused", LOOPBACK, True), asyncio.get_running_loop())
    requests: list[None] = []
    monkeypatch.setattr(source, "request_keyframe", lambda: requests.append(None))
    late, waited = dropped("late"), dropped("keyframe_wait")
    for at in range(FORWARD_QUEUE):
        source._put_video(encoded(at, keyframe=at == 0))
    assert len(source.video) == FORWARD_QUEUE and requests == []

    # One too many: the oldest goes, and with it everything after it (none of it would decode).
    source._put_video(encoded(FORWARD_QUEUE))
    assert len(source.video) == 0 and len(requests) == 1
    assert dropped("late") - late == FORWARD_QUEUE + 1
    for at in range(FORWARD_QUEUE + 1, FORWARD_QUEUE + 4):
        source._put_video(encoded(at))
    assert len(source.video) == 0 and dropped("keyframe_wait") - waited == 3

    source._put_video(encoded(100, keyframe=True))
    source._put_video(encoded(101))
    assert [(unit.timestamp_us, unit.keyframe) for unit in await units(source, 2)] == [
        (100, True),
        (101, False),
    ]
    assert len(requests) == 1


async def test_after_a_real_overflow_a_keyframe_comes_first(channel: Channel) -> None:
    pc = client(audio=None)
    async with session(channel, pc) as source:
        assert (await units(source, 1))[0].keyframe
        late = dropped("late")
        # Left unread, the queue fills in a second (30 fps) and the next frame overflows it.
        for _ in range(int(WAIT / 0.05)):
            if dropped("late") > late:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the queue did not overflow in {WAIT:g} s")
        # Not the oldest delta frames of the queue: the keyframe the overflow asked the client for.
        assert (await units(source, 1))[0].keyframe


async def test_drop_oldest_queue_clear() -> None:
    queue: DropOldestQueue[int] = DropOldestQueue(asyncio.get_running_loop(), 3)
    for item in range(5):
        queue.put(item)
    assert queue.clear() == 3 and len(queue) == 0
    assert queue.clear() == 0
