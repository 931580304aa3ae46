"""WHIP input: the media pod's end of a browser's or encoder's WebRTC session, with aiortc.

The front door takes the client's HTTP requests and hands this pod the SDP offer (and any
trickled candidates) over a session channel, a stream of JSON lines; the pod answers through
the same channel. The channel ending (DELETE, the client or the front door gone) ends the input;
so does ICE or DTLS failing. Media then flows straight from the client to this pod over UDP
(or through the front door's UDP relay, docs/media.md "WHIP").

Video either decodes (transcoding: frames take the RTMP path) or stays as the client encoded it
(pass-through: `EncodedUnit`s, forwarded as they are). aiortc decodes every track it receives
in a thread of its own; `_Tap` stands in for its decoders, to count what arrives and, for
pass-through video, to hand on the encoded frame instead of decoding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
import aioice.ice
import aiortc.codecs
import aiortc.rtcrtpreceiver
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci
from aiortc.sdp import SessionDescription, candidate_from_sdp
from av.audio.frame import AudioFrame
from av.video.frame import VideoFrame

from ingress_pod import metrics
from ingress_pod.inputs import jitter
from ingress_pod.inputs.answer import shape
from ingress_pod.inputs.base import VIDEO_QUEUE, AudioInfo, InputInfo, MediaInput, Resampler, VideoInfo
from ingress_pod.inputs.encoded import EncodedUnit, FrameSizer
from ingress_pod.inputs.errors import InputError, NoMedia, Unreachable, Unsupported

log = logging.getLogger(__name__)
# aioice logs every candidate pair's every state change at INFO: a dozen lines per session.
logging.getLogger("aioice").setLevel(logging.WARNING)

# What both modes take: aiortc receives VP8 and H.264 (constrained baseline), which LiveKit's
# encoded source can forward and aiortc can decode; of its audio codecs only Opus goes to a room.
AUDIO_CODECS = ("opus",)
TAKES = "WHIP takes VP8 or H.264 video and Opus audio"
# Once the first track has media, the other kind the offer announced gets this long to start.
OTHER_KIND_GRACE = 2.0
# Encoded frames can't be dropped one by one (what follows would not decode): pass-through queues
# about a second's worth, and after an overflow forwards nothing until a requested keyframe.
FORWARD_QUEUE = 30
# LiveKit repeats a keyframe request until one arrives; the client gets at most one per interval.
KEYFRAME_REQUEST_INTERVAL = 0.25


class NegotiationFailed(InputError):
    """The client's offer could not be answered."""


@dataclass(frozen=True)
class WhipOptions:
    """One WHIP session as the pod serves it."""

    channel_url: str  # the front door's session channel
    bind_ip: str  # the pod's address: its only ICE host candidate
    pass_through: bool
    audio_channels: int = 2
    open_timeout: float = 10.0


