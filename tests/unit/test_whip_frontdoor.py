"""The front door's WHIP endpoint over HTTP: a client's offer reaching the media pod's session
channel and the pod's answer coming back as the 201, trickle, DELETE, every refusal with its
status and message, and CORS on all of it. The app is `http.make_app` over a SessionRegistry on
the fake API server of test_frontdoor_sessions; the "pod" is a test reading the channel."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from ingress_pod.frontdoor.http import REGISTRY, make_app, session_source
from ingress_pod.frontdoor.sessions import LiveSession, SessionRegistry
from ingress_pod.frontdoor.whip import CORS, MAX_SDP_BYTES, SDP, TRICKLE, Whip, check_offer, parse_sdpfrag
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
    obj: dict[str, Any] | None = None, answer_timeout: float | None = None
) -> AsyncIterator[FrontDoor]:
    """The front door's HTTP app for one WHIP ingress (`obj`, cr() by default) on 127.0.0.1;
    `answer_timeout` builds it as make_app does but with that answer timeout."""
    reg, kube = registry(obj or cr(input_type="WHIP"))
    if answer_timeout is None:
        app = make_app(reg)
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
        path = f"{channel_path(self.session)}/answer"
        return await call(self.client, "POST", path, json.dumps(body), "application/json")


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
    with pytest.raises(web.HTTPBadRequest) as refused:
        check_offer(sdp)
    assert refused.value.text == error + "\n"


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
