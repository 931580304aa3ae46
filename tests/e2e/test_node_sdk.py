"""livekit-server-sdk for Node (Twirp JSON, camelCase names) against the shim.

Each call runs `node tests/node_sdk/check.mjs` with one op; results are protobuf JSON in
camelCase as the SDK's IngressInfo objects print, errors the TwirpError's code/status/message.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import NodeRun

pytestmark = pytest.mark.e2e

ID_RE = re.compile(r"^IN_[A-Za-z0-9]{12}$")
KEY_RE = re.compile(r"^[A-Za-z0-9]{12}$")
SOURCE_URL = "http://127.0.0.1:9/e2e-node.mp4"  # nothing listens there: the pull just fails


def _room() -> str:
    return f"e2e-node-{uuid.uuid4().hex[:8]}"


def _base(room: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "node ingress",
        "roomName": room,
        "participantIdentity": "node-publisher",
        "participantName": "Node Publisher",
        **extra,
    }


def _ok(out: dict[str, Any]) -> dict[str, Any]:
    assert "error" not in out, out["error"]
    return out


def _error(out: dict[str, Any]) -> dict[str, Any]:
    assert "error" in out, f"expected an error, got {out}"
    err: dict[str, Any] = out["error"]
    return err


def _assert_invalid(out: dict[str, Any], message: str) -> None:
    err = _error(out)
    assert (err["code"], err["status"]) == ("invalid_argument", 400), err
    assert message in err["message"], err


def _assert_not_found(out: dict[str, Any]) -> None:
    err = _error(out)
    assert (err["code"], err["status"]) == ("not_found", 404), err
    assert "ingress does not exist" in err["message"], err


def test_rtmp_lifecycle(node: NodeRun) -> None:
    room = _room()
    info = _ok(node("create", {"inputType": "RTMP_INPUT", **_base(room)}))
    assert ID_RE.match(info["ingressId"]), info
    assert KEY_RE.match(info["streamKey"]), info
    assert re.match(r"^rtmps?://[^/]+(/.*)?/x$", info["url"]), info["url"]
    assert info["inputType"] == "RTMP_INPUT"
    assert info["reusable"] is True
    assert info["enableTranscoding"] is True
    assert info["bypassTranscoding"] is False
    assert info["state"]["status"] == "ENDPOINT_INACTIVE"
    assert (info["name"], info["roomName"]) == ("node ingress", room)
    assert (info["participantIdentity"], info["participantName"]) == (
        "node-publisher",
        "Node Publisher",
    )
    ingress_id = info["ingressId"]

    everything = _ok(node("list", {}))["items"]
    assert ingress_id in [i["ingressId"] for i in everything]
    by_room = _ok(node("list", {"roomName": room}))["items"]
    assert [i["ingressId"] for i in by_room] == [ingress_id]
    by_id = _ok(node("list", {"ingressId": ingress_id}))["items"]
    assert [i["ingressId"] for i in by_id] == [ingress_id]
    assert by_id[0]["streamKey"] == info["streamKey"]

    # the SDK sends "" for unset strings (dropped from the JSON): nothing changes
    same = _ok(node("update", {"ingressId": ingress_id, "name": "", "participantName": ""}))
    for field in ("name", "roomName", "participantIdentity", "participantName", "streamKey", "url"):
        assert same[field] == info[field], field

    room2 = _room()
    moved = _ok(
        node(
            "update",
            {
                "ingressId": ingress_id,
                "name": "renamed",
                "roomName": room2,
                "video": {"name": "cam", "source": "CAMERA", "preset": "H264_540P_25FPS_2_LAYERS"},
            },
        )
    )
    assert (moved["name"], moved["roomName"]) == ("renamed", room2)
    assert moved["video"]["preset"] == "H264_540P_25FPS_2_LAYERS"
    assert moved["participantIdentity"] == "node-publisher"
    assert moved["streamKey"] == info["streamKey"]
    assert _ok(node("list", {"roomName": room}))["items"] == []
    assert [i["ingressId"] for i in _ok(node("list", {"roomName": room2}))["items"]] == [ingress_id]

    deleted = _ok(node("delete", {"ingressId": ingress_id}))
    assert deleted["ingressId"] == ingress_id
    assert deleted["state"]["status"] == "ENDPOINT_INACTIVE"
    _assert_not_found(node("list", {"ingressId": ingress_id}))


def test_whip_without_transcoding(node: NodeRun) -> None:
    room = _room()
    info = _ok(node("create", {"inputType": "WHIP_INPUT", **_base(room, enableTranscoding=False)}))
    assert ID_RE.match(info["ingressId"])
    assert KEY_RE.match(info["streamKey"])
    assert re.match(r"^https?://[^/]+(/.*)?/w$", info["url"]), info["url"]
    assert info["inputType"] == "WHIP_INPUT"
    assert info["enableTranscoding"] is False
    assert info["bypassTranscoding"] is True
    assert info["reusable"] is True
    assert info["state"]["status"] == "ENDPOINT_INACTIVE"
    assert [i["ingressId"] for i in _ok(node("list", {"roomName": room}))["items"]] == [info["ingressId"]]
    assert _ok(node("delete", {"ingressId": info["ingressId"]}))["ingressId"] == info["ingressId"]


def test_url_ingress(node: NodeRun) -> None:
    room = _room()
    info = _ok(node("create", {"inputType": "URL_INPUT", **_base(room, url=SOURCE_URL)}))
    assert ID_RE.match(info["ingressId"])
    assert info["inputType"] == "URL_INPUT"
    assert info["url"] == SOURCE_URL
    assert info["streamKey"] == ""
    assert info["reusable"] is False
    assert info["enableTranscoding"] is True
    by_id = _ok(node("list", {"ingressId": info["ingressId"]}))["items"]
    assert [i["url"] for i in by_id] == [SOURCE_URL]

    _assert_invalid(
        node("update", {"ingressId": info["ingressId"], "name": "renamed"}),
        "ingress is not reusable and cannot be modified",
    )
    assert _ok(node("delete", {"ingressId": info["ingressId"]}))["ingressId"] == info["ingressId"]


def test_sdk_refuses_missing_identity_itself(node: NodeRun) -> None:
    # createIngress throws before any request: the server's check is covered over protobuf
    err = _error(node("create", {"inputType": "RTMP_INPUT", "roomName": "r"}))
    assert err["status"] is None
    assert "participantIdentity" in err["message"]


def _video_options(**options: Any) -> dict[str, Any]:
    return {"name": "cam", "source": "CAMERA", "options": options}


def _layer(quality: str, width: int, height: int) -> dict[str, Any]:
    return {"quality": quality, "width": width, "height": height, "bitrate": 1_000_000}


CREATE_ERRORS: list[tuple[str, str, dict[str, Any], str]] = [
    ("input-type", "RTMP_INPUT", {"inputType": 7}, "invalid ingress type"),
    ("url-missing", "URL_INPUT", {}, "missing URL parameter"),
    ("url-ftp", "URL_INPUT", {"url": "ftp://127.0.0.1/a.mp4"}, "invalid url scheme ftp"),
    ("url-no-room", "URL_INPUT", {"url": SOURCE_URL, "roomName": ""}, "no room name"),
    (
        "url-disabled",
        "URL_INPUT",
        {"url": SOURCE_URL, "enabled": False},
        "disabled non reusable ingress",
    ),
    (
        "rtmp-no-transcoding",
        "RTMP_INPUT",
        {"enableTranscoding": False},
        "bypassing transcoding impossible with selected input type",
    ),
    (
        "whip-no-transcoding-video-preset",
        "WHIP_INPUT",
        {"enableTranscoding": False, "video": {"preset": "H264_720P_30FPS_1_LAYER"}},
        "video encoding options must be empty if transcoding is disabled",
    ),
    (
        "whip-default-audio-preset",
        "WHIP_INPUT",
        {"audio": {"preset": "OPUS_MONO_64KBS"}},
        "audio encoding options must be empty if transcoding is disabled",
    ),
    ("video-preset-number", "RTMP_INPUT", {"video": {"preset": 99}}, "invalid preset"),
    ("audio-preset-number", "RTMP_INPUT", {"audio": {"preset": 42}}, "invalid preset"),
    (
        "video-codec",
        "RTMP_INPUT",
        {"video": _video_options(videoCodec="H264_HIGH")},
        "video codec unsupported",
    ),
    (
        "audio-codec",
        "RTMP_INPUT",
        {"audio": {"source": "MICROPHONE", "options": {"audioCodec": "AAC"}}},
        "audio codec unsupported",
    ),
    (
        "odd-width",
        "RTMP_INPUT",
        {"video": _video_options(layers=[_layer("HIGH", 641, 360)])},
        "layer width must be even",
    ),
    (
        "zero-height",
        "RTMP_INPUT",
        {"video": _video_options(layers=[_layer("HIGH", 640, 0)])},
        "invalid output media dimensions",
    ),
    (
        "duplicate-quality",
        "RTMP_INPUT",
        {"video": _video_options(layers=[_layer("HIGH", 1280, 720), _layer("HIGH", 640, 360)])},
        "more than one layer with the same quality level",
    ),
    (
        "heights-not-increasing",
        "RTMP_INPUT",
        {"video": _video_options(layers=[_layer("LOW", 1280, 720), _layer("HIGH", 640, 360)])},
        "video layers do not have increasing height with increasing quality",
    ),
    (  # LiveKit compares heights, then widths, from LOW to HIGH (not pixel counts)
        "widths-not-increasing",
        "RTMP_INPUT",
        {"video": _video_options(layers=[_layer("LOW", 1000, 100), _layer("HIGH", 400, 300)])},
        "video layers do not have increasing width with increasing quality",
    ),
    (
        "negative-framerate",
        "RTMP_INPUT",
        {"video": _video_options(frameRate=-1)},
        "invalid framerate",
    ),
    (
        "audio-channels",
        "RTMP_INPUT",
        {"audio": {"options": {"audioCodec": "OPUS", "channels": 3}}},
        "invalid audio channel count",
    ),
    (
        "video-source",
        "RTMP_INPUT",
        {"video": {"source": "MICROPHONE", "preset": "H264_720P_30FPS_3_LAYERS"}},
        "invalid track source",
    ),
    (
        "audio-source",
        "RTMP_INPUT",
        {"audio": {"source": "CAMERA", "preset": "OPUS_STEREO_96KBPS"}},
        "invalid track source",
    ),
]


@pytest.mark.parametrize(
    ("input_type", "fields", "message"),
    [case[1:] for case in CREATE_ERRORS],
    ids=[case[0] for case in CREATE_ERRORS],
)
def test_create_rejected(node: NodeRun, input_type: str, fields: dict[str, Any], message: str) -> None:
    req = {"inputType": input_type, **_base(_room()), **fields}
    _assert_invalid(node("create", req), message)


def test_accepted_edge_values(node: NodeRun) -> None:
    """Values LiveKit accepts: frame rate 0 and bitrate 0 (defaults), mono/stereo, VP8."""
    video = _video_options(videoCodec="VP8", frameRate=0, layers=[_layer("HIGH", 1280, 720)])
    audio = {"source": "MICROPHONE", "options": {"audioCodec": "OPUS", "bitrate": 0, "channels": 2}}
    info = _ok(node("create", {"inputType": "RTMP_INPUT", **_base(_room()), "video": video, "audio": audio}))
    assert info["video"]["options"]["videoCodec"] == "VP8"
    assert info["audio"]["options"]["channels"] == 2
    # two qualities of one size: LiveKit only refuses a layer smaller than the one below
    same_size = _video_options(layers=[_layer("LOW", 640, 360), _layer("HIGH", 640, 360)])
    _ok(node("create", {"inputType": "RTMP_INPUT", **_base(_room()), "video": same_size}))


def test_unknown_ids(node: NodeRun) -> None:
    unknown = "IN_doesnotexist"
    _assert_not_found(node("update", {"ingressId": unknown, "name": "x"}))
    _assert_not_found(node("delete", {"ingressId": unknown}))
    _assert_not_found(node("list", {"ingressId": unknown}))
    assert _ok(node("list", {"roomName": _room()}))["items"] == []