class WhipInput(MediaInput[VideoFrame | EncodedUnit]):
    """A WebRTC session with a WHIP client; pass-through video arrives as `EncodedUnit`s."""

    def __init__(self, options: WhipOptions, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, FORWARD_QUEUE if options.pass_through else VIDEO_QUEUE)
        self.options = options
        self.video_codec = ""  # as negotiated: "VP8" or "H264"
        self._pc: RTCPeerConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # per track, and RTCP sends
        self._expected: set[str] = set()
        self._video_info: VideoInfo | None = None
        self._audio_info: AudioInfo | None = None
        self._resampler = Resampler(options.audio_channels)
        self._awaiting_keyframe = False
        self._closing = False
        self._last_keyframe_request = -KEYFRAME_REQUEST_INTERVAL

    def start(self) -> None:
        """Fetch the offer, answer it, and receive until the session ends."""
        self._task = self._loop.create_task(self._run())

    def stop(self) -> None:
        """End the WebRTC session (the session is over)."""
        if self._task is not None:
            self._task.cancel()

    def request_keyframe(self) -> None:
        """Ask the client for a keyframe (RTCP PLI): the room has a subscriber that needs one."""
        receiver = self._receiver("video")
        if receiver is None:
            return
        now = self._loop.time()
        if now - self._last_keyframe_request < KEYFRAME_REQUEST_INTERVAL:
            return
        self._last_keyframe_request = now
        # The video's stream and its retransmission stream (RTX) are both sources here; a PLI
        # for the RTX one is ignored, so both get one. aiortc sends PLIs itself after a loss:
        # this is the same call, for the room's requests.
        for source in receiver.getSynchronizationSources():
            self._spawn(receiver._send_rtcp_pli(source.source))

    def limit_bitrate(self, bps: int) -> None:
        """Cap the client's video bitrate (RTCP REMB) at what the room's side can carry: past
        it, frames would queue in the pod on their way to LiveKit."""
        receiver = self._receiver("video")
        if receiver is None:
            return
        ssrcs = [source.source for source in receiver.getSynchronizationSources()]
        if ssrcs:
            remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=0, media_ssrc=0, fci=pack_remb_fci(bps, ssrcs))
            self._spawn(receiver._send_rtcp(remb))

    def no_media(self, timeout: float) -> InputError:
        """Why nothing arrived: the connection never came up, or it came up without media."""
        if self._pc is None or self._pc.connectionState != "connected":
            return NoMedia(
                f"no WebRTC connection within {timeout:g} s: the client's UDP did not reach the pod "
                "(blocked, or frontdoor.whip.advertise is not an address the client can reach)"
            )
        return super().no_media(timeout)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _receiver(self, kind: str) -> RTCRtpReceiver | None:
        if self._pc is None:
            return None
        return next((r for r in self._pc.getReceivers() if r.track and r.track.kind == kind), None)

    def _end(self, outcome: InputError | None) -> None:
        if not self.ended.done():
            self.ended.set_result(outcome)

    async def _run(self) -> None:
        outcome: InputError | None = None
        try:
            async with aiohttp.ClientSession() as http:
                outcome = await self._serve(http)
        except asyncio.CancelledError:
            pass
        except InputError as err:
            outcome = err
        except aiohttp.ClientError as err:
            outcome = Unreachable(f"lost the front door's session channel: {err}")
        except Exception as err:  # a bug, not the client's doing: keep the traceback
            log.exception("WHIP input failed")
            outcome = InputError(f"internal error in the WHIP session: {err}")
        finally:
            self._closing = True
            for task in list(self._tasks):
                task.cancel()
            if self._pc is not None:
                await self._pc.close()
        self._end(outcome)

    async def _serve(self, http: aiohttp.ClientSession) -> InputError | None:
        channel = self.options.channel_url
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.options.open_timeout)
        async with http.get(channel, timeout=timeout) as resp:
            if resp.status != 200:
                raise Unreachable(f"front door refused the session channel: HTTP {resp.status}")
            offer = json.loads(await resp.content.readline() or b"{}").get("offer")
            if not isinstance(offer, str):
                raise Unreachable("the front door's session channel ended before the offer")
            try:
                answer = await self._answer(offer)
            except InputError as err:
                async with http.post(f"{channel}/answer", json={"error": err.message}):
                    raise
            async with http.post(f"{channel}/answer", json={"sdp": answer}) as posted:
                if posted.status != 204:
                    return None  # the client gave up waiting: nothing to serve
            log.info("WHIP answer sent", extra={"kinds": sorted(self._expected)})
            async for line in resp.content:
                await self._event(json.loads(line))
        log.info("WHIP session closed by the client or the front door")
        return None

    async def _answer(self, offer: str) -> str:
        """The SDP answer to `offer`: VP8/H.264 and Opus, candidates on the pod's address."""
        try:
            return await self._negotiate(offer)
        except InputError:
            raise
        except Exception as err:  # aiortc raises what its SDP parsing hits (KeyError, AssertionError, …)
            raise NegotiationFailed(f"negotiation failed: {type(err).__name__} {err}".rstrip()) from None

    async def _negotiate(self, offer: str) -> str:
        parsed = SessionDescription.parse(offer)
        # What the client sends (aiortc refuses a section without a direction further on).
        self._expected = {
            m.kind
            for m in parsed.media
            if m.kind in ("audio", "video") and m.direction in ("sendonly", "sendrecv")
        }
        if not self._expected:
            raise NegotiationFailed("negotiation failed: the offer has no audio or video to send")
        _bind_candidates(self.options.bind_ip)
        _install_tap(self)
        pc = self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_connection_state)
        # Video takes the client's first choice among aiortc's codecs (VP8, H.264: both modes
        # take both); audio is Opus only, of aiortc's four.
        if "video" in self._expected:
            jitter.install(pc.addTransceiver("video", direction="recvonly").receiver, "video")
        if "audio" in self._expected:
            audio = pc.addTransceiver("audio", direction="recvonly")
            audio.setCodecPreferences(_opus())
            jitter.install(audio.receiver, "audio")
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        except OperationError:
            offered = sorted({c.name for m in parsed.media for c in m.rtp.codecs if c.name != "rtx"})
            raise Unsupported(f"unsupported codecs {', '.join(offered)}: {TAKES}") from None
        except (ValueError, InvalidAccessError, InvalidStateError) as err:
            raise NegotiationFailed(f"negotiation failed: {err}") from None
        await pc.setLocalDescription(await pc.createAnswer())
        shaped, layer = shape(pc.localDescription.sdp, offer)
        if layer is not None:
            log.info("client offers simulcast: taking its best layer", extra={"rid": layer})
        return shaped

    async def _event(self, event: dict[str, Any]) -> None:
        """A trickled candidate from the client (PATCH); an empty one ends its candidates."""
        if self._pc is None or "candidate" not in event:
            return
        line = event["candidate"]
        # A candidate aiortc can't parse or use (TCP, mDNS, a field out of range) is skipped:
        # the client's other candidates may do.
        with contextlib.suppress(ValueError, AssertionError, IndexError):
            candidate = (
                candidate_from_sdp(line.removeprefix("a=").removeprefix("candidate:")) if line else None
            )
            if candidate is not None:
                # Media is bundled: a candidate without a mid belongs to the first section.
                candidate.sdpMid = event.get("mid")
                candidate.sdpMLineIndex = None if candidate.sdpMid else 0
            await self._pc.addIceCandidate(candidate)

    def _on_connection_state(self) -> None:
        assert self._pc is not None
        state = self._pc.connectionState
        log.info("WebRTC connection state", extra={"state": state})
        # As LiveKit's: a client that went away leaves the ingress INACTIVE, not in error. (While
        # closing, `_run` itself closed the connection: cancelling it would cut its own end short.)
        if state in ("failed", "closed") and self._task is not None and not self._closing:
            self._task.cancel()

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._spawn(self._receive(track))

    async def _receive(self, track: MediaStreamTrack) -> None:
        first = True
        with contextlib.suppress(MediaStreamError):
            while True:
                frame: Any = await track.recv()  # a VideoFrame, an EncodedUnit (see _Tap) or an AudioFrame
                if track.kind == "video":
                    self._put_video(frame)
                    info = self._video_info
                    if info is None or (info.width, info.height) != (frame.width, frame.height):
                        # A browser changes its picture size with its bandwidth and CPU.
                        self._video_info = VideoInfo(self.video_codec.lower(), frame.width, frame.height, 0.0)
                else:
                    assert isinstance(frame, AudioFrame)
                    if first:
                        self._audio_info = AudioInfo("opus", frame.layout.nb_channels, frame.sample_rate)
                    for out in self._resampler.resample(frame):
                        if out.time is not None:
                            self.audio_time = out.time
                        self.audio.put(out)
                if first:
                    first = False
                    self._spawn(self._opening())

    def info(self) -> InputInfo:
        """The streams now: the picture size follows the client's."""
        opened = self.opened.result()
        return InputInfo(self._video_info if opened.video else None, opened.audio)

    def _put_video(self, frame: VideoFrame | EncodedUnit) -> None:
        if isinstance(frame, EncodedUnit):
            if self._awaiting_keyframe and not frame.keyframe:
                metrics.FRAMES_DROPPED.labels("video", "keyframe_wait").inc()
                return
            self._awaiting_keyframe = False
        if self.video.put(frame):
            metrics.FRAMES_DROPPED.labels("video", "late").inc()
            if isinstance(frame, EncodedUnit):
                # What is queued follows the frame just dropped: none of it would decode.
                metrics.FRAMES_DROPPED.labels("video", "late").inc(self.video.clear())
                self._awaiting_keyframe = True
                self.request_keyframe()

    async def _opening(self) -> None:
        """`opened` once every announced kind has media, or the grace after the first ran out."""
        if self.opened.done():
            return
        if {k for k, i in (("video", self._video_info), ("audio", self._audio_info)) if i} != self._expected:
            await asyncio.sleep(OTHER_KIND_GRACE)
        if not self.opened.done():
            self.opened.set_result(InputInfo(self._video_info, self._audio_info))


