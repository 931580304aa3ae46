"""What the media pod hands the rtc SDK: the join token and the frame buffers."""

from __future__ import annotations

import av
import jwt
import numpy as np
from livekit import rtc

from ingress_pod.publish import I420Converter, Participant, audio_frame, ingress_token, redact_tokens


def yuv_frame(width: int, height: int, y: int, u: int, v: int) -> av.VideoFrame:
    """A flat yuv420p picture (PyAV pads its rows: line_size > width for odd sizes)."""
    planes = np.empty((height * 3 // 2, width), np.uint8)
    planes[:height] = y
    chroma = planes[height:].reshape(-1)
    chroma[: chroma.size // 2] = u
    chroma[chroma.size // 2 :] = v
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


def test_a_picture_at_the_output_size_is_packed_into_one_i420_buffer() -> None:
    frame = yuv_frame(50, 20, 16, 100, 200)
    assert frame.planes[0].line_size > 50  # the padded case: rows are copied, not the plane
    out = I420Converter(50, 20).convert(frame)
    assert (out.width, out.height, out.type) == (50, 20, rtc.VideoBufferType.I420)
    data = bytes(out.data)
    assert len(data) == 50 * 20 + 2 * 25 * 10
    assert data[: 50 * 20] == bytes([16]) * 1000
    assert data[1000:1250] == bytes([100]) * 250
    assert data[1250:] == bytes([200]) * 250


def test_a_larger_picture_is_scaled_to_the_output_size() -> None:
    out = I420Converter(64, 36).convert(yuv_frame(128, 72, 80, 90, 170))
    data = np.frombuffer(bytes(out.data), np.uint8)
    assert data.size == 64 * 36 * 3 // 2
    assert set(data[: 64 * 36].tolist()) == {80}
    assert set(data[64 * 36 : 64 * 36 + 32 * 18].tolist()) == {90}


def test_another_pixel_format_is_converted() -> None:
    rgb = av.VideoFrame.from_ndarray(np.zeros((36, 64, 3), np.uint8), format="rgb24")
    out = I420Converter(64, 36).convert(rgb)
    assert len(bytes(out.data)) == 64 * 36 * 3 // 2


def test_audio_frame_takes_the_samples_without_the_padding() -> None:
    frame = av.AudioFrame.from_ndarray(
        np.arange(2 * 441, dtype=np.int16).reshape(1, -1), format="s16", layout="stereo"
    )
    frame.sample_rate = 48000
    out = audio_frame(frame)
    assert (out.sample_rate, out.num_channels, out.samples_per_channel) == (48000, 2, 441)
    assert np.frombuffer(bytes(out.data), np.int16).tolist() == list(range(882))


def test_token_is_an_ingress_participants_publish_only_grant() -> None:
    who = Participant("room1", "enc", "Encoder", '{"a":1}', "IN_abcdefghijkl", "RT_xyz")
    claims = jwt.decode(ingress_token("key", "secret", who), "secret", algorithms=["HS256"])
    assert claims["iss"] == "key" and claims["sub"] == "enc"
    assert claims["name"] == "Encoder" and claims["metadata"] == '{"a":1}'
    assert claims["kind"] == "ingress"
    assert claims["attributes"] == {"ingress.ingressID": "IN_abcdefghijkl", "ingress.resourceID": "RT_xyz"}
    video = claims["video"]
    assert video["roomJoin"] is True and video["room"] == "room1"
    assert video["canPublish"] is True and video["canSubscribe"] is False
    assert claims["exp"] - claims["nbf"] == 24 * 3600


def test_join_errors_never_carry_the_access_token() -> None:
    token = ingress_token("key", "secret", Participant("r", "i", "", "", "IN_x", "RT_x"))
    message = f"engine: signal failure: client error: 401 Unauthorized - invalid token: {token}, error: bad"
    assert redact_tokens(message) == (
        "engine: signal failure: client error: 401 Unauthorized - invalid token: <token>, error: bad"
    )
