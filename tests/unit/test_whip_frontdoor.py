"""The front door's WHIP endpoint over HTTP: a client's offer reaching the media pod's session
channel and the pod's answer coming back as the 201 (through the UDP relay's route when there is
one), trickle, DELETE, every refusal with its status and message, a session ending before its
answer, and CORS on all of it. The app is `http.make_app` over a SessionRegistry on the fake API
server of test_frontdoor_sessions; the "pod" is a test reading the channel."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from ingress_pod.frontdoor import whip
from ingress_pod.frontdoor.http import REGISTRY, make_app, session_source
from ingress_pod.frontdoor.sessions import Busy, LiveSession, NotReady, Refused, SessionRegistry, UnknownKey
from ingress_pod.frontdoor.udp import UdpRelay
from ingress_pod.frontdoor.whip import (
    CORS,
    MAX_SDP_BYTES,
    REFUSALS,
    SDP,
    TRICKLE,
    MalformedSdp,
    Whip,
    check_offer,
    parse_sdpfrag,
)
from tests.unit.test_frontdoor_sessions import KEY, FakeKube, cr, registry

UFRAG = "ufrag1"
OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        f"a=ice-ufrag:{UFRAG}",
        "a=ice-pwd:pwdpwdpwdpwdpwdpwdpwdpwd",
        "a=sendonly",
        "a=rtpmap:96 VP8/90000",
        "",
    ]
)
ANSWER = "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
POD_PASSWORD = "podpasswordpodpassword"
POD_CANDIDATE = "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host"
# What the relay needs of an answer: the pod's ufrag, password and UDP host candidate.
RELAYABLE_ANSWER = ANSWER + f"a=ice-ufrag:podu\r\na=ice-pwd:{POD_PASSWORD}\r\n{POD_CANDIDATE}\r\n"
ADVERTISE = ("198.51.100.7", 7885)  # the relay's public address: only ever written into answers
CANDIDATE = "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host"
WAIT = 5.0  # seconds any one step may take

Client = TestClient[web.Request, web.Application]


@dataclass
class Reply:
    """An HTTP response, read whole."""

    status: int
    text: str
    headers: Mapping[str, str]


async def call(
    client: Client,
    method: str,
    path: str,
    body: str | bytes | AsyncIterator[bytes] = b"",
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """One request, its response read whole (within WAIT seconds)."""
    sent = dict(headers or {})
    if content_type is not None:
        sent["Content-Type"] = content_type
    async with asyncio.timeout(WAIT), client.request(method, path, data=body, headers=sent) as resp:
        return Reply(resp.status, await resp.text(), resp.headers)


@dataclass(frozen=True)
class Post:
    """A client's POST, a good one unless told otherwise."""

    path: str = f"/w/{KEY}"
    body: str | bytes | AsyncIterator[bytes] = OFFER
    content_type: str = SDP
    authorization: str | None = None

    async def send(self, client: Client) -> Reply:
        auth = {"Authorization": self.authorization} if self.authorization else {}
        return await call(client, "POST", self.path, self.body, self.content_type, auth)

    def start(self, client: Client) -> asyncio.Task[Reply]:
        """Sent, running: a good offer gets its response once the pod answers."""
        return asyncio.create_task(self.send(client))


def assert_cors(reply: Reply) -> None:
    for name, value in CORS.items():
        assert reply.headers.get(name) == value, name


async def eventually(check: Callable[[], Any], what: str) -> Any:
    """`check()`'s first truthy value, polled for at most WAIT seconds."""
    for _ in range(int(WAIT / 0.01)):
        if value := check():
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"waited {WAIT:g} s for {what}")


@dataclass
class FrontDoor:
    client: Client
    registry: SessionRegistry
    kube: FakeKube

    async def live_session(self) -> LiveSession:
        """The ingress's session once a POST has opened it."""
        found: LiveSession = await eventually(
            lambda: next((s for s in self.registry.by_ingress.values() if not s.ended.is_set()), None),
            "a session",
        )
        return found