def _opus() -> list[Any]:
    """aiortc's Opus capability, as the only audio codec an answer may pick."""
    capabilities = RTCRtpReceiver.getCapabilities("audio")
    assert capabilities is not None
    return [c for c in capabilities.codecs if c.name in AUDIO_CODECS]


def _bind_candidates(address: str) -> None:
    """Offer ICE host candidates on the pod's own address only: aioice would otherwise list
    every interface (and never loopback, which is where the local stack puts pods)."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [address]


class _Tap:
    """Stands in for aiortc's decoder of one track (called from its decoder thread): counts the
    encoded frames into the input's rate windows, then decodes them, or, for pass-through
    video, hands them on as they are."""

    def __init__(self, source: WhipInput, codec: RTCRtpCodecParameters) -> None:
        self.kind = codec.mimeType.split("/")[0]
        if self.kind == "video":
            source.video_codec = codec.name
        self.clock = codec.clockRate
        self.rates = source.video_rates if self.kind == "video" else source.audio_rates
        forward = self.kind == "video" and source.options.pass_through
        self.sizer = FrameSizer(codec.name) if forward else None
        self.decoder = None if forward else aiortc.codecs.get_decoder(codec)
        self.decoded = metrics.FRAMES_DECODED.labels(self.kind)

    def decode(self, encoded: Any) -> list[Any]:
        self.rates.add(encoded.timestamp / self.clock, len(encoded.data))
        if self.sizer is None:
            assert self.decoder is not None
            frames = self.decoder.decode(encoded)
            self.decoded.inc(len(frames))
            return frames
        unit = self.sizer.unit(encoded.data, encoded.timestamp)
        return [unit] if unit else []


def _install_tap(source: WhipInput) -> None:
    """Route aiortc's decoder look-up to `_Tap` (one session per pod, so one input to tap)."""
    setattr(aiortc.rtcrtpreceiver, "get_decoder", lambda codec: _Tap(source, codec))  # noqa: B010
