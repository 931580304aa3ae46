"""Which codecs an input type takes, and how they are named in messages and states.

One table, `CODECS`: the FFmpeg codec names (canonical names, not decoder names: AV1 decodes
with `libdav1d`, MP3 with `mp3float`) URL input takes, each with the name an error message uses
and, where LiveKit's ingress has one, the mime type it reports.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from ingress_pod.inputs.errors import Unsupported

Kind = Literal["video", "audio"]


@dataclass(frozen=True)
class Codec:
    """A codec as this ingress names it to users."""

    kind: Kind
    label: str
    # livekit/ingress reports GStreamer caps mapped to WebRTC names (pipeline.go getVideoState /
    # getAudioState); codecs it has no mapping for keep a GStreamer-like name (see `mime_type`).
    mime_type: str | None = None


# Commonly used codecs that PyAV's FFmpeg decodes (tests/unit/test_url_input.py checks each has a
# decoder), in the order messages list them. Anything else (ProRes, FFV1, WMV, …) is refused
# up front rather than published by a pipeline nobody tested with it.
CODECS: dict[str, Codec] = {
    "h264": Codec("video", "H.264", "video/H264"),
    "hevc": Codec("video", "H.265", "video/H265"),
    "vp8": Codec("video", "VP8", "video/VP8"),
    "vp9": Codec("video", "VP9", "video/VP9"),
    "av1": Codec("video", "AV1", "video/AV1"),
    "mpeg4": Codec("video", "MPEG-4"),
    "mpeg2video": Codec("video", "MPEG-2"),
    "theora": Codec("video", "Theora"),
    "aac": Codec("audio", "AAC", "audio/aac"),
    "mp3": Codec("audio", "MP3", "audio/mpeg"),
    "mp2": Codec("audio", "MP2"),
    "opus": Codec("audio", "Opus", "audio/opus"),
    "vorbis": Codec("audio", "Vorbis"),
    "flac": Codec("audio", "FLAC"),
    "ac3": Codec("audio", "AC-3"),
    "eac3": Codec("audio", "E-AC-3"),
    "alac": Codec("audio", "ALAC"),
}
# Uncompressed audio comes in many sample formats (pcm_s16le, pcm_s24be, pcm_f32le, pcm_mulaw…):
# all are taken, under one name.
PCM_PREFIX = "pcm_"
PCM = Codec("audio", "PCM")


def lookup(codec: str) -> Codec | None:
    """The table's entry for an FFmpeg codec name, None for a codec it does not list."""
    return PCM if codec.startswith(PCM_PREFIX) else CODECS.get(codec)


def mime_type(kind: Kind, codec: str) -> str:
    """The mime type LiveKit reports in InputVideoState/InputAudioState for an FFmpeg codec."""
    known = lookup(codec)
    return known.mime_type if known and known.mime_type else f"{kind}/x-{codec}"


@dataclass(frozen=True)
class CodecPolicy:
    """The codecs one input type takes; None for a kind means any codec FFmpeg decodes."""

    input_name: str
    video: Collection[str] | None
    audio: Collection[str] | None

    def check(self, kind: Kind, codec: str) -> None:
        """Raise Unsupported, naming `codec` and what is taken, for a codec outside the policy."""
        taken = self.video if kind == "video" else self.audio
        if taken is None or codec in taken or (codec.startswith(PCM_PREFIX) and PCM_PREFIX in taken):
            return
        labels = ", ".join(dict.fromkeys(_label(name) for name in taken))
        verb = "must be" if len(taken) == 1 else "takes"
        raise Unsupported(f"unsupported {kind} codec {codec}: {self.input_name} input {verb} {labels}")


def _label(name: str) -> str:
    known = lookup(name)
    return known.label if known else name


# LiveKit's RTMP ingress takes H.264 video only; its audio is whatever FLV carries (AAC, MP3).
RTMP = CodecPolicy("RTMP", video=("h264",), audio=None)
URL = CodecPolicy(
    "URL",
    video=tuple(name for name, codec in CODECS.items() if codec.kind == "video"),
    audio=(*(name for name, codec in CODECS.items() if codec.kind == "audio"), PCM_PREFIX),
)