@asynccontextmanager
async def frontdoor(
    obj: dict[str, Any] | None = None, answer_timeout: float | None = None, relay: UdpRelay | None = None
) -> AsyncIterator[FrontDoor]:
    """The front door's HTTP app for one WHIP ingress (`obj`, cr() by default) on 127.0.0.1,
    with `relay` if given; `answer_timeout` builds it as make_app does but with that answer
    timeout (and no relay)."""
    reg, kube = registry(obj or cr(input_type="WHIP"))
    if answer_timeout is None:
        app = make_app(reg, relay)
    else:
        app = web.Application(client_max_size=MAX_SDP_BYTES)
        app[REGISTRY] = reg
        Whip(reg, answer_timeout=answer_timeout).routes(app)
        app.router.add_get("/sessions/{resource_id}/{token}", session_source)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        try:
            yield FrontDoor(client, reg, kube)
        finally:
            for session in list(reg.by_ingress.values()):  # and with it, the task that waits on it
                reg.close(session, "the test is over")


def channel_path(session: LiveSession) -> str:
    return f"/sessions/{session.resource_id}/{session.token}"


@dataclass
class Pod:
    """The media pod's end: the session channel it reads, and the URL it answers on."""

    client: Client
    session: LiveSession
    channel: ClientResponse

    @classmethod
    @asynccontextmanager
    async def attach(cls, fd: FrontDoor) -> AsyncIterator[Pod]:
        """Read the session channel of the session a POST opened, as the pod the operator starts."""
        session = await fd.live_session()
        async with asyncio.timeout(WAIT), fd.client.get(channel_path(session)) as channel:
            assert channel.status == 200 and channel.content_type == "application/x-ndjson"
            yield cls(fd.client, session, channel)

    async def message(self) -> dict[str, Any] | None:
        """The channel's next message; None at its end."""
        async with asyncio.timeout(WAIT):
            line = await self.channel.content.readline()
        return json.loads(line) if line else None

    async def answer(self, body: dict[str, str]) -> Reply:
        return await self.post_answer(json.dumps(body))

    async def post_answer(self, text: str) -> Reply:
        """`text` posted as the pod's answer, JSON or not."""
        path = f"{channel_path(self.session)}/answer"
        return await call(self.client, "POST", path, text, "application/json")


@pytest.mark.parametrize(
    "post",
    [
        Post(),
        Post(path="/w", authorization=f"Bearer {KEY}"),
        Post(path="/w", authorization=f"bearer  {KEY} "),
    ],
    ids=["key-in-url", "bearer", "bearer-lowercase"],
)
async def test_the_offer_reaches_the_pod_and_its_answer_is_the_201(post: Post) -> None:
    async with frontdoor() as fd:
        posted = post.start(fd.client)
        async with Pod.attach(fd) as pod:
            assert await pod.message() == {"offer": OFFER}
            assert (await pod.answer({"sdp": ANSWER})).status == 204
            reply = await posted
    rid = pod.session.resource_id
    assert (reply.status, reply.text) == (201, ANSWER)
    assert reply.headers["Content-Type"].partition(";")[0] == SDP
    assert re.fullmatch(rf"/w/{rid}/[\w-]{{24}}", reply.headers["Location"])
    assert reply.headers["ETag"] == f'"{rid}"'
    assert reply.headers["Accept-Patch"] == TRICKLE
    assert_cors(reply)
    assert rid.startswith("WH_") and fd.kube.obj["status"]["state"]["status"] == "ENDPOINT_BUFFERING"


