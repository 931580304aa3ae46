"""Keyframe detection, NAL unit listing and picture sizes of encoded video, on real VP8 and H.264
(baseline, Annex B) bitstreams that PyAV's libvpx and libx264 encode at test time."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import pytest
from av.codec.context import CodecContext
from av.video.codeccontext import VideoCodecContext

from ingress_pod.inputs.encoded import FrameSizer, h264_nal_types, is_keyframe, vp8_size

GOP = 4
FRAMES = 10

# codec name in EncodedUnit -> (PyAV encoder, its options): no lookahead, so one frame in is one
# packet out, and keyframes exactly every GOP frames (no scene-cut keyframes in between).
ENCODERS: dict[str, tuple[str, dict[str, str]]] = {
    "VP8": ("libvpx", {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}),
    "H264": (
        "libx264",
        {
            "profile": "baseline",
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0",
        },
    ),
}


def encode(codec: str, width: int = 64, height: int = 48, frames: int = FRAMES) -> list[av.Packet[Any]]:
    """`frames` frames of changing grey at `width`x`height`, one packet each, a keyframe every GOP."""
    encoder, options = ENCODERS[codec]
    ctx = CodecContext.create(encoder, "w")
    assert isinstance(ctx, VideoCodecContext)
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1, 30)
    ctx.framerate = Fraction(30, 1)
    ctx.gop_size = GOP
    ctx.options = options
    packets: list[av.Packet[Any]] = []
    for index in range(frames):
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([index * 37 % 256]) * plane.buffer_size)
        frame.pts = index
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    assert len(packets) == frames
    return packets


@pytest.mark.parametrize("codec", list(ENCODERS))
def test_keyframes_of_a_real_stream(codec: str) -> None:
    for index, packet in enumerate(encode(codec)):
        expected = index % GOP == 0
        assert packet.is_keyframe is expected, f"the encoder's flag, packet {index}"
        assert is_keyframe(codec, bytes(packet)) is expected, f"packet {index}"


def test_h264_nal_types_of_a_real_stream() -> None:
    packets = [bytes(packet) for packet in encode("H264")]
    # The first IDR carries x264's SEI (6) too; every IDR repeats SPS (7) and PPS (8) in-band.
    assert h264_nal_types(packets[0]) == [7, 8, 6, 5]
    assert h264_nal_types(packets[GOP]) == [7, 8, 5]
    assert h264_nal_types(packets[1]) == [1]


@pytest.mark.parametrize(
    ("data", "types"),
    [
        (b"", []),
        (b"\x00\x00\x00\x01\x67sps\x00\x00\x01\x68pps\x00\x00\x00\x01\x65idr", [7, 8, 5]),
        (b"\x00\x00\x01\x41slice", [1]),
        (b"\x00\x00\x01", []),  # a start code with nothing after it is no NAL unit
        (b"\x00\x00\x01\x09\xf0\x00\x00\x01", [9]),
        (b"no start code", []),
    ],
)
def test_h264_nal_types(data: bytes, types: list[int]) -> None:
    assert h264_nal_types(data) == types


@pytest.mark.parametrize(
    ("codec", "data", "key"),
    [
        ("VP8", b"\x90\x01\x00", True),  # frame tag P bit 0
        ("VP8", b"\x91\x01\x00", False),
        ("VP8", b"", False),
        ("H264", b"\x00\x00\x01\x65idr", True),
        ("H264", b"\x00\x00\x01\x67sps\x00\x00\x01\x68pps", False),  # headers alone decode nothing
        ("H264", b"", False),
    ],
)
def test_is_keyframe(codec: str, data: bytes, key: bool) -> None:
    assert is_keyframe(codec, data) is key


def test_is_keyframe_refuses_other_codecs() -> None:
    with pytest.raises(ValueError, match="unsupported codec VP9"):
        is_keyframe("VP9", b"\x00")


@pytest.mark.parametrize("codec", list(ENCODERS))
def test_frame_sizer_waits_for_a_keyframe_and_follows_resolution_changes(codec: str) -> None:
    small = [bytes(packet) for packet in encode(codec, 64, 48, frames=GOP)]
    large = [bytes(packet) for packet in encode(codec, 96, 80, frames=GOP)]
    sizer = FrameSizer(codec)
    assert sizer.unit(small[1], 0) is None  # a delta frame first: nothing decodes before a keyframe
    sizes = []
    for data in [*small, *large]:
        unit = sizer.unit(data, 0)
        assert unit is not None and unit.codec == codec and unit.data == data
        sizes.append((unit.width, unit.height, unit.keyframe))
    assert sizes == [
        (64, 48, True),
        *[(64, 48, False)] * (GOP - 1),
        (96, 80, True),  # a new size at its keyframe
        *[(96, 80, False)] * (GOP - 1),
    ]


@pytest.mark.parametrize(
    ("rtp_timestamp", "timestamp_us"),
    [(0, 0), (3000, 33_333), (90_000, 1_000_000), (2**32 - 1, 47_721_858_833)],
)
def test_timestamp_from_the_rtp_clock(rtp_timestamp: int, timestamp_us: int) -> None:
    sizer = FrameSizer("VP8")
    keyframe = bytes(encode("VP8", frames=1)[0])
    unit = sizer.unit(keyframe, rtp_timestamp)
    assert unit is not None and unit.timestamp_us == timestamp_us


@pytest.mark.parametrize(("width", "height"), [(64, 48), (322, 242), (17, 9), (1920, 1080)])
def test_vp8_size_of_real_key_frames(width: int, height: int) -> None:
    key, delta = (bytes(packet) for packet in encode("VP8", width, height, frames=2))
    assert vp8_size(key) == (width, height)
    assert vp8_size(delta) is None  # only a key frame's header has the size
    # The top two bits of each are the upscaling a decoder may apply (RFC 6386 9.1), not the size.
    scaled = bytearray(key)
    scaled[7] |= 0xC0
    scaled[9] |= 0x40
    assert vp8_size(bytes(scaled)) == (width, height)


def test_vp8_size_of_no_key_frame() -> None:
    key = bytes(encode("VP8", frames=1)[0])
    for data in [
        b"",
        key[:9],  # cut before the height
        key[:3] + b"\x00\x00\x00" + key[6:],  # no start code
        b"\x9d\x01\x2a" + key[6:],  # the start code, not where a key frame has it
        bytes(range(64)),
        bytes(encode("H264", frames=1)[0]),
    ]:
        assert vp8_size(data) is None, data[:16]


class CountingDecoder:
    """A decoder that counts the packets it is given."""

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder
        self.decodes = 0

    def decode(self, packet: av.Packet[Any]) -> Any:
        """The wrapped decoder's frames of `packet`."""
        self.decodes += 1
        return self.decoder.decode(packet)


@pytest.mark.parametrize(
    ("sizes", "decodes"),
    [
        pytest.param([(64, 48)], 1, id="one-size"),
        # A new encoder of the same settings writes the same SPS: nothing to decode.
        pytest.param([(64, 48), (64, 48)], 1, id="same-size-again"),
        pytest.param([(64, 48), (96, 80)], 2, id="new-size"),
        pytest.param([(64, 48), (96, 80), (64, 48)], 3, id="new-size-and-back"),
    ],
)
def test_frame_sizer_decodes_an_h264_keyframe_only_when_its_sps_changes(
    monkeypatch: pytest.MonkeyPatch, sizes: list[tuple[int, int]], decodes: int
) -> None:
    sizer = FrameSizer("H264")
    counting = CountingDecoder(sizer._decoder)
    monkeypatch.setattr(sizer, "_decoder", counting)
    expected, seen = [], []
    for width, height in sizes:
        for packet in encode("H264", width, height, frames=GOP * 4):  # four IDRs each
            unit = sizer.unit(bytes(packet), 0)
            assert unit is not None
            seen.append((unit.width, unit.height))
            expected.append((width, height))
    assert seen == expected
    assert counting.decodes == decodes
