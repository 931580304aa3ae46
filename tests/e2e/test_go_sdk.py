"""The `lk` CLI path: the Go server SDK (Twirp protobuf) with request files read by protojson.

`lk` can't be installed here, so `tests/go_sdk` (go-sdk-check) does what `lk ingress ...` does:
protojson.Unmarshal of an ingress.json into the request and a call of lksdk.IngressClient.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import GO_SDK, GoRun

pytestmark = pytest.mark.e2e

TESTDATA = GO_SDK / "testdata"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ID_RE = re.compile(r"^IN_[A-Za-z0-9]{12}$")
KEY_RE = re.compile(r"^[A-Za-z0-9]{12}$")
NOT_FOUND = {"code": "not_found", "msg": "ingress does not exist"}


def _ok(result: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    rc, out = result
    assert rc == 0, out
    return out


def _seed(name: str) -> dict[str, Any]:
    return json.loads((TESTDATA / name).read_text())


def _with(tmp_path: Path, name: str, **fields: Any) -> str:
    """A copy of a seed file with some fields replaced, as a user would edit it."""
    path = tmp_path / name
    path.write_text(json.dumps({**_seed(name), **fields}))
    return str(path)


def _assert_seed_fields(info: dict[str, Any], seed: dict[str, Any]) -> None:
    for field in ("name", "room_name", "participant_identity", "participant_name"):
        assert info[field] == seed[field], field


def test_rtmp_create_list_update_delete(go: GoRun, tmp_path: Path) -> None:
    seed = _seed("ingress_rtmp.json")
    info = _ok(go("create", str(TESTDATA / "ingress_rtmp.json")))
    assert ID_RE.match(info["ingress_id"]), info["ingress_id"]
    assert KEY_RE.match(info["stream_key"]), info["stream_key"]
    assert re.match(r"^rtmps?://[^/]+(/.*)?/x$", info["url"]), info["url"]
    assert info["input_type"] == "RTMP_INPUT"
    assert info["reusable"] is True
    assert info["enable_transcoding"] is True
    assert info["bypass_transcoding"] is False
    assert info["state"]["status"] == "ENDPOINT_INACTIVE"
    assert info["audio"] is None and info["video"] is None
    _assert_seed_fields(info, seed)
    ingress_id = info["ingress_id"]

    by_room = _ok(go("list", "--room", seed["room_name"]))["items"]
    assert ingress_id in [i["ingress_id"] for i in by_room]
    assert {i["room_name"] for i in by_room} == {seed["room_name"]}
    by_id = _ok(go("list", "--id", ingress_id))["items"]
    assert [i["ingress_id"] for i in by_id] == [ingress_id]
    assert by_id[0]["stream_key"] == info["stream_key"]

    update_file = _with(tmp_path, "ingress_update.json", ingress_id=ingress_id)
    updated = _ok(go("update", update_file))
    assert updated["video"]["preset"] == "H264_1080P_30FPS_3_LAYERS"
    assert updated["video"]["source"] == "CAMERA"
    for field in ("ingress_id", "stream_key", "url", "input_type", "reusable", "audio"):
        assert updated[field] == info[field], field
    _assert_seed_fields(updated, seed)
    listed = _ok(go("list", "--id", ingress_id))["items"][0]
    assert listed["video"]["preset"] == "H264_1080P_30FPS_3_LAYERS"

    deleted = _ok(go("delete", ingress_id))
    assert deleted["ingress_id"] == ingress_id
    assert deleted["state"]["status"] == "ENDPOINT_INACTIVE"
    assert go("list", "--id", ingress_id) == (1, NOT_FOUND)
    assert go("delete", ingress_id) == (1, NOT_FOUND)


def test_whip_seed(go: GoRun) -> None:
    seed = _seed("ingress_whip.json")
    info = _ok(go("create", str(TESTDATA / "ingress_whip.json")))
    assert ID_RE.match(info["ingress_id"])
    assert KEY_RE.match(info["stream_key"])
    assert re.match(r"^https?://[^/]+(/.*)?/w$", info["url"]), info["url"]
    assert info["input_type"] == "WHIP_INPUT"
    assert info["enable_transcoding"] is False
    assert info["bypass_transcoding"] is True
    assert info["reusable"] is True
    assert info["state"]["status"] == "ENDPOINT_INACTIVE"
    _assert_seed_fields(info, seed)
    assert _ok(go("delete", info["ingress_id"]))["ingress_id"] == info["ingress_id"]


def test_url_seed(go: GoRun, tmp_path: Path) -> None:
    seed = _seed("ingress_url.json")
    info = _ok(go("create", str(TESTDATA / "ingress_url.json")))
    assert ID_RE.match(info["ingress_id"])
    assert info["input_type"] == "URL_INPUT"
    assert info["url"] == seed["url"]
    assert info["stream_key"] == ""
    assert info["reusable"] is False
    assert info["enable_transcoding"] is True
    _assert_seed_fields(info, seed)
    rc, err = go("update", _with(tmp_path, "ingress_update.json", ingress_id=info["ingress_id"]))
    assert (rc, err["code"]) == (1, "invalid_argument")
    assert "ingress is not reusable and cannot be modified" in err["msg"]
    assert _ok(go("delete", info["ingress_id"]))["ingress_id"] == info["ingress_id"]


def test_docs_example(go: GoRun) -> None:
    info = _ok(go("example"))
    assert ID_RE.match(info["ingress_id"])
    assert KEY_RE.match(info["stream_key"])
    assert info["name"] == "my-ingress"
    assert info["room_name"] == "my-room"
    assert info["participant_identity"] == "my-participant"
    assert info["participant_name"] == "My Participant"
    assert info["input_type"] == "RTMP_INPUT"
    assert info["reusable"] is True
    assert info["state"]["status"] == "ENDPOINT_INACTIVE"


def test_room_service_through_shim(go: GoRun) -> None:
    out = _ok(go("room-list"))
    assert isinstance(out["rooms"], list)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"participant_identity": ""}, "no participant identity"),
        ({"input_type": 7}, "invalid ingress type"),
        ({"video": {"preset": 99}}, "invalid preset"),
        ({"audio": {"options": {"channels": 3}}}, "invalid audio channel count"),
        ({"enable_transcoding": False}, "bypassing transcoding impossible with selected input type"),
    ],
    ids=["no-identity", "input-type", "preset-number", "channels", "rtmp-no-transcoding"],
)
def test_create_rejected_over_protobuf(
    go: GoRun, tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    rc, err = go("create", _with(tmp_path, "ingress_rtmp.json", **fields))
    assert (rc, err["code"]) == (1, "invalid_argument"), err
    assert message in err["msg"]


def test_unknown_ids(go: GoRun, tmp_path: Path) -> None:
    unknown = "IN_doesnotexist"
    assert go("list", "--id", unknown) == (1, NOT_FOUND)
    assert go("delete", unknown) == (1, NOT_FOUND)
    rc, err = go("update", _with(tmp_path, "ingress_update.json", ingress_id=unknown))
    assert (rc, err["code"]) == (1, "not_found")
    assert _ok(go("list", "--room", "e2e-go-no-such-room"))["items"] == []


def test_wrong_secret_is_unauthenticated(go: GoRun) -> None:
    rc, err = go("list", env_override={"LIVEKIT_API_SECRET": "not-the-secret-" + "x" * 32})
    assert (rc, err["code"]) == (1, "unauthenticated")
    # a text/plain 401 reaches the Go client as an error from an intermediary
    assert err.get("meta", {}).get("status_code") == "401"


def test_the_readme_example_creates_through_the_lk_path(go: GoRun) -> None:
    info = _ok(go("create", str(EXAMPLES / "ingress.json")))
    assert ID_RE.match(info["ingress_id"]) and KEY_RE.match(info["stream_key"])
    assert info["participant_identity"] == "studio-cam-api"