async def test_trickle_ice_restart_and_delete() -> None:
    async with frontdoor() as fd:
        posted = Post().start(fd.client)
        async with Pod.attach(fd) as pod:
            await pod.message()
            await pod.answer({"sdp": ANSWER})
            location = (await posted).headers["Location"]

            fragment = f"a=ice-ufrag:{UFRAG}\r\na=ice-pwd:x\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
            fragment += f"a={CANDIDATE}\r\na=end-of-candidates\r\n"
            patched = await call(fd.client, "PATCH", location, fragment, TRICKLE)
            assert patched.status == 204
            assert_cors(patched)
            assert await pod.message() == {"candidate": CANDIDATE, "mid": "0"}
            assert await pod.message() == {"candidate": "", "mid": "0"}

            restart = await call(fd.client, "PATCH", location, "a=ice-ufrag:other\r\n", TRICKLE)
            assert (restart.status, restart.text) == (
                422,
                "ICE restart is not supported: DELETE this session and POST a new offer\n",
            )
            assert_cors(restart)
            wrong_type = await call(fd.client, "PATCH", location, f"a={CANDIDATE}\r\n", SDP)
            assert (wrong_type.status, wrong_type.text) == (415, f"Content-Type must be {TRICKLE}\n")
            guessed = re.sub(r"[^/]+$", "not-the-secret", location)
            assert (await call(fd.client, "DELETE", guessed)).status == 404

            deleted = await call(fd.client, "DELETE", location)
            assert deleted.status == 200
            assert_cors(deleted)
            assert await pod.message() is None  # the channel's end: the pod leaves the room
        assert pod.session.end_reason == "the WHIP client ended the session"
        assert pod.session.resource_id not in fd.registry.by_resource
        assert (await call(fd.client, "PATCH", location, f"a={CANDIDATE}\r\n", TRICKLE)).status == 404

        again = Post().start(fd.client)  # the ingress takes a new publisher
        async with Pod.attach(fd) as second:
            assert second.session is not pod.session
            assert await second.message() == {"offer": OFFER}
            await second.answer({"sdp": ANSWER})
            assert (await again).status == 201


NO_KEY = "no stream key: POST to <url>/<stream key> or send a Bearer token"


@pytest.mark.parametrize(
    ("obj", "post", "status", "message"),
    [
        pytest.param(None, Post(path="/w/nope"), 404, "unknown stream key", id="unknown-key"),
        pytest.param(cr(), Post(), 404, "stream key of a RTMP ingress", id="rtmp-key"),
        pytest.param(cr(enabled=False, input_type="WHIP"), Post(), 403, "ingress is disabled", id="disabled"),
        pytest.param(
            cr(input_type="WHIP", ready=None), Post(), 503, "ingress is not ready yet", id="not-ready"
        ),
        pytest.param(None, Post(path="/w"), 401, NO_KEY, id="no-key"),
        pytest.param(None, Post(path="/w", authorization=f"Basic {KEY}"), 401, NO_KEY, id="basic-auth"),
        pytest.param(
            None, Post(content_type="application/json"), 415, f"Content-Type must be {SDP}", id="content-type"
        ),
        pytest.param(
            None, Post(body="hello"), 400, "malformed SDP offer: it must start with v=0", id="not-sdp"
        ),
        pytest.param(None, Post(body=b"v=0\r\n\xff\xfe"), 400, "malformed SDP: not UTF-8", id="not-utf8"),
        pytest.param(
            None,
            Post(body=OFFER.replace(f"a=ice-ufrag:{UFRAG}\r\n", "")),
            400,
            "malformed SDP offer: no a=ice-ufrag",
            id="no-ufrag",
        ),
    ],
)
async def test_refusals(obj: dict[str, Any] | None, post: Post, status: int, message: str) -> None:
    async with frontdoor(obj) as fd:
        reply = await post.send(fd.client)
    assert (reply.status, reply.text) == (status, message + "\n")
    assert_cors(reply)
    assert fd.kube.patches == [] and fd.registry.by_ingress == {}


