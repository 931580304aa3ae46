"""Encoded video frames as a WebRTC client sent them: what WHIP pass-through forwards into the
room without decoding. Pure functions on the bitstream; the picture size is read from a VP8
key frame's header, and for H.264 from a decode of the keyframe whenever its SPS changes
(parsing the SPS by hand is not worth its bugs).
"""

from __future__ import annotations

from dataclasses import dataclass

import av
from av.codec.context import CodecContext

# RTP's video clock (RFC 3551): a frame's timestamp counts at 90 kHz.
VIDEO_CLOCK = 90_000
_H264_IDR = 5
_H264_SPS = 7
_VP8_START_CODE = b"\x9d\x01\x2a"


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
    return [nal[0] & 0x1F for nal in _h264_nals(data)]


def _h264_nals(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit (the zero before a 4-byte start code is left
    on the previous unit: harmless for comparing them)."""
    starts = []
    start = data.find(b"\x00\x00\x01")
    while start != -1 and start + 3 < len(data):
        starts.append(start + 3)
        start = data.find(b"\x00\x00\x01", start + 3)
    ends = [start - 3 for start in starts[1:]] + [len(data)]
    return [data[a:b] for a, b in zip(starts, ends, strict=False)]


def vp8_size(data: bytes) -> tuple[int, int] | None:
    """The picture size in a VP8 key frame's header (RFC 6386 9.1), or None if it has none."""
    if len(data) < 10 or data[0] & 0x01 or data[3:6] != _VP8_START_CODE:
        return None
    return int.from_bytes(data[6:8], "little") & 0x3FFF, int.from_bytes(data[8:10], "little") & 0x3FFF


class FrameSizer:
    """The picture size of a stream, refreshed at each keyframe (a browser changes its
    resolution with the bandwidth, and only at a keyframe)."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.width = 0
        self.height = 0
        self._decoder = CodecContext.create(codec.lower(), "r") if codec == "H264" else None
        self._sps = b""  # of the last H.264 keyframe decoded

    def unit(self, data: bytes, rtp_timestamp: int) -> EncodedUnit | None:
        """The unit for one frame; None until the first keyframe (nothing before it decodes)."""
        keyframe = is_keyframe(self.codec, data)
        if keyframe:
            size = vp8_size(data) if self.codec == "VP8" else self._h264_size(data)
            if size:
                self.width, self.height = size
        if not self.width:
            return None
        return EncodedUnit(
            self.codec, data, keyframe, self.width, self.height, rtp_timestamp * 1_000_000 // VIDEO_CLOCK
        )

    def _h264_size(self, data: bytes) -> tuple[int, int] | None:
        """The size of an IDR, decoded only when its SPS differs from the last one's (an
        encoder may send an IDR every few frames; the size changes only with the SPS)."""
        sps = next((nal for nal in _h264_nals(data) if nal[0] & 0x1F == _H264_SPS), b"")
        if sps == self._sps and self.width:
            return None
        assert self._decoder is not None
        try:
            frames = self._decoder.decode(av.Packet(data))  # type: ignore[attr-defined]
        except av.FFmpegError:
            return None
        if not frames:
            return None
        self._sps = sps
        return frames[0].width, frames[0].height
