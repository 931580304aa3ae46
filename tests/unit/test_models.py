"""LiveKit's CreateIngress/UpdateIngress rules, each with LiveKit's message and the field named."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import json_format
from livekit.protocol import ingress as pb

from ingress_operator.errors import InvalidArgument
from ingress_operator.models import (
    ID_LABEL,
    IngressState,
    IngressStatus,
    LiveKitIngress,
    ingress_info,
    normalize_url,
    spec_after_update,
    spec_from_create,
)

RTMP = {"inputType": "RTMP_INPUT", "participantIdentity": "cam"}
URL = {"inputType": "URL_INPUT", "participantIdentity": "cam", "roomName": "r", "url": "http://h/a.mp4"}
WHIP_RAW = {"inputType": "WHIP_INPUT", "participantIdentity": "cam", "enableTranscoding": False}


def create(**fields: Any) -> pb.CreateIngressRequest:
    return json_format.ParseDict(fields, pb.CreateIngressRequest())


def layers(*dims: tuple[str, int, int]) -> dict[str, Any]:
    return {"options": {"layers": [{"quality": q, "width": w, "height": h} for q, w, h in dims]}}


REJECTED = [
    ({"inputType": 7, "participantIdentity": "p"}, "inputType", "invalid ingress type"),
    ({"inputType": "RTMP_INPUT"}, "participantIdentity", "invalid ingress: no participant identity"),
    ({**URL, "url": ""}, "url", "invalid ingress: missing URL parameter"),
    ({**URL, "url": "ftp://h/a"}, "url", "invalid ingress: invalid url scheme ftp"),
    ({**URL, "url": "http://[bad/x"}, "url", "invalid ingress: invalid url"),
    ({**URL, "roomName": ""}, "roomName", "invalid ingress: no room name"),
    ({**URL, "enabled": False}, "enabled", "invalid ingress: disabled non reusable ingress"),
    (
        {**RTMP, "enableTranscoding": False},
        "enableTranscoding",
        "invalid transcoding bypass configuration: bypassing transcoding impossible with selected input type",
    ),
    ({**URL, "enableTranscoding": False}, "enableTranscoding", "bypassing transcoding impossible"),
    (
        {**WHIP_RAW, "video": {"preset": "H264_720P_30FPS_1_LAYER"}},
        "video",
        "video encoding options must be empty if transcoding is disabled",
    ),
    (
        {"inputType": "WHIP_INPUT", "participantIdentity": "p", "audio": {"preset": 1}},
        "audio",
        "audio encoding options must be empty if transcoding is disabled",
    ),
    ({**RTMP, "video": {"preset": 42}}, "video.preset", "invalid video parameters: invalid preset"),
    ({**RTMP, "audio": {"preset": 9}}, "audio.preset", "invalid audio parameters: invalid preset"),
    (
        {**RTMP, "video": {"options": {"videoCodec": "H264_HIGH"}}},
        "video.options.videoCodec",
        "invalid video parameters: video codec unsupported",
    ),
    (
        {**RTMP, "audio": {"options": {"audioCodec": "AAC"}}},
        "audio.options.audioCodec",
        "invalid audio parameters: audio codec unsupported",
    ),
    (
        {**RTMP, "video": layers(("HIGH", 0, 720))},
        "video.options.layers[0].width",
        "invalid video parameters: invalid output media dimensions",
    ),
    (
        {**RTMP, "video": layers(("HIGH", 1280, 0))},
        "video.options.layers[0].height",
        "invalid video parameters: invalid output media dimensions",
    ),
    (
        {**RTMP, "video": layers(("LOW", 320, 180), ("HIGH", 1281, 720))},
        "video.options.layers[1].width",
        "invalid ingress: layer width must be even",
    ),
    (
        {**RTMP, "video": layers(("HIGH", 1280, 719))},
        "video.options.layers[0].height",
        "invalid ingress: layer height must be even",
    ),
    (
        {**RTMP, "video": layers(("HIGH", 640, 360), ("HIGH", 1280, 720))},
        "video.options.layers[1].quality",
        "more than one layer with the same quality level",
    ),
    (
        {**RTMP, "video": layers(("LOW", 1280, 720), ("HIGH", 640, 360))},
        "video.options.layers[1].height",
        "invalid video parameters: video layers do not have increasing height with increasing quality",
    ),
    (
        {**RTMP, "video": layers(("LOW", 1000, 100), ("HIGH", 400, 300))},
        "video.options.layers[1].width",
        "invalid video parameters: video layers do not have increasing width with increasing quality",
    ),
    (
        {**RTMP, "video": {"options": {"frameRate": "Infinity"}}},
        "video.options.frameRate",
        "invalid video parameters: invalid framerate",
    ),
    (
        {**RTMP, "video": {"options": {"frameRate": -1}}},
        "video.options.frameRate",
        "invalid video parameters: invalid framerate",
    ),
    (
        {**RTMP, "audio": {"options": {"channels": 3}}},
        "audio.options.channels",
        "invalid audio parameters: invalid audio channel count",
    ),
    ({**RTMP, "video": {"source": "MICROPHONE"}}, "video.source", "invalid track source"),
    ({**RTMP, "audio": {"source": "CAMERA"}}, "audio.source", "invalid track source"),
]


@pytest.mark.parametrize(("request_", "field", "message"), REJECTED)
def test_create_rejects_with_livekits_message_and_names_the_field(
    request_: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        spec_from_create(create(**request_))
    assert caught.value.field == field
    assert message in caught.value.rule


ACCEPTED = [
    RTMP,
    URL,
    WHIP_RAW,
    {**URL, "url": "srt://127.0.0.1:9000?streamid=x"},
    {**RTMP, "video": {"options": {"frameRate": 0, "layers": [{"width": 640, "height": 360}]}}},
    {**RTMP, "video": layers(("LOW", 320, 180), ("MEDIUM", 640, 360), ("HIGH", 1280, 720))},
    {**RTMP, "video": layers(("LOW", 640, 360), ("HIGH", 640, 360))},
    {**RTMP, "audio": {"options": {"bitrate": 0, "channels": 2, "audioCodec": "OPUS"}}},
    {**RTMP, "video": {"source": "SCREEN_SHARE", "preset": "H264_540P_25FPS_2_LAYERS"}},
    {**RTMP, "enabled": False},
]


@pytest.mark.parametrize("request_", ACCEPTED)
def test_create_accepts_what_livekit_accepts(request_: dict[str, Any]) -> None:
    spec_from_create(create(**request_))


def test_url_is_normalized_as_a_url_parser_prints_it() -> None:
    assert normalize_url("HTTP://h/A b.mp4") == "http://h/A%20b.mp4"
    assert normalize_url("HTTP://Ex.COM/a") == "http://Ex.COM/a"  # Go keeps the host's case
    spec = spec_from_create(create(**{**URL, "url": "HTTP://h/A b.mp4"}))
    assert spec.url == "http://h/A%20b.mp4"


def test_url_sent_with_rtmp_is_ignored() -> None:
    assert spec_from_create(create(**RTMP, url="http://x")).url is None


def test_zero_valued_enums_are_kept() -> None:
    spec = spec_from_create(create(**RTMP, video=layers(("LOW", 640, 360))))
    assert spec.to_cr()["video"]["options"]["layers"][0]["quality"] == "LOW"


def test_update_leaves_unset_and_empty_fields_unchanged_and_replaces_options_whole() -> None:
    spec = spec_from_create(
        create(**RTMP, name="n", roomName="r", video={"name": "v", "preset": "H264_720P_30FPS_1_LAYER"})
    )
    update = json_format.ParseDict(
        {"ingressId": "IN_x", "name": "", "participantName": "Cam", "video": {"preset": 1}},
        pb.UpdateIngressRequest(),
    )
    after = spec_after_update(spec, update)
    assert after.name == "n" and after.room_name == "r" and after.participant_name == "Cam"
    assert after.video is not None and after.video.name is None
    assert after.video.preset == "H264_1080P_30FPS_3_LAYERS"


def test_update_checks_the_merged_result() -> None:
    spec = spec_from_create(create(**WHIP_RAW))
    update = pb.UpdateIngressRequest(enable_transcoding=True, video=pb.IngressVideoOptions(preset=1))
    assert spec_after_update(spec, update).transcoding_enabled
    with pytest.raises(InvalidArgument, match="must be empty"):
        spec_after_update(spec, pb.UpdateIngressRequest(video=pb.IngressVideoOptions(preset=1)))


def test_url_ingress_cannot_be_updated() -> None:
    with pytest.raises(InvalidArgument, match="not reusable and cannot be modified"):
        spec_after_update(spec_from_create(create(**URL)), pb.UpdateIngressRequest(name="x"))


@pytest.mark.parametrize(
    ("request_", "transcoding", "reusable"),
    [
        (RTMP, True, True),
        (URL, True, False),
        ({"inputType": "WHIP_INPUT", "participantIdentity": "p"}, False, True),
    ],
)
def test_defaults_follow_livekit(request_: dict[str, Any], transcoding: bool, reusable: bool) -> None:
    spec = spec_from_create(create(**request_))
    assert spec.transcoding_enabled is transcoding
    assert spec.reusable is reusable
    # Defaults are resolved when read, never written into the stored spec (GitOps drift).
    assert ("enableTranscoding" in spec.to_cr()) is ("enableTranscoding" in request_)


def test_ingress_info_matches_livekits_shape() -> None:
    spec = spec_from_create(create(**URL))
    cr = LiveKitIngress.model_validate({"metadata": {"labels": {ID_LABEL: "IN_abc"}}, "spec": spec.to_cr()})
    info = ingress_info(cr, "ignored", "rtmp://h/x", "http://h/w")
    assert info.ingress_id == "IN_abc"
    assert info.stream_key == "" and info.url == "http://h/a.mp4"
    assert info.HasField("audio") and info.audio.source == 0
    assert not info.HasField("enabled")
    assert info.enable_transcoding and not info.bypass_transcoding and not info.reusable


def test_state_times_round_trip_in_nanoseconds() -> None:
    nanos = 1_795_000_000_123_456_000
    state = IngressState(
        status=IngressStatus.ENDPOINT_PUBLISHING, started_at=datetime.fromtimestamp(nanos / 1e9, tz=UTC)
    )
    assert state.to_proto().started_at == nanos
    assert state.to_proto().status == pb.IngressState.ENDPOINT_PUBLISHING
