"""Encoded video frames as a WebRTC client sent them: what WHIP pass-through forwards into the
room without decoding. Pure functions on the bitstream, apart from the picture size, which a
keyframe decode finds (SPS parsing by hand is not worth its bugs).
"""

from __future__ import annotations

from dataclasses import dataclass

import av
from av.codec.context import CodecContext

# RTP's video clock (RFC 3551): a frame's timestamp counts at 90 kHz.
VIDEO_CLOCK = 90_000
_H264_IDR = 5


@dataclass(frozen=True)
class EncodedUnit:
    """One access unit: VP8 frame or H.264 Annex B, with its size and capture time."""

    codec: str  # "VP8" or "H264"
    data: bytes
    keyframe: bool
    width: int
    height: int
    timestamp_us: int


def is_keyframe(codec: str, data: bytes) -> bool:
    """Whether `data` starts a picture that decodes on its own (VP8 key frame, H.264 IDR)."""
    if not data:
        return False
    if codec == "VP8":
        return data[0] & 0x01 == 0  # RFC 6386 9.1: the frame tag's P bit, 0 for key frames
    if codec == "H264":
        return _H264_IDR in h264_nal_types(data)
    raise ValueError(f"unsupported codec {codec}")


def h264_nal_types(data: bytes) -> list[int]:
    """The NAL unit types in an Annex B access unit, in order."""
    types = []
    start = data.find(b"\x00\x00\x01")
    while start != -1 and start + 3 < len(data):
        types.append(data[start + 3] & 0x1F)
        start = data.find(b"\x00\x00\x01", start + 3)
    return types


class FrameSizer:
    """The picture size of a stream, refreshed at each keyframe (a browser changes its
    resolution with the bandwidth, and only at a keyframe)."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.width = 0
        self.height = 0
        self._decoder = CodecContext.create(codec.lower(), "r")

    def unit(self, data: bytes, rtp_timestamp: int) -> EncodedUnit | None:
        """The unit for one frame; None until the first keyframe (nothing before it decodes)."""
        keyframe = is_keyframe(self.codec, data)
        if keyframe:
            try:
                frames = self._decoder.decode(av.Packet(data))  # type: ignore[attr-defined]
            except av.FFmpegError:
                frames = []
            if frames:
                self.width, self.height = frames[0].width, frames[0].height
        if not self.width:
            return None
        return EncodedUnit(
            self.codec, data, keyframe, self.width, self.height, rtp_timestamp * 1_000_000 // VIDEO_CLOCK
        )
