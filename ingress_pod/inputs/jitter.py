"""A jitter buffer that hands frames on as soon as they are whole, for aiortc's receivers.

aiortc's own knows a frame is complete only when the next frame's first packet arrives: each
video frame waits a frame interval (33 ms at 30 fps) for nothing, and audio waits four packets
(80 ms) more. It also releases at most one frame per packet received, so frames that pile up
behind a lost packet (until its retransmission fills the gap) drain only as fast as new
packets come: with one-packet frames, never. This one:

- releases a video frame once its packets are all there up to its RTP marker bit, which ends
  a video frame (RFC 7741 for VP8, RFC 6184 for H.264); without a marker, aiortc's rule;
- releases an Opus packet at once (it is a whole frame), and does not wait for a lost one
  (aiortc asks for no audio retransmission: a late packet is dropped, as aiortc drops it);
- releases every frame that is ready, not one per packet, into the receiver's decoder queue.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket

# aiortc's sizes: a video frame can span hundreds of packets, audio frames are one each.
VIDEO_CAPACITY = 512
AUDIO_CAPACITY = 16

Deliver = Callable[[JitterFrame, int], None]  # a whole frame and its RTP payload type


class EagerJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer, handing each whole frame to `deliver` as soon as it is whole.
    `add` then returns no frame itself (the receiver would put it after those delivered)."""

    def __init__(self, capacity: int, is_video: bool, deliver: Deliver) -> None:
        super().__init__(capacity, prefetch=0, is_video=is_video)
        self._deliver = deliver

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        while (ready := self._whole_frame()) is not None:
            frame, payload_type = ready
            self._deliver(frame, payload_type)
        return None

    def _whole_frame(self) -> tuple[JitterFrame, int] | None:
        """The oldest frame if it is whole (removed from the buffer), else None."""
        assert self._origin is not None
        if not self._is_video:
            self._skip_gap()
        packets: list[RtpPacket] = []
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None or (packets and packet.timestamp != packets[0].timestamp):
                break
            packets.append(packet)
            if packet.marker or not self._is_video:
                self.remove(count + 1)
                data = b"".join(p._data for p in packets)  # type: ignore[attr-defined]  # depayloaded
                return JitterFrame(data=data, timestamp=packet.timestamp), packet.payload_type
        # No marker in sight: aiortc's rule (whole when the next frame has begun).
        payload_type = packets[0].payload_type if packets else 0
        frame = super()._remove_frame(self._origin)
        return (frame, payload_type) if frame is not None else None

    def _skip_gap(self) -> None:
        """Move past missing packets to the next one received (audio waits for nothing)."""
        assert self._origin is not None
        for count in range(self.capacity):
            if self._packets[(self._origin + count) % self.capacity] is not None:
                self.remove(count)
                return


def install(receiver: RTCRtpReceiver, kind: str) -> None:
    """Give a receiver (before any packet arrives) the eager jitter buffer.

    aiortc has no option for it: the buffer and what it delivers to are the receiver's private
    attributes, and delivering does what the receiver does with the frame its buffer returns
    (map the timestamp, queue it for the decoder thread)."""
    video = kind == "video"

    def deliver(frame: JitterFrame, payload_type: int) -> None:
        codec = receiver._RTCRtpReceiver__codecs.get(payload_type)  # type: ignore[attr-defined]
        if codec is None or receiver._RTCRtpReceiver__decoder_thread is None:  # type: ignore[attr-defined]
            return
        frame.timestamp = receiver._RTCRtpReceiver__timestamp_mapper.map(frame.timestamp)  # type: ignore[attr-defined]
        receiver._RTCRtpReceiver__decoder_queue.put((codec, frame))  # type: ignore[attr-defined]

    buffer = EagerJitterBuffer(VIDEO_CAPACITY if video else AUDIO_CAPACITY, video, deliver)
    receiver._RTCRtpReceiver__jitter_buffer = buffer  # type: ignore[attr-defined]
