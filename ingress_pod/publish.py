"""Publishing into a LiveKit room with the rtc SDK: the participant's token, its two tracks,
and the conversion of decoded frames into the SDK's buffers.

The SDK encodes what it is given: one I420 picture at the top layer's size per video frame
(it scales the lower simulcast layers itself) and s16 PCM at 48 kHz for Opus.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from av.audio.frame import AudioFrame
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter
from livekit import api, rtc

# Not re-exported by livekit 1.2.1: AudioEncoding (the Opus bitrate, docs/media-facts.md), PublishTrackError.
from livekit.rtc._proto import room_pb2
from livekit.rtc.participant import PublishTrackError

from ingress_operator.models import AudioOptions, TrackInfo, VideoOptions
from ingress_operator.presets import AudioPlan, VideoPlan
from ingress_pod.inputs.encoded import EncodedUnit

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
# livekit/protocol's participant attribute names for an ingress (AttrIngressID, AttrIngressResourceID).
ATTR_INGRESS_ID = "ingress.ingressID"
ATTR_RESOURCE_ID = "ingress.resourceID"
TOKEN_TTL = timedelta(hours=24)  # as LiveKit's BuildIngressToken

# An unset source is published as the camera / microphone, as LiveKit's Go SDK does for ingress.
_VIDEO_SOURCES = {
    "UNKNOWN": ("CAMERA", rtc.TrackSource.SOURCE_CAMERA),
    "CAMERA": ("CAMERA", rtc.TrackSource.SOURCE_CAMERA),
    "SCREEN_SHARE": ("SCREEN_SHARE", rtc.TrackSource.SOURCE_SCREENSHARE),
}
_AUDIO_SOURCES = {
    "UNKNOWN": ("MICROPHONE", rtc.TrackSource.SOURCE_MICROPHONE),
    "MICROPHONE": ("MICROPHONE", rtc.TrackSource.SOURCE_MICROPHONE),
    "SCREEN_SHARE_AUDIO": ("SCREEN_SHARE_AUDIO", rtc.TrackSource.SOURCE_SCREENSHARE_AUDIO),
}
_VIDEO_CODECS = {"H264": rtc.VideoCodec.H264, "VP8": rtc.VideoCodec.VP8}
_FRAME_TYPES = {True: rtc.EncodedFrameType.ENCODED_FRAME_KEY, False: rtc.EncodedFrameType.ENCODED_FRAME_DELTA}


# The SDK's connect errors quote the whole access token: never let one reach a status or a log.
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")


def redact_tokens(text: str) -> str:
    """`text` with any JWT replaced by a placeholder."""
    return _JWT.sub("<token>", text)


class JoinError(Exception):
    """The room could not be joined."""


class PublishError(Exception):
    """A track could not be published."""


@dataclass(frozen=True)
class Participant:
    """Who publishes: from the ingress spec and the session."""

    room: str
    identity: str
    name: str
    metadata: str
    ingress_id: str
    resource_id: str


def ingress_token(api_key: str, api_secret: str, who: Participant) -> str:
    """A join token as LiveKit's ingress makes it: kind INGRESS, publish-only, with the ingress
    attributes (the session's resource id included: it is known before joining here)."""
    return (
        api.AccessToken(api_key, api_secret)
        .with_identity(who.identity)
        .with_name(who.name)
        .with_metadata(who.metadata)
        .with_kind("ingress")
        .with_ttl(TOKEN_TTL)
        .with_attributes({ATTR_INGRESS_ID: who.ingress_id, ATTR_RESOURCE_ID: who.resource_id})
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room=who.room,
                can_publish=True,
                can_subscribe=False,
                can_update_own_metadata=True,
            )
        )
        .to_jwt()
    )


