"""FLV framing of the RTMP messages an encoder publishes, and the start-up cache a late reader
gets first: the headers a decoder needs, then the group of pictures in progress.

An RTMP video or audio message body is an FLV tag body already (FLV was designed as RTMP on
disk), so re-framing is an 11-byte tag header and a 4-byte trailer per message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

AUDIO, VIDEO, SCRIPT = 8, 9, 18
# FLV header: signature, version 1, flags audio+video, header size; then PreviousTagSize0.
FILE_HEADER = b"FLV\x01\x05\x00\x00\x00\x09" + b"\x00\x00\x00\x00"

# Video tag body, first byte: frame type (high nibble) and codec id (low nibble).
KEYFRAME = 1
CODEC_AVC, CODEC_HEVC = 7, 12
# Enhanced RTMP sets the top bit and puts a FourCC after the first byte.
EX_HEADER = 0x80
SOUND_AAC = 10
SEQUENCE_HEADER = 0  # AVCPacketType / AACPacketType
SET_DATA_FRAME = b"\x02\x00\x0d@setDataFrame"  # AMF0 strings: marker 2, 16-bit length, bytes
ON_METADATA = b"\x02\x00\x0aonMetaData"
# Audio kept for an audio-only stream: a reader joining late gets about this much back-log.
AUDIO_ONLY_BACKLOG_MS = 500


def tag(kind: int, timestamp_ms: int, body: bytes) -> bytes:
    """One FLV tag with its PreviousTagSize trailer."""
    ts = timestamp_ms & 0xFFFFFFFF
    # Type, 24-bit size, 24-bit timestamp + 8 bits holding its high byte, 24-bit stream id (0).
    header = (
        bytes([kind])
        + len(body).to_bytes(3, "big")
        + (ts & 0xFFFFFF).to_bytes(3, "big")
        + bytes([ts >> 24, 0, 0, 0])
    )
    return header + body + (len(header) + len(body)).to_bytes(4, "big")


def video_codec(body: bytes) -> str:
    """The codec a video tag body carries: "h264", "hevc", an enhanced-RTMP FourCC, or "unknown"."""
    if not body:
        return "unknown"
    if body[0] & EX_HEADER:
        return body[1:5].decode("ascii", "replace").strip() if len(body) >= 5 else "unknown"
    return {CODEC_AVC: "h264", CODEC_HEVC: "hevc"}.get(body[0] & 0x0F, f"flv-codec-{body[0] & 0x0F}")


def is_keyframe(body: bytes) -> bool:
    return bool(body) and (body[0] & 0x70) >> 4 == KEYFRAME


def is_video_sequence_header(body: bytes) -> bool:
    if not body:
        return False
    if body[0] & EX_HEADER:  # enhanced RTMP: packet type in the low nibble, 0 = sequence start
        return body[0] & 0x0F == SEQUENCE_HEADER
    return len(body) > 1 and body[1] == SEQUENCE_HEADER


def is_audio_sequence_header(body: bytes) -> bool:
    return len(body) > 1 and body[0] >> 4 == SOUND_AAC and body[1] == SEQUENCE_HEADER


def metadata_body(payload: bytes) -> bytes | None:
    """The FLV script tag body (`onMetaData` + values) of an RTMP data message, or None for a
    data message that is not stream metadata. Encoders send it wrapped in `@setDataFrame`."""
    if payload.startswith(SET_DATA_FRAME):
        payload = payload[len(SET_DATA_FRAME) :]
    return payload if payload.startswith(ON_METADATA) else None


@dataclass
class StartCache:
    """What a reader that joins a live stream needs to decode from the next frame on: the
    metadata and codec headers, and every tag since the last video keyframe (for an
    audio-only stream, the last half second). Feeding it older frames would only add delay."""

    metadata: bytes | None = None
    video_header: bytes | None = None
    audio_header: bytes | None = None
    since_keyframe: list[tuple[int, bytes]] = field(default_factory=list)  # (timestamp, tag)
    seen_video: bool = False

    def add(self, kind: int, timestamp_ms: int, body: bytes) -> None:
        """Remember the tag, framed, if a new reader will need it."""
        framed = tag(kind, timestamp_ms, body)
        if kind == SCRIPT:
            self.metadata = framed
        elif kind == VIDEO and is_video_sequence_header(body):
            self.video_header = framed
        elif kind == AUDIO and is_audio_sequence_header(body):
            self.audio_header = framed
        elif kind == VIDEO:
            if is_keyframe(body):
                self.since_keyframe.clear()
            if self.seen_video or is_keyframe(body):
                self.seen_video = True
                self.since_keyframe.append((timestamp_ms, framed))
        elif kind == AUDIO:
            self.since_keyframe.append((timestamp_ms, framed))
            if not self.seen_video:
                horizon = timestamp_ms - AUDIO_ONLY_BACKLOG_MS
                while self.since_keyframe and self.since_keyframe[0][0] < horizon:
                    self.since_keyframe.pop(0)

    def snapshot(self) -> bytes:
        """The FLV file header and the cached tags, ready for a new reader."""
        heads = [h for h in (self.metadata, self.video_header, self.audio_header) if h]
        return FILE_HEADER + b"".join(heads) + b"".join(t for _, t in self.since_keyframe)
