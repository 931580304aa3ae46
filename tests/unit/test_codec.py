"""Twirp wire formats as LiveKit's clients send and expect them."""

from __future__ import annotations

import json

import pytest
from livekit.protocol import ingress as pb

from ingress_operator.errors import BadRoute, InvalidArgument, Malformed
from ingress_operator.shim import codec


@pytest.mark.parametrize(
    ("content_type", "fmt"),
    [
        ("application/protobuf", codec.PROTOBUF),
        ("application/json", codec.JSON),
        ("application/json; charset=utf-8", codec.JSON),
    ],
)
def test_wire_format_from_content_type(content_type: str, fmt: str) -> None:
    assert codec.wire_format(content_type) == fmt


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/xml"])
def test_other_content_types_are_bad_routes(content_type: str | None) -> None:
    with pytest.raises(BadRoute):
        codec.wire_format(content_type)


def test_json_accepts_snake_and_camel_names_and_enum_names_or_numbers() -> None:
    snake = codec.decode(
        b'{"input_type": "URL_INPUT", "room_name": "r"}', codec.JSON, pb.CreateIngressRequest
    )
    camel = codec.decode(
        b'{"inputType": 2, "roomName": "r", "whatever": 1}', codec.JSON, pb.CreateIngressRequest
    )
    assert snake == camel
    assert snake.input_type == pb.URL_INPUT


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"{",
        b'"x"',
        b'{"input_type": 1, "inputType": 1}',
        b'{"video": {"preset": 1, "options": {}}}',
    ],
)
def test_undecodable_json_is_malformed(body: bytes) -> None:
    with pytest.raises(Malformed, match="the json request could not be decoded"):
        codec.decode(body, codec.JSON, pb.CreateIngressRequest)


def test_unknown_enum_name_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        codec.decode(b'{"video": {"options": {"videoCodec": "H266"}}}', codec.JSON, pb.CreateIngressRequest)
    assert caught.value.field == "video.options.video_codec"


def test_bad_protobuf_is_malformed() -> None:
    with pytest.raises(Malformed):
        codec.decode(b"\xff\xff\xff", codec.PROTOBUF, pb.CreateIngressRequest)


def test_json_emits_every_field_as_protojson_does() -> None:
    info = pb.IngressInfo(ingress_id="IN_x", state=pb.IngressState(started_at=1795000000000000000))
    data = json.loads(codec.encode(info, codec.JSON))
    assert data["name"] == "" and data["audio"] is None and data["video"] is None
    assert data["input_type"] == "RTMP_INPUT"
    assert data["state"]["started_at"] == "1795000000000000000"
    assert data["state"]["tracks"] == [] and data["state"]["video"] is None
    assert "enabled" not in data


def test_protobuf_round_trips() -> None:
    info = pb.IngressInfo(ingress_id="IN_x", enabled=False)
    assert pb.IngressInfo.FromString(codec.encode(info, codec.PROTOBUF)) == info