class I420Converter:
    """Decoded pictures → one tight I420 buffer at the output size.

    One persistent reformatter keeps its scaler context between frames; a picture already at
    the output size and format skips it. The one copy left packs PyAV's padded planes into the
    single buffer the SDK takes.
    """

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self._reformatter = VideoReformatter()
        luma = width * height
        chroma_w, chroma_h = (width + 1) // 2, (height + 1) // 2
        self._planes = (
            (0, width, height),
            (luma, chroma_w, chroma_h),
            (luma + chroma_w * chroma_h, chroma_w, chroma_h),
        )
        self._size = luma + 2 * chroma_w * chroma_h

    def convert(self, frame: VideoFrame) -> rtc.VideoFrame:
        """The SDK frame for `frame`, scaled to the output size."""
        if (frame.width, frame.height, frame.format.name) != (self.width, self.height, "yuv420p"):
            # One scaler thread: swscale's own threads cost more in hand-offs than they save here.
            frame = self._reformatter.reformat(frame, self.width, self.height, "yuv420p", threads=1)
        buf = bytearray(self._size)
        out = np.frombuffer(buf, dtype=np.uint8)
        for plane, (offset, w, h) in zip(frame.planes, self._planes, strict=True):
            src = np.frombuffer(memoryview(plane), dtype=np.uint8, count=plane.line_size * h).reshape(
                h, plane.line_size
            )
            out[offset : offset + w * h].reshape(h, w)[:] = src[:, :w]
        return rtc.VideoFrame(self.width, self.height, rtc.VideoBufferType.I420, buf)


def audio_frame(frame: AudioFrame) -> rtc.AudioFrame:
    """The SDK frame for a packed s16 frame (as the input's resampler makes them)."""
    channels = frame.layout.nb_channels
    size = frame.samples * channels * 2
    return rtc.AudioFrame(
        bytes(memoryview(frame.planes[0])[:size]), frame.sample_rate, channels, frame.samples
    )


@dataclass(frozen=True)
class VideoOutput:
    """A published video track: where its frames go, how they are converted, its status entry."""

    source: rtc.VideoSource
    converter: I420Converter
    info: TrackInfo


@dataclass(frozen=True)
class EncodedVideoOutput:
    """A published pass-through video track: the client's frames go in as they are."""

    source: rtc.EncodedVideoSource
    info: TrackInfo

    def send(self, unit: EncodedUnit) -> bool:
        """Forward one frame; False when the SDK refused it (a codec or size it can't take)."""
        return self.source.capture_frame(
            rtc.EncodedVideoFrame(
                unit.data,
                unit.width,
                unit.height,
                _VIDEO_CODECS[unit.codec],
                _FRAME_TYPES[unit.keyframe],
                unit.timestamp_us,
            )
        )


@dataclass(frozen=True)
class AudioOutput:
    """A published audio track: where its frames go, its status entry."""

    source: rtc.AudioSource
    info: TrackInfo


