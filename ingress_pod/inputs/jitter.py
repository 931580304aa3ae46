"""A jitter buffer that hands a frame on as soon as it is whole, for aiortc's receivers.

aiortc's own knows a frame is complete only when the next frame's first packet arrives: each
video frame waits a frame interval (33 ms at 30 fps) for nothing, and audio waits four packets
(80 ms) more. The RTP marker bit ends a video frame (RFC 7741 for VP8, RFC 6184 for H.264),
and an Opus packet is a frame: a frame whose packets are all there up to its marker goes at
once. Loss and reordering are handled as aiortc's do (this falls back to its rules when a
frame is not complete).
"""

from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket

# aiortc's sizes: a video frame can span hundreds of packets, audio frames are one each.
VIDEO_CAPACITY = 512
AUDIO_CAPACITY = 16


class EagerJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer, but a frame whole up to its marker (audio: any packet) goes at once."""

    def __init__(self, capacity: int, is_video: bool) -> None:
        super().__init__(capacity, prefetch=0, is_video=is_video)

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        assert self._origin is not None
        packets: list[RtpPacket] = []
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None or (packets and packet.timestamp != packets[0].timestamp):
                break
            packets.append(packet)
            if packet.marker or not self._is_video:
                self.remove(count + 1)
                data = b"".join(p._data for p in packets)  # type: ignore[attr-defined]  # the depayloaded payload
                return JitterFrame(data=data, timestamp=packet.timestamp)
        return super()._remove_frame(sequence_number)


def install(receiver: RTCRtpReceiver, kind: str) -> None:
    """Give a receiver (before any packet arrives) the eager jitter buffer."""
    video = kind == "video"
    buffer = EagerJitterBuffer(VIDEO_CAPACITY if video else AUDIO_CAPACITY, is_video=video)
    # aiortc has no option for it: its attribute, set before the receiver's first packet.
    receiver._RTCRtpReceiver__jitter_buffer = buffer  # type: ignore[attr-defined]