async def test_an_oversized_offer_is_a_413() -> None:
    async with frontdoor() as fd:
        reply = await Post(body=OFFER + "a=x\r\n" * (MAX_SDP_BYTES // 5)).send(fd.client)
    assert (reply.status, reply.text) == (413, f"SDP larger than {MAX_SDP_BYTES} bytes\n")
    assert_cors(reply)
    assert fd.kube.patches == []


async def test_a_second_publisher_is_refused() -> None:
    async with frontdoor() as fd:
        first = Post().start(fd.client)
        async with Pod.attach(fd) as pod:
            second = await Post().send(fd.client)
            assert (second.status, second.text) == (409, "ingress already has a live publisher\n")
            assert_cors(second)
            await pod.answer({"sdp": ANSWER})
            assert (await first).status == 201


@pytest.mark.parametrize("path", ["/w", f"/w/{KEY}", "/w/WH_abc/secret"])
async def test_preflight(path: str) -> None:
    async with frontdoor() as fd:
        reply = await call(
            fd.client,
            "OPTIONS",
            path,
            headers={"Origin": "https://example.com", "Access-Control-Request-Method": "POST"},
        )
    assert reply.status == 204
    assert reply.headers["Accept-Post"] == SDP and reply.headers["Accept-Patch"] == TRICKLE
    assert_cors(reply)


async def test_no_answer_in_time_is_a_503_and_an_error_in_the_cr() -> None:
    async with frontdoor(answer_timeout=0.2) as fd:
        reply = await Post().send(fd.client)
        assert (reply.status, reply.text) == (503, "no media pod answered in time; try again\n")
        assert_cors(reply)
        status = await eventually(
            lambda: "session" not in fd.kube.obj["status"] and fd.kube.obj["status"], "CR"
        )
        assert status["state"]["status"] == "ENDPOINT_ERROR"
        assert status["state"]["error"] == "no media pod answered within 0.2 s"
        assert fd.registry.by_ingress == {}


async def test_the_pods_error_is_the_clients_422() -> None:
    reason = "unsupported codecs PCMU: WHIP takes VP8 or H.264 video and Opus audio"
    async with frontdoor() as fd:
        posted = Post().start(fd.client)
        async with Pod.attach(fd) as pod:
            await pod.message()
            assert (await pod.answer({"error": reason})).status == 204
            reply = await posted
            assert (reply.status, reply.text) == (422, reason + "\n")
            assert_cors(reply)
            assert (await pod.answer({"sdp": ANSWER})).status == 410  # one answer per offer


async def test_an_answer_needs_the_sessions_token() -> None:
    async with frontdoor() as fd:
        posted = Post().start(fd.client)
        async with Pod.attach(fd) as pod:
            wrong = await call(
                fd.client,
                "POST",
                f"/sessions/{pod.session.resource_id}/wrong/answer",
                "{}",
                "application/json",
            )
            assert wrong.status == 404
            await pod.answer({"sdp": ANSWER})
            assert (await posted).status == 201


async def test_the_client_leaving_before_the_answer_ends_the_session() -> None:
    # The handler learns of it by being cancelled: aiohttp's TestServer turns that on
    # (handler_cancellation), and so must the AppRunner that serves make_app's app.
    async with frontdoor() as fd:
        posted = Post().start(fd.client)
        async with Pod.attach(fd) as pod:
            assert await pod.message() == {"offer": OFFER}
            posted.cancel()
            assert await pod.message() is None
            assert pod.session.end_reason == "the WHIP client left before the answer"
            assert fd.registry.by_ingress == {}
            assert (await pod.answer({"sdp": ANSWER})).status == 404


async def test_an_offer_sent_in_pieces_arrives_whole() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield OFFER[:5].encode()
        await asyncio.sleep(0.1)
        yield OFFER[5:].encode()

    async with frontdoor() as fd:
        posted = Post(body=pieces()).start(fd.client)
        # A refusal comes at once; an accepted offer waits for the pod's answer.
        await asyncio.wait([posted], timeout=0.5)
        assert not posted.done(), (await posted).text
        async with Pod.attach(fd) as pod:
            assert await pod.message() == {"offer": OFFER}
            await pod.answer({"sdp": ANSWER})
            assert (await posted).status == 201


@pytest.mark.parametrize(
    ("sdp", "ufrag", "error"),
    [
        (OFFER, UFRAG, None),
        (OFFER.replace("\r\n", "\n"), UFRAG, None),
        ("v=0\nm=audio 9 RTP/AVP 0\na=ice-ufrag: spaced \n", "spaced", None),
        ("", None, "malformed SDP offer: it must start with v=0"),
        ("o=- 1 1 IN IP4 0.0.0.0\r\nv=0\r\n", None, "malformed SDP offer: it must start with v=0"),
        (
            "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=ice-ufrag:u\r\n",
            None,
            "malformed SDP offer: no audio or video media section",
        ),
        ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", None, "malformed SDP offer: no a=ice-ufrag"),
        (
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:\r\n",
            None,
            "malformed SDP offer: no a=ice-ufrag",
        ),
    ],
)
def test_check_offer(sdp: str, ufrag: str | None, error: str | None) -> None:
    if error is None:
        assert check_offer(sdp) == ufrag
        return
    with pytest.raises(MalformedSdp) as refused:
        check_offer(sdp)
    assert str(refused.value) == error


# RFC 8840's example, its candidates cut short.
RFC8840_EXAMPLE = """a=ice-ufrag:EsAw
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
m=audio 9 RTP/AVP 0
a=mid:0
a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host
a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host
a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active
a=end-of-candidates
"""


@pytest.mark.parametrize(
    ("fragment", "ufrag", "candidates"),
    [
        ("", "", []),
        (
            RFC8840_EXAMPLE,
            "EsAw",
            [
                (
                    "0",
                    "candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host",
                ),
                (
                    "0",
                    "candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host",
                ),
                (
                    "0",
                    "candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active",
                ),
                ("0", ""),
            ],
        ),
        (RFC8840_EXAMPLE.replace("\n", "\r\n"), "EsAw", None),  # CRLF: the same as above
        (f"a={CANDIDATE}\n", "", [(None, CANDIDATE)]),
        (
            f"a=mid:0\na={CANDIDATE}\na=mid:1\na={CANDIDATE}\na=end-of-candidates\n",
            "",
            [("0", CANDIDATE), ("1", CANDIDATE), ("1", "")],
        ),
    ],
)
def test_parse_sdpfrag(fragment: str, ufrag: str, candidates: list[tuple[str | None, str]] | None) -> None:
    if candidates is None:
        assert parse_sdpfrag(fragment) == parse_sdpfrag(fragment.replace("\r\n", "\n"))
        return
    assert parse_sdpfrag(fragment) == (ufrag, candidates)


@pytest.mark.parametrize(
    "line",
    [
        "candidate:1 1 udp 2130706431 1.2.3.4 5000",  # no type
        "candidate:1 1 udp 2130706431 1.2.3.4 5000 host",
        "candidate:1 1 udp 2130706431 1.2.3.4 5000 type host",
        "candidate:1 x udp 2130706431 1.2.3.4 5000 typ host",  # component
        "candidate:1 1 udp high 1.2.3.4 5000 typ host",  # priority
        "candidate:1 1 udp -1 1.2.3.4 5000 typ host",
        "candidate:1 1 udp 2130706431 1.2.3.4 port typ host",
        "candidate:1 1 udp 2130706431 1.2.3.4 5000.5 typ host",
        "candidate:",
        "candidate:1 1 udp 2130706431 1.2.3.4 5000 " + "x" * 1000,
    ],
    ids=[
        "no-type",
        "type-without-typ",
        "type-misspelt",
        "component",
        "priority",
        "negative-priority",
        "port",
        "fractional-port",
        "empty",
        "long",
    ],
)
def test_parse_sdpfrag_refuses_a_malformed_candidate(line: str) -> None:
    # Among good ones: the fragment is refused whole, none of it forwarded.
    fragment = f"a=mid:0\na={CANDIDATE}\na={line}\na=end-of-candidates\n"
    with pytest.raises(MalformedSdp) as refused:
        parse_sdpfrag(fragment)
    assert str(refused.value) == f"malformed candidate: {line[:200]}"


@pytest.mark.parametrize(
    "line",
    [
        "candidate:1 1 UDP 2130706431 f81d4fae-7dec-11d0-a765-00a0c91e6bf6.local 5000 typ host",
        "candidate:2 2 udp 1 192.0.2.1 0 typ srflx raddr 0.0.0.0 rport 0 generation 0",
        "candidate:3 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active",
    ],
    ids=["mdns", "srflx-with-extensions", "tcp"],
)
def test_parse_sdpfrag_passes_candidates_it_does_not_use(line: str) -> None:
    # Whether a well-formed candidate is usable is the pod's to say.
    assert parse_sdpfrag(f"a={line}\n") == ("", [(None, line)])


class Unheard(Refused):
    """A refusal REFUSALS does not name."""


@pytest.mark.parametrize(
    ("refusal", "status"),
    [
        (UnknownKey("unknown stream key"), 404),
        (Busy("ingress already has a live publisher"), 409),
        (NotReady("ingress is not ready yet"), 503),
        (Refused("ingress is disabled"), 403),
        (Unheard("?"), 403),
    ],
    ids=["unknown-key", "busy", "not-ready", "refused", "subclass"],
)
def test_refusals_map_to_http_statuses(refusal: Refused, status: int) -> None:
    kind = next(http for refused, http in REFUSALS if isinstance(refusal, refused))
    assert kind.status_code == status


@asynccontextmanager
async def published(fd: FrontDoor) -> AsyncIterator[tuple[Pod, Reply]]:
    """A POST answered: the pod, on its channel (the offer read), and the 201."""
    posted = Post().start(fd.client)
    async with Pod.attach(fd) as pod:
        assert await pod.message() == {"offer": OFFER}
        assert (await pod.answer({"sdp": ANSWER})).status == 204
        reply = await posted
        assert reply.status == 201, reply.text
        yield pod, reply


async def messages(pod: Pod) -> AsyncIterator[dict[str, Any]]:
    """The channel's messages until its end (at most 100)."""
    for _ in range(100):
        message = await pod.message()
        if message is None:
            return
        yield message
    raise AssertionError("the channel did not end")


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("https://whip.example.com/w", "https://whip.example.com/w"),
        ("https://whip.example.com/w/", "https://whip.example.com/w"),
        (None, "/w"),  # not reconciled into the CR yet
    ],
    ids=["whip-url", "trailing-slash", "no-url"],
)
async def test_location_is_under_the_ingresss_whip_url(url: str | None, base: str) -> None:
    obj = cr(input_type="WHIP")
    if url is not None:
        obj["status"]["url"] = url
    async with frontdoor(obj) as fd, published(fd) as (pod, reply):
        location = reply.headers["Location"]
        assert re.fullmatch(rf"{re.escape(base)}/{pod.session.resource_id}/[\w-]{{24}}", location)
        # The proxy in front passes the path on: the front door serves the session there.
        path = urllib.parse.urlsplit(location).path
        assert (await call(fd.client, "PATCH", path, f"a={CANDIDATE}\r\n", TRICKLE)).status == 204
        assert await pod.message() == {"candidate": CANDIDATE, "mid": None}
        assert (await call(fd.client, "DELETE", path)).status == 200
        assert await pod.message() is None


