"""The Python `livekit-api` SDK (Twirp protobuf) and raw Twirp JSON / auth over HTTP, against the shim."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from livekit import api

pytestmark = [
    pytest.mark.e2e,
    # the SDK signs its tokens with PyJWT, which warns about dev secrets shorter than 32 bytes
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

ID_RE = re.compile(r"^IN_[A-Za-z0-9]{12}$")
KEY_RE = re.compile(r"^[A-Za-z0-9]{12}$")
SOURCE_URL = "http://127.0.0.1:9/e2e-python.mp4"  # nothing listens there: the pull just fails
TIMEOUT = aiohttp.ClientTimeout(total=30)
INFO_FIELDS = {
    "ingress_id",
    "name",
    "stream_key",
    "url",
    "input_type",
    "enable_transcoding",
    "bypass_transcoding",
    "audio",
    "video",
    "room_name",
    "participant_identity",
    "participant_name",
    "participant_metadata",
    "reusable",
    "state",
}
STATE_FIELDS = {
    "status",
    "error",
    "video",
    "audio",
    "room_id",
    "started_at",
    "ended_at",
    "updated_at",
    "resource_id",
    "tracks",
}
PERMISSIONS_DENIED = {"code": "unauthenticated", "msg": "permissions denied"}


def _room() -> str:
    return f"e2e-py-{uuid.uuid4().hex[:8]}"


# --- the SDK ------------------------------------------------------------------------------


@pytest.fixture
async def lkapi(stack: Any) -> AsyncIterator[api.LiveKitAPI]:
    env = stack.env
    lk = api.LiveKitAPI(
        env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"], timeout=TIMEOUT
    )
    # every ingress a test creates is deleted afterwards
    created: list[str] = []
    create = lk.ingress.create_ingress

    async def tracked_create(req: api.CreateIngressRequest) -> api.IngressInfo:
        info = await create(req)
        created.append(info.ingress_id)
        return info

    lk.ingress.create_ingress = tracked_create  # type: ignore[method-assign]
    try:
        yield lk
    finally:
        for ingress_id in created:
            with contextlib.suppress(api.TwirpError):
                await lk.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=ingress_id))
        await lk.aclose()


def _create_request(input_type: int, room: str, **extra: Any) -> api.CreateIngressRequest:
    return api.CreateIngressRequest(
        input_type=input_type,
        name="py ingress",
        room_name=room,
        participant_identity="py-publisher",
        participant_name="Py Publisher",
        **extra,
    )


async def _list(lk: api.LiveKitAPI, **filters: str) -> list[api.IngressInfo]:
    res = await lk.ingress.list_ingress(api.ListIngressRequest(**filters))
    return list(res.items)


async def _assert_not_found(call: Any) -> None:
    with pytest.raises(api.TwirpError) as exc:
        await call
    assert (exc.value.code, exc.value.status) == ("not_found", 404), str(exc.value)
    assert "ingress does not exist" in exc.value.message


async def _assert_listed_and_deleted(lk: api.LiveKitAPI, info: api.IngressInfo) -> None:
    assert [i.ingress_id for i in await _list(lk, room_name=info.room_name)] == [info.ingress_id]
    (by_id,) = await _list(lk, ingress_id=info.ingress_id)
    assert by_id.stream_key == info.stream_key and by_id.url == info.url
    # both filters: the id wins, as in LiveKit
    both = await _list(lk, room_name=_room(), ingress_id=info.ingress_id)
    assert [i.ingress_id for i in both] == [info.ingress_id]

    deleted = await lk.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=info.ingress_id))
    assert deleted.ingress_id == info.ingress_id
    assert deleted.state.status == api.IngressState.ENDPOINT_INACTIVE
    await _assert_not_found(lk.ingress.list_ingress(api.ListIngressRequest(ingress_id=info.ingress_id)))
    await _assert_not_found(lk.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=info.ingress_id)))


async def test_rtmp(lkapi: api.LiveKitAPI) -> None:
    room = _room()
    info = await lkapi.ingress.create_ingress(_create_request(api.IngressInput.RTMP_INPUT, room))
    assert ID_RE.match(info.ingress_id) and KEY_RE.match(info.stream_key), info
    assert re.match(r"^rtmps?://[^/]+(/.*)?/x$", info.url), info.url
    assert info.reusable and info.enable_transcoding and not info.bypass_transcoding
    assert info.state.status == api.IngressState.ENDPOINT_INACTIVE
    assert not info.HasField("audio") and not info.HasField("video")

    preset = api.IngressVideoEncodingPreset.H264_1080P_30FPS_3_LAYERS
    updated = await lkapi.ingress.update_ingress(
        api.UpdateIngressRequest(
            ingress_id=info.ingress_id,
            video=api.IngressVideoOptions(name="cam", source=api.TrackSource.CAMERA, preset=preset),
        )
    )
    assert updated.video.preset == preset
    assert (updated.name, updated.room_name, updated.participant_identity) == (
        info.name,
        info.room_name,
        info.participant_identity,
    )
    assert (updated.stream_key, updated.url) == (info.stream_key, info.url)
    await _assert_listed_and_deleted(lkapi, updated)


async def test_whip(lkapi: api.LiveKitAPI) -> None:
    req = _create_request(api.IngressInput.WHIP_INPUT, _room(), enable_transcoding=False)
    info = await lkapi.ingress.create_ingress(req)
    assert ID_RE.match(info.ingress_id) and KEY_RE.match(info.stream_key), info
    assert re.match(r"^https?://[^/]+(/.*)?/w$", info.url), info.url
    assert info.reusable and not info.enable_transcoding and info.bypass_transcoding
    assert info.state.status == api.IngressState.ENDPOINT_INACTIVE

    updated = await lkapi.ingress.update_ingress(
        api.UpdateIngressRequest(ingress_id=info.ingress_id, participant_name="Renamed")
    )
    assert updated.participant_name == "Renamed"
    assert (updated.name, updated.participant_identity) == (info.name, info.participant_identity)
    assert not updated.enable_transcoding
    await _assert_listed_and_deleted(lkapi, updated)


async def test_url(lkapi: api.LiveKitAPI) -> None:
    info = await lkapi.ingress.create_ingress(
        _create_request(api.IngressInput.URL_INPUT, _room(), url=SOURCE_URL)
    )
    assert ID_RE.match(info.ingress_id), info
    assert (info.url, info.stream_key, info.reusable) == (SOURCE_URL, "", False)
    assert info.enable_transcoding

    with pytest.raises(api.TwirpError) as exc:
        await lkapi.ingress.update_ingress(
            api.UpdateIngressRequest(ingress_id=info.ingress_id, name="renamed")
        )
    assert (exc.value.code, exc.value.status) == ("invalid_argument", 400)
    assert "ingress is not reusable and cannot be modified" in exc.value.message
    await _assert_listed_and_deleted(lkapi, info)


@pytest.mark.parametrize(
    ("input_type", "extra", "message"),
    [
        (api.IngressInput.RTMP_INPUT, {"participant_identity": ""}, "no participant identity"),
        (api.IngressInput.URL_INPUT, {"url": "ftp://127.0.0.1/a.mp4"}, "invalid url scheme ftp"),
        (api.IngressInput.URL_INPUT, {}, "missing URL parameter"),
        (
            api.IngressInput.RTMP_INPUT,
            {"audio": api.IngressAudioOptions(preset=7)},
            "invalid preset",
        ),
    ],
    ids=["no-identity", "ftp", "no-url", "audio-preset-number"],
)
async def test_create_rejected(
    lkapi: api.LiveKitAPI, input_type: int, extra: dict[str, Any], message: str
) -> None:
    req = _create_request(input_type, _room())
    for field, value in extra.items():
        if isinstance(value, str):
            setattr(req, field, value)
        else:
            getattr(req, field).CopyFrom(value)
    with pytest.raises(api.TwirpError) as exc:
        await lkapi.ingress.create_ingress(req)
    assert (exc.value.code, exc.value.status) == ("invalid_argument", 400), str(exc.value)
    assert message in exc.value.message


async def test_unknown_ids(lkapi: api.LiveKitAPI) -> None:
    unknown = "IN_doesnotexist"
    await _assert_not_found(
        lkapi.ingress.update_ingress(api.UpdateIngressRequest(ingress_id=unknown, name="x"))
    )
    await _assert_not_found(lkapi.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=unknown)))
    assert await _list(lkapi, room_name=_room()) == []


# --- raw Twirp over HTTP ------------------------------------------------------------------


def _token(
    key: str,
    secret: str,
    *,
    video: dict[str, Any] | None = None,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": key,
        "sub": "e2e-raw",
        "nbf": now - 10,
        "exp": now + 600,
        "video": {"ingressAdmin": True} if video is None else video,
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(payload, secret, algorithm=algorithm)


def _unsigned_token(key: str) -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"iss": key, "sub": "e2e-raw", "exp": now + 600, "video": {"ingressAdmin": True}}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


class Raw:
    """Twirp requests by hand, as a client without an SDK sends them."""

    def __init__(self, session: aiohttp.ClientSession, env: dict[str, str]) -> None:
        base = env["LIVEKIT_URL"].rstrip("/")
        self.base = "http" + base[2:] if base.startswith("ws") else base
        self.key, self.secret = env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]
        self.session = session
        self.created: list[str] = []  # ingress ids to delete at teardown

    def token(self, **kwargs: Any) -> str:
        return _token(self.key, self.secret, **kwargs)

    async def call(
        self,
        method: str,
        body: Any,
        *,
        auth: str | None = "default",
        content_type: str = "application/json",
        http_method: str = "POST",
        params: dict[str, str] | None = None,
    ) -> tuple[int, str, Any]:
        """Returns (status, exact Content-Type, body as JSON or text)."""
        headers = {"Content-Type": content_type}
        if auth == "default":
            headers["Authorization"] = f"Bearer {self.token()}"
        elif auth is not None:
            headers["Authorization"] = auth
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        async with self.session.request(
            http_method,
            f"{self.base}/twirp/livekit.Ingress/{method}",
            data=data,
            headers=headers,
            params=params,
        ) as resp:
            text = await resp.text()
            ctype = resp.headers.get("Content-Type", "")
            if resp.content_type == "application/json":
                return resp.status, ctype, json.loads(text)
            return resp.status, ctype, text


@pytest.fixture
async def raw(stack: Any) -> AsyncIterator[Raw]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        client = Raw(session, stack.env)
        yield client
        for ingress_id in client.created:
            await client.call("DeleteIngress", {"ingress_id": ingress_id})


def _assert_twirp_error(result: tuple[int, str, Any], status: int, code: str) -> str:
    got_status, ctype, body = result
    assert (got_status, ctype) == (status, "application/json"), result
    assert body["code"] == code, body
    msg: str = body["msg"]
    return msg


async def test_json_camel_case_and_enum_names(raw: Raw) -> None:
    room = _room()
    status, ctype, body = await raw.call(
        "CreateIngress",
        {
            "inputType": "URL_INPUT",
            "name": "raw url",
            "roomName": room,
            "participantIdentity": "raw-publisher",
            "url": SOURCE_URL,
            "video": {"source": "CAMERA", "preset": "H264_720P_30FPS_1_LAYER"},
            "unknownFieldIsIgnored": 1,
        },
    )
    assert (status, ctype.split(";")[0]) == (200, "application/json"), body
    raw.created.append(body["ingress_id"])
    assert body["input_type"] == "URL_INPUT"
    assert (body["room_name"], body["participant_identity"]) == (room, "raw-publisher")
    assert body["url"] == SOURCE_URL
    assert body["video"]["preset"] == "H264_720P_30FPS_1_LAYER"
    assert body["video"]["source"] == "CAMERA"


async def test_json_response_shape(raw: Raw) -> None:
    status, ctype, body = await raw.call(
        "CreateIngress",
        {"inputType": 0, "roomName": _room(), "participantIdentity": "raw-publisher"},
    )
    assert (status, ctype.split(";")[0]) == (200, "application/json"), body
    raw.created.append(body["ingress_id"])
    assert not INFO_FIELDS - body.keys(), "missing fields"
    assert not STATE_FIELDS - body["state"].keys(), "missing state fields"
    assert not any(re.search("[A-Z]", k) for k in [*body, *body["state"]]), "camelCase key"
    assert "enabled" not in body  # optional and unset: absent (means true)
    assert body["input_type"] == "RTMP_INPUT"
    assert body["name"] == "" and body["participant_metadata"] == ""
    assert body["audio"] is None and body["video"] is None
    assert body["state"]["status"] == "ENDPOINT_INACTIVE"
    assert body["state"]["tracks"] == []
    for field in ("started_at", "ended_at", "updated_at"):
        assert isinstance(body["state"][field], str), (field, body["state"][field])
        assert body["state"][field].isdigit(), (field, body["state"][field])

    status, _, listed = await raw.call("ListIngress", {"ingressId": body["ingress_id"]})
    assert status == 200
    assert listed.get("next_page_token") is None
    assert [i["ingress_id"] for i in listed["items"]] == [body["ingress_id"]]


async def test_unknown_enum_name_rejected(raw: Raw) -> None:
    result = await raw.call(
        "CreateIngress",
        {"inputType": "FOO_INPUT", "roomName": _room(), "participantIdentity": "raw-publisher"},
    )
    msg = _assert_twirp_error(result, 400, "invalid_argument")
    assert "input_type" in msg or "inputType" in msg, msg


async def test_routing_and_decoding_errors(raw: Raw) -> None:
    decode = "the json request could not be decoded"
    assert decode in _assert_twirp_error(await raw.call("ListIngress", "[]"), 400, "malformed")
    assert decode in _assert_twirp_error(await raw.call("ListIngress", ""), 400, "malformed")
    _assert_twirp_error(await raw.call("ListIngress", "{}", content_type="text/plain"), 404, "bad_route")
    _assert_twirp_error(await raw.call("ListIngress", "", http_method="GET"), 404, "bad_route")
    _assert_twirp_error(await raw.call("NoSuchMethod", "{}"), 404, "bad_route")


# --- auth ---------------------------------------------------------------------------------


async def test_valid_tokens_accepted(raw: Raw) -> None:
    assert (await raw.call("ListIngress", {"roomName": _room()}))[0] == 200
    no_exp = raw.token(exp=None)
    assert (await raw.call("ListIngress", {}, auth=f"Bearer {no_exp}"))[0] == 200
    by_query = await raw.call("ListIngress", {}, auth=None, params={"access_token": raw.token()})
    assert by_query[0] == 200, by_query


async def test_no_token(raw: Raw) -> None:
    status, ctype, body = await raw.call("ListIngress", {}, auth=None)
    assert (status, ctype) == (401, "application/json"), (status, ctype, body)
    assert {k: body[k] for k in ("code", "msg")} == PERMISSIONS_DENIED
    # auth comes first: an undecodable body from a caller without a token is still a 401
    assert (await raw.call("ListIngress", "not json", auth=None))[0] == 401


@pytest.mark.parametrize("grant", [{"roomJoin": True, "room": "r"}, {}, {"ingressAdmin": False}])
async def test_token_without_ingress_admin(raw: Raw, grant: dict[str, Any]) -> None:
    status, ctype, body = await raw.call("ListIngress", {}, auth=f"Bearer {raw.token(video=grant)}")
    assert (status, ctype) == (401, "application/json"), (status, ctype, body)
    assert {k: body[k] for k in ("code", "msg")} == PERMISSIONS_DENIED


def _bad_auth_headers(raw: Raw) -> dict[str, str]:
    now = int(time.time())
    return {
        "wrong-secret": f"Bearer {_token(raw.key, raw.secret + '-wrong')}",
        "expired": f"Bearer {raw.token(nbf=now - 600, exp=now - 300)}",
        "nbf-future": f"Bearer {raw.token(nbf=now + 300)}",
        "unknown-key": f"Bearer {_token('no-such-key', raw.secret)}",
        "no-iss": f"Bearer {raw.token(iss=None)}",
        "alg-none": f"Bearer {_unsigned_token(raw.key)}",
        "hs384": f"Bearer {raw.token(algorithm='HS384')}",
        "garbage": "Bearer not.a.jwt",
        "not-bearer": f"Token {raw.token()}",
        "lowercase-bearer": f"bearer {raw.token()}",
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong-secret",
        "expired",
        "nbf-future",
        "unknown-key",
        "no-iss",
        "alg-none",
        "hs384",
        "garbage",
        "not-bearer",
        "lowercase-bearer",
    ],
)
async def test_bad_token_is_plain_401(raw: Raw, case: str) -> None:
    status, ctype, body = await raw.call("ListIngress", {}, auth=_bad_auth_headers(raw)[case])
    assert status == 401, (status, ctype, body)
    assert ctype.split(";")[0] == "text/plain", (ctype, body)
    assert isinstance(body, str) and 0 < len(body) < 300, body
    assert "Traceback" not in body