class Publisher:
    """The session's participant in its room: join, publish one video and one audio track,
    leave. `disconnected` resolves with the reason if the room drops us."""

    def __init__(self) -> None:
        self.room = rtc.Room()
        self.disconnected: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._sources: list[rtc.VideoSource | rtc.EncodedVideoSource | rtc.AudioSource] = []
        self.room.on("disconnected", self._on_disconnected)

    def _on_disconnected(self, reason: int) -> None:
        if not self.disconnected.done():
            self.disconnected.set_result(rtc.DisconnectReason.Name(reason))  # type: ignore[arg-type]

    async def join(self, url: str, token: str, deadline: float) -> str:
        """Connect within `deadline` seconds; returns the room's sid. Raises JoinError with
        LiveKit's reason."""
        try:
            await self.room.connect(
                url, token, rtc.RoomOptions(auto_subscribe=False, dynacast=True, connect_timeout=deadline)
            )
            return await asyncio.wait_for(self.room.sid, deadline)
        except (rtc.ConnectError, RuntimeError, TimeoutError) as err:
            raise JoinError(redact_tokens(str(err)) or type(err).__name__) from None

    async def publish_video(self, plan: VideoPlan, options: VideoOptions | None) -> VideoOutput:
        """Publish the video track at the plan's top layer (the SDK derives the lower layers)."""
        top = plan.top
        video = rtc.VideoSource(top.width, top.height)
        info = await self._publish_video(
            video,
            options,
            rtc.TrackPublishOptions(
                simulcast=len(plan.layers) > 1,
                video_codec=_VIDEO_CODECS[plan.codec],
                video_encoding=rtc.VideoEncoding(max_bitrate=top.bitrate, max_framerate=plan.frame_rate),
                # Under CPU or bandwidth pressure libwebrtc would otherwise shrink the layers below
                # the preset's sizes; an ingress keeps them and drops frames instead.
                degradation_preference=rtc.DegradationPreference.MAINTAIN_RESOLUTION.value,
            ),
            (plan.codec, top.width, top.height),
        )
        return VideoOutput(video, I420Converter(top.width, top.height), info)

    async def publish_encoded_video(
        self, first: EncodedUnit, options: VideoOptions | None
    ) -> EncodedVideoOutput:
        """Publish a track of the client's own encoded video, one layer, as `first` is."""
        video = rtc.EncodedVideoSource(first.width, first.height)
        info = await self._publish_video(
            video,
            options,
            rtc.TrackPublishOptions(
                simulcast=False,
                video_codec=_VIDEO_CODECS[first.codec],
                video_encoder=rtc.VideoEncoderBackend.ENCODER_BACKEND_PRE_ENCODED,
            ),
            (first.codec, first.width, first.height),
        )
        return EncodedVideoOutput(video, info)

    async def _publish_video(
        self,
        video: rtc.VideoSource | rtc.EncodedVideoSource,
        options: VideoOptions | None,
        publish: rtc.TrackPublishOptions,
        shape: tuple[str, int, int],
    ) -> TrackInfo:
        """Publish a video track of `video` with the ingress's name and source; its status entry
        (`shape`: codec, width, height)."""
        source_name, publish.source = _VIDEO_SOURCES[options.source if options else "UNKNOWN"]
        self._sources.append(video)
        track = rtc.LocalVideoTrack.create_video_track((options and options.name) or "", video)
        publication = await self._publish(track, publish)
        codec, width, height = shape
        return TrackInfo(
            sid=publication.sid,
            type="VIDEO",
            name=publication.name,
            source=source_name,
            mime_type=publication.mime_type or f"video/{codec}",
            width=width,
            height=height,
            simulcast=publish.simulcast,
        )

    async def publish_audio(self, plan: AudioPlan, options: AudioOptions | None) -> AudioOutput:
        """Publish the audio track (Opus at the plan's bitrate; RED off, as LiveKit's ingress)."""
        source_name, source = _AUDIO_SOURCES[options.source if options else "UNKNOWN"]
        audio = rtc.AudioSource(SAMPLE_RATE, plan.channels)
        self._sources.append(audio)
        track = rtc.LocalAudioTrack.create_audio_track((options and options.name) or "", audio)
        publication = await self._publish(
            track,
            rtc.TrackPublishOptions(
                source=source,
                red=False,
                dtx=plan.dtx,
                audio_encoding=room_pb2.AudioEncoding(max_bitrate=plan.bitrate),
            ),
        )
        info = TrackInfo(
            sid=publication.sid,
            type="AUDIO",
            name=publication.name,
            source=source_name,
            mime_type=publication.mime_type or "audio/opus",
        )
        return AudioOutput(audio, info)

    async def _publish(
        self, track: rtc.LocalTrack, options: rtc.TrackPublishOptions
    ) -> rtc.LocalTrackPublication:
        try:
            return await self.room.local_participant.publish_track(track, options)
        except PublishTrackError as err:
            raise PublishError(str(err)) from None

    async def close(self) -> None:
        """Leave the room and release the sources."""
        try:
            await self.room.disconnect()
        finally:
            for source in self._sources:
                await source.aclose()