@pytest.mark.parametrize(
    ("if_match", "status"),
    [(None, 204), ("etag", 204), ("*", 204), ('"WH_another"', 412), ("W/etag", 412), ("", 412)],
    ids=["none", "etag", "any", "another", "weak", "empty"],
)
async def test_patch_if_match(if_match: str | None, status: int) -> None:
    async with frontdoor() as fd, published(fd) as (pod, reply):
        etag = reply.headers["ETag"]
        headers = {} if if_match is None else {"If-Match": if_match.replace("etag", etag)}
        patched = await call(
            fd.client, "PATCH", reply.headers["Location"], f"a={CANDIDATE}\r\n", TRICKLE, headers
        )
        assert patched.status == status
        assert_cors(patched)
        if status == 412:
            assert patched.text == f"no session with entity-tag {headers['If-Match']}\n"
        assert (await call(fd.client, "DELETE", reply.headers["Location"])).status == 200
        # The candidate reached the pod before the channel's end, or not at all.
        expected = [{"candidate": CANDIDATE, "mid": None}] if status == 204 else []
        assert [message async for message in messages(pod)] == expected


async def test_a_malformed_trickled_candidate_is_a_400() -> None:
    bad = "candidate:1 1 udp 2130706431 1.2.3.4 5000"
    async with frontdoor() as fd, published(fd) as (pod, reply):
        fragment = f"a=mid:0\r\na={CANDIDATE}\r\na={bad}\r\n"
        patched = await call(fd.client, "PATCH", reply.headers["Location"], fragment, TRICKLE)
        assert (patched.status, patched.text) == (400, f"malformed candidate: {bad}\n")
        assert_cors(patched)
        assert (await call(fd.client, "DELETE", reply.headers["Location"])).status == 200
        assert [message async for message in messages(pod)] == []  # the good one neither


async def test_too_many_trickled_candidates_is_a_429(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(whip, "MAX_TRICKLED", 3)
    async with frontdoor() as fd, published(fd) as (pod, reply):
        location = reply.headers["Location"]
        two = f"a=mid:0\r\na={CANDIDATE}\r\na={CANDIDATE}\r\n"
        assert (await call(fd.client, "PATCH", location, two, TRICKLE)).status == 204
        for _ in range(2):  # the session's total counts: two more would be four
            refused = await call(fd.client, "PATCH", location, two, TRICKLE)
            assert (refused.status, refused.text) == (429, "more than 3 trickled candidates\n")
            assert_cors(refused)
        assert (await call(fd.client, "DELETE", location)).status == 200
        assert [message async for message in messages(pod)] == [{"candidate": CANDIDATE, "mid": "0"}] * 2


def operator_ends(fd: FrontDoor, session: LiveSession) -> None:
    """The operator removes the session from the CR, and the store sees it."""
    ended = copy.deepcopy(fd.kube.obj)
    del ended["status"]["session"]
    ended["metadata"]["resourceVersion"] = str(int(ended["metadata"]["resourceVersion"]) + 1)
    fd.registry.store.remember(ended)


@pytest.mark.parametrize(
    ("end", "reason"),
    [
        (operator_ends, "session ended by the operator"),
        (lambda fd, session: fd.registry.close(session, "encoder gone"), "encoder gone"),
        (lambda fd, session: session.end("the media pod disconnected"), "the media pod disconnected"),
        (lambda fd, session: fd.registry.end_all("front door stopping"), "front door stopping"),
    ],
    ids=["operator", "registry-close", "session-end", "end-all"],
)
async def test_a_session_ending_before_its_answer_is_a_503_at_once(
    end: Callable[[FrontDoor, LiveSession], None], reason: str
) -> None:
    # Not ANSWER_TIMEOUT (30 s) later: `call` gives up after WAIT.
    async with frontdoor() as fd:
        posted = Post().start(fd.client)
        async with Pod.attach(fd) as pod:
            assert await pod.message() == {"offer": OFFER}
            end(fd, pod.session)
            reply = await posted
            assert (reply.status, reply.text) == (503, f"the session ended before its answer: {reason}\n")
            assert_cors(reply)
            assert await pod.message() is None
            assert fd.registry.by_ingress == {}
            assert (await pod.answer({"sdp": ANSWER})).status == 404


async def test_end_all_ends_an_answered_session() -> None:
    async with frontdoor() as fd, published(fd) as (pod, reply):
        fd.registry.end_all("front door stopping")
        assert await pod.message() is None  # the pod leaves the room: INACTIVE
        assert pod.session.end_reason == "front door stopping" and fd.registry.by_ingress == {}
        # The session's resource goes with it (its end is seen on the next turn of the loop).
        for _ in range(int(WAIT / 0.01)):
            if (await call(fd.client, "DELETE", reply.headers["Location"])).status == 404:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the session's resource outlived it")


@pytest.mark.parametrize(
    "text",
    ['{"sdp": 5}', '{"error": null}', "{}", '{"candidate": "x"}', "[]", '"v=0"', "not json", ""],
    ids=[
        "sdp-not-a-string",
        "error-not-a-string",
        "empty-object",
        "other-key",
        "list",
        "string",
        "text",
        "empty",
    ],
)
async def test_a_malformed_pod_answer_is_a_400_to_the_pod_and_a_502_at_once(text: str) -> None:
    async with frontdoor() as fd:
        posted = Post().start(fd.client)
        async with Pod.attach(fd) as pod:
            await pod.message()
            refused = await pod.post_answer(text)
            assert (refused.status, refused.text) == (400, 'an answer is {"sdp": …} or {"error": …}\n')
            reply = await posted
            assert (reply.status, reply.text) == (502, "the media pod's answer is malformed\n")
            assert_cors(reply)
            assert await pod.message() is None
            assert (await pod.answer({"sdp": ANSWER})).status == 404  # the session is gone
        await cr_error(fd, "the media pod's answer is malformed")


async def cr_error(fd: FrontDoor, error: str) -> None:
    """The session ends in the CR with ERROR `error`, and the ingress takes a new publisher."""
    status = await eventually(lambda: "session" not in fd.kube.obj["status"] and fd.kube.obj["status"], "CR")
    assert (status["state"]["status"], status["state"]["error"]) == ("ENDPOINT_ERROR", error)
    assert fd.registry.by_ingress == {}


async def test_with_a_relay_the_route_is_in_place_before_the_201() -> None:
    relay = UdpRelay(ADVERTISE)  # not listening: routes are all this test looks at
    async with frontdoor(relay=relay) as fd:
        posted = Post().start(fd.client)
        async with Pod.attach(fd) as pod:
            assert await pod.message() == {"offer": OFFER}
            assert (await pod.answer({"sdp": RELAYABLE_ANSWER})).status == 204
            # The client's first check may come as soon as it has the answer.
            route = relay.routes[f"podu:{UFRAG}"]
            assert (route.session, route.pod, route.password) == (
                pod.session.resource_id,
                ("127.0.0.1", 40000),
                POD_PASSWORD,
            )
            reply = await posted
            assert reply.status == 201
            relay_candidate = f"a=candidate:lkirelay 1 udp 2130706431 {ADVERTISE[0]} {ADVERTISE[1]} typ host"
            assert reply.text == RELAYABLE_ANSWER + relay_candidate + "\r\n"
            assert (await call(fd.client, "DELETE", reply.headers["Location"])).status == 200
            await eventually(lambda: not relay.routes, "the route removed")


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (
            RELAYABLE_ANSWER.replace(f"a=ice-pwd:{POD_PASSWORD}\r\n", ""),
            "the media pod's answer has no ICE password",
        ),
        (
            RELAYABLE_ANSWER.replace(POD_CANDIDATE + "\r\n", ""),
            "the media pod's answer has no ICE ufrag or UDP host candidate",
        ),
        (ANSWER, "the media pod's answer has no ICE ufrag or UDP host candidate"),
    ],
    ids=["no-password", "no-candidate", "neither"],
)
async def test_with_a_relay_an_answer_it_cannot_route_is_a_400_to_the_pod_and_a_502(
    answer: str, error: str
) -> None:
    relay = UdpRelay(ADVERTISE)
    async with frontdoor(relay=relay) as fd:
        posted = Post().start(fd.client)
        async with Pod.attach(fd) as pod:
            await pod.message()
            refused = await pod.answer({"sdp": answer})
            assert (refused.status, refused.text) == (400, error + "\n")
            reply = await posted
            failed = f"the media pod's answer has no usable candidate: {error}"
            assert (reply.status, reply.text) == (502, failed + "\n")
            assert_cors(reply)
            assert await pod.message() is None
        await cr_error(fd, failed)
        assert relay.routes == {}
