"""The front door's WHIP UDP port (ingress_pod/frontdoor/udp.py): a client's ICE connectivity
check read and its MESSAGE-INTEGRITY checked against the pod's password, the relay's candidate
added to the pod's answer (aiortc's, as WhipInput sends it), and UdpRelay relaying between real
sockets on 127.0.0.x: clients, "pods" and the relay, each on an address of its own; and a real
aiortc client publishing to a real WhipInput through it."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

import pytest
from aioice import stun
from aiortc import RTCSessionDescription
from aiortc.sdp import SessionDescription, candidate_from_sdp
from prometheus_client import REGISTRY

from ingress_pod import sdp
from ingress_pod.frontdoor import udp
from ingress_pod.frontdoor.udp import FLOW_IDLE_TIMEOUT, UdpRelay, binding_request, relay_answer
from tests.unit.test_whip_answer import answered
from tests.unit.test_whip_frontdoor import eventually
from tests.unit.test_whip_input import Channel, client, make_offer, units, whip_input, without_candidates

# test_whip_input's fixtures: `loopback_only` (autouse: aiortc on 127.0.0.1 only, what WhipInput
# patches in aiortc undone after each test) and `channel` (the front door's end of a session).
from tests.unit.test_whip_input import channel as channel
from tests.unit.test_whip_input import loopback_only as loopback_only

RELAY_HOST, POD_HOST, CLIENT_HOST, STRANGER_HOST = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"
ADVERTISE = ("198.51.100.7", 7885)  # the relay's public address: only ever written into answers
RELAY_CANDIDATE = f"a=candidate:lkirelay 1 udp 2130706431 {ADVERTISE[0]} {ADVERTISE[1]} typ host"
SESSION = "WH_session"
PASSWORD = "the pod's ice password"
CLIENT_UFRAG = "cli"  # the client's, in the offer: the front door hands it to `route`
WAIT = 2.0  # seconds for a packet to arrive (loopback: well under a millisecond)
QUIET = 0.3  # seconds a packet that must not arrive is waited for
IDLE = 0.2  # a short idle timeout, for the sweep
MEDIA = b"\x80\x60\x00\x01" + bytes(28)  # an RTP header and payload: not STUN
DTLS = b"\x16\xfe\xfd" + bytes(30)  # a DTLS record


def binding(
    username: str | None = "podu:cli",
    password: str | None = PASSWORD,
    message_class: stun.Class = stun.Class.REQUEST,
    before: dict[str, object] | None = None,
) -> bytes:
    """A STUN Binding message as aioice writes an ICE check: `before` attributes, USERNAME, the
    check's own attributes, then MESSAGE-INTEGRITY signed with `password` and FINGERPRINT (None:
    FINGERPRINT alone, unsigned)."""
    attributes = dict(before or {})
    if username is not None:
        attributes["USERNAME"] = username
    attributes |= {"PRIORITY": 1853817087, "ICE-CONTROLLING": 0x1234567890ABCDEF, "USE-CANDIDATE": None}
    message = stun.Message(stun.Method.BINDING, message_class, attributes=attributes)
    if password is None:
        message.add_fingerprint()
    else:
        message.add_message_integrity(password.encode())
    return bytes(message)


def username_after_integrity() -> bytes:
    """A check whose USERNAME follows its MESSAGE-INTEGRITY: not covered by it, so not read."""
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, attributes={"PRIORITY": 1})
    message.add_message_integrity(PASSWORD.encode())
    message.attributes["USERNAME"] = "podu:cli"
    return bytes(message)


def without_fingerprint() -> bytes:
    """A signed check with nothing after its MESSAGE-INTEGRITY."""
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, attributes={"USERNAME": "podu:cli"})
    message.add_message_integrity(PASSWORD.encode())
    del message.attributes["FINGERPRINT"]
    return bytes(message)


CHECK = binding()


@pytest.mark.parametrize(
    ("packet", "username"),
    [
        (CHECK, "podu:cli"),
        (binding("podu"), "podu"),  # no ':': the whole USERNAME
        (binding(before={"SOFTWARE": "abcde"}), "podu:cli"),  # 3 bytes of padding before USERNAME
        (binding("pod:c", before={"SOFTWARE": "x"}), "pod:c"),
        (without_fingerprint(), "podu:cli"),
        (binding(password=None), None),
        (
            bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST, attributes={"USERNAME": "podu:cli"})),
            None,
        ),
        (username_after_integrity(), None),
        (binding(message_class=stun.Class.RESPONSE), None),
        (binding(message_class=stun.Class.INDICATION), None),
        (binding(None), None),
        (CHECK[:4] + b"\x00\x00\x00\x00" + CHECK[8:], None),  # RFC 3489 STUN: no magic cookie
        (CHECK[:19], None),
        (CHECK[:20], None),
        (CHECK[:-1], None),
        (b"", None),
        (MEDIA, None),
        (DTLS, None),
    ],
    ids=[
        "check",
        "username-without-colon",
        "padding-before-username",
        "odd-lengths",
        "no-fingerprint",
        "unsigned",
        "username-only",
        "username-after-integrity",
        "response",
        "indication",
        "no-username",
        "no-magic-cookie",
        "truncated-header",
        "header-only",
        "truncated-attributes",
        "empty",
        "rtp",
        "dtls",
    ],
)
def test_binding_request(packet: bytes, username: str | None) -> None:
    request = binding_request(packet)
    if username is None:
        assert request is None
        return
    assert request is not None and request.username == username
    # Signed as aioice checks it, and only with the password it was signed with.
    assert stun.parse_message(packet).check_message_integrity(PASSWORD.encode())
    assert request.signed_with(PASSWORD)
    assert not request.signed_with("another password")
    assert not request.signed_with("")


@pytest.mark.parametrize(
    "tampered",
    [
        CHECK.replace(b"podu:cli", b"podx:cli"),  # another session's USERNAME under this signature
        CHECK.replace((1853817087).to_bytes(4, "big"), (1853817088).to_bytes(4, "big")),  # PRIORITY
        CHECK[:8] + bytes(12) + CHECK[20:],  # the transaction id
        CHECK[:-20] + bytes([CHECK[-20] ^ 1]) + CHECK[-19:],  # the HMAC itself (FINGERPRINT: the last 8)
    ],
    ids=["username", "priority", "transaction-id", "hmac"],
)
def test_a_check_changed_after_signing_is_not_signed(tampered: bytes) -> None:
    assert tampered != CHECK
    request = binding_request(tampered)
    assert request is not None and not request.signed_with(PASSWORD)


async def pod_answer(channel: Channel) -> str:
    """The answer a media pod sends to a client's video and audio."""
    return (await answered(channel, "video", "audio"))[2]


def candidates(lines: list[str]) -> list[str]:
    """The `a=candidate:` lines of `lines`."""
    return [line for line in lines if line.startswith("a=candidate:")]


@pytest.mark.parametrize("keep", [True, False], ids=["keep-pod-candidates", "relay-only"])
@pytest.mark.parametrize("end_of_candidates", [True, False], ids=["end-of-candidates", "no-end"])
async def test_relay_answer(channel: Channel, keep: bool, end_of_candidates: bool) -> None:
    answer = await pod_answer(channel)
    if not end_of_candidates:
        answer = answer.replace("a=end-of-candidates\r\n", "")
    parts = sdp.sections(answer)
    pod_lines = candidates([line for part in parts for line in part])
    assert pod_lines and ("a=end-of-candidates" in answer) == end_of_candidates
    pod = candidate_from_sdp(pod_lines[0].removeprefix("a=candidate:"))

    rewritten, ufrag, address = relay_answer(answer, ADVERTISE, keep)

    assert ufrag == sdp.attribute(parts[1], "ice-ufrag") and address == (pod.ip, pod.port)
    assert pod.type == "host" and pod.ip == "127.0.0.1"
    new_parts = sdp.sections(rewritten)
    assert new_parts[0] == parts[0] and len(new_parts) == len(parts) == 3
    for old, new in zip(parts[1:], new_parts[1:], strict=True):
        assert candidates(new) == ([*candidates(old), RELAY_CANDIDATE] if keep else [RELAY_CANDIDATE])
        at = new.index(RELAY_CANDIDATE)
        assert new[at + 1 : at + 2] == (["a=end-of-candidates"] if end_of_candidates else [])
        unchanged = old if keep else [line for line in old if not line.startswith("a=candidate:")]
        assert [line for line in new if line != RELAY_CANDIDATE] == unchanged
        priority = {
            line: candidate_from_sdp(line.removeprefix("a=candidate:")).priority for line in candidates(new)
        }
        # The highest a host candidate can have (aiortc's own has it too).
        assert priority.pop(RELAY_CANDIDATE) == 2130706431 >= max(priority.values(), default=0)
    parsed = SessionDescription.parse(rewritten)
    for media in parsed.media:
        assert (ADVERTISE[0], ADVERTISE[1], "host") in {(c.ip, c.port, c.type) for c in media.ice_candidates}


def no_ufrag(answer: str) -> str:
    """`answer` without its ICE ufrag."""
    return re.sub(r"^a=ice-ufrag:.*\r\n", "", answer, flags=re.M)


def no_password(answer: str) -> str:
    """`answer` without its ICE password."""
    return re.sub(r"^a=ice-pwd:.*\r\n", "", answer, flags=re.M)


def no_candidates(answer: str) -> str:
    """`answer` without its candidates."""
    return re.sub(r"^a=candidate:.*\r\n", "", answer, flags=re.M)


def tcp_candidates(answer: str) -> str:
    """`answer` with TCP candidates where it had UDP ones."""
    return re.sub(r"^(a=candidate:\S+ \d+) udp ", r"\1 tcp ", answer, flags=re.M)


def srflx_candidates(answer: str) -> str:
    """`answer` with server-reflexive candidates where it had host ones."""
    return answer.replace("typ host", "typ srflx raddr 0.0.0.0 rport 0")


@pytest.mark.parametrize("munge", [no_ufrag, no_candidates, tcp_candidates, srflx_candidates])
async def test_relay_answer_needs_a_ufrag_and_a_udp_host_candidate(
    channel: Channel, munge: Callable[[str], str]
) -> None:
    answer = munge(await pod_answer(channel))
    with pytest.raises(ValueError, match="no ICE ufrag or UDP host candidate"):
        relay_answer(answer, ADVERTISE, keep_pod_candidates=True)


@pytest.mark.parametrize(
    ("munge", "error"),
    [
        (no_password, "the media pod's answer has no ICE password"),
        (no_ufrag, "no ICE ufrag or UDP host candidate"),
        (no_candidates, "no ICE ufrag or UDP host candidate"),
    ],
    ids=["no-password", "no-ufrag", "no-candidate"],
)
async def test_a_route_needs_the_pods_ufrag_password_and_candidate(
    channel: Channel, munge: Callable[[str], str], error: str
) -> None:
    relay = UdpRelay(ADVERTISE)
    answer = munge(await pod_answer(channel))
    with pytest.raises(ValueError, match=error):
        relay.route(SESSION, answer, CLIENT_UFRAG)
    assert relay.routes == {}


class Peer(asyncio.DatagramProtocol):
    """A test's UDP socket: what arrives is queued with its source address."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))

    @property
    def address(self) -> tuple[str, int]:
        """Where the socket is bound."""
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        """`data` to `to`, from this socket."""
        assert self.transport is not None
        self.transport.sendto(data, to)

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        """The next packet and where it came from, within WAIT seconds."""
        return await asyncio.wait_for(self.received.get(), WAIT)

    async def nothing(self) -> None:
        """Nothing arrives for QUIET seconds."""
        await asyncio.sleep(QUIET)
        assert self.received.empty(), self.received.get_nowait()


@contextlib.asynccontextmanager
async def bound(host: str) -> AsyncIterator[Peer]:
    """A Peer on `host`, on a port of its own."""
    transport, peer = await asyncio.get_running_loop().create_datagram_endpoint(Peer, local_addr=(host, 0))
    try:
        yield peer
    finally:
        transport.close()


def aimed(answer: str, pod: tuple[str, int], password: str | None = None) -> str:
    """`answer` with its host candidates at `pod`, and with ICE password `password` if given."""
    moved = re.sub(
        r"^(a=candidate:\S+ 1 udp \d+) \S+ \d+ typ host",
        rf"\1 {pod[0]} {pod[1]} typ host",
        answer,
        flags=re.M,
    )
    return (
        moved if password is None else re.sub(r"^a=ice-pwd:.*$", f"a=ice-pwd:{password}", moved, flags=re.M)
    )


@dataclass
class Network:
    """A relay with one session's route (SESSION, for CLIENT_UFRAG), the session's pod and its
    client; more sessions can be routed with the same answer (the same pod ufrag)."""

    relay: UdpRelay
    address: tuple[str, int]  # where the relay listens
    answer: str  # the pod's, as routed
    pod: Peer
    client: Peer
    ufrag: str  # the pod's
    password: str  # the pod's

    def username(self, client_ufrag: str = CLIENT_UFRAG) -> str:
        """The USERNAME of a check from the client with `client_ufrag` to the pod."""
        return f"{self.ufrag}:{client_ufrag}"

    def route(self, session: str, pod: Peer, client_ufrag: str, password: str | None = None) -> None:
        """Another session: the same pod ufrag, its own client ufrag, pod and password."""
        self.relay.route(session, aimed(self.answer, pod.address, password), client_ufrag)

    def check(self, client: Peer | None = None, username: str = "", password: str = "") -> None:
        """A connectivity check from `client` (the client) to the relay, with `username` signed
        with `password` (SESSION's by default)."""
        packet = binding(username or self.username(), password or self.password)
        (client or self.client).send(packet, self.address)

    async def open_flow(
        self, client: Peer | None = None, pod: Peer | None = None, username: str = "", password: str = ""
    ) -> tuple[str, int]:
        """A check relayed to `pod` (the pod); where the pod sees it come from."""
        self.check(client, username, password)
        data, upstream = await (pod or self.pod).receive()
        request = binding_request(data)
        assert request is not None and request.username == (username or self.username())
        return upstream

    async def both_ways(
        self, upstream: tuple[str, int], data: bytes, client: Peer | None = None, pod: Peer | None = None
    ) -> None:
        """`data` from `client` reaches `pod` from `upstream`, and the pod's reply to that
        address reaches the client from the relay's port."""
        client, pod = client or self.client, pod or self.pod
        client.send(data, self.address)
        assert await pod.receive() == (data, upstream)
        pod.send(data[::-1], upstream)
        assert await client.receive() == (data[::-1], self.address)


@contextlib.asynccontextmanager
async def network(channel: Channel, idle_timeout: float = FLOW_IDLE_TIMEOUT) -> AsyncIterator[Network]:
    """A relay listening on RELAY_HOST, routing SESSION's checks from CLIENT_UFRAG to a pod
    socket (a real answer's candidate pointed at it), and a client socket."""
    relay = UdpRelay(ADVERTISE, idle_timeout=idle_timeout)
    await relay.start(RELAY_HOST, 0)
    try:
        assert relay._transport is not None
        address = cast(tuple[str, int], relay._transport.get_extra_info("sockname")[:2])
        async with bound(POD_HOST) as pod, bound(CLIENT_HOST) as client:
            answer = aimed(await pod_answer(channel), pod.address)
            assert RELAY_CANDIDATE in relay.route(SESSION, answer, CLIENT_UFRAG)
            lines = sdp.sections(answer)[1]
            ufrag, password = sdp.attribute(lines, "ice-ufrag"), sdp.attribute(lines, "ice-pwd")
            assert ufrag and password
            route = relay.routes[f"{ufrag}:{CLIENT_UFRAG}"]
            assert list(relay.routes) == [f"{ufrag}:{CLIENT_UFRAG}"]
            assert (route.session, route.pod, route.password) == (SESSION, pod.address, password)
            yield Network(relay, address, answer, pod, client, ufrag, password)
    finally:
        relay.close()


def relayed(direction: str) -> float:
    """The relay's packet counter for `direction` ("to_pod", "to_client")."""
    return (
        REGISTRY.get_sample_value("lki_frontdoor_whip_relayed_packets_total", {"direction": direction}) or 0.0
    )


async def test_a_clients_check_opens_a_flow_both_ways(channel: Channel) -> None:
    async with network(channel) as net:
        upstream = await net.open_flow()
        # The pod sees the relay's socket for this flow, not the client.
        assert upstream != net.client.address and list(net.relay.flows) == [net.client.address]
        response = bytes(stun.Message(stun.Method.BINDING, stun.Class.RESPONSE))
        net.pod.send(response, upstream)
        assert await net.client.receive() == (response, net.address)

        to_pod, to_client = relayed("to_pod"), relayed("to_client")
        for data in (DTLS, MEDIA, MEDIA, CHECK):  # all of it follows the flow, looked at or not
            await net.both_ways(upstream, data)
        assert (relayed("to_pod") - to_pod, relayed("to_client") - to_client) == (4, 4)


async def test_unknown_clients_are_dropped(channel: Channel) -> None:
    async with network(channel) as net, bound(STRANGER_HOST) as stranger:
        upstream = await net.open_flow()
        for packet in (
            MEDIA,
            DTLS,
            binding("otherufrag:cli", net.password),
            binding(net.username("other"), net.password),  # the pod's ufrag, another client's
            binding(net.ufrag, net.password),  # the pod's ufrag alone
            binding(net.username(), net.password, stun.Class.RESPONSE),
            binding(net.username(), net.password)[:-1],
        ):
            stranger.send(packet, net.address)
        await net.pod.nothing()
        assert list(net.relay.flows) == [net.client.address]
        await net.both_ways(upstream, MEDIA)  # the known client's flow is unaffected
        await stranger.nothing()


@pytest.mark.parametrize(
    "forge",
    [
        lambda net: binding(net.username(), "not the pod's password"),
        lambda net: binding(net.username(), None),  # no MESSAGE-INTEGRITY
        # A check the client signed for another session, its USERNAME made this one's.
        lambda net: binding(net.username("clz"), net.password).replace(b":clz", f":{CLIENT_UFRAG}".encode()),
    ],
    ids=["wrong-password", "unsigned", "username-changed-after-signing"],
)
async def test_only_a_check_signed_with_the_pods_password_opens_a_flow(
    channel: Channel, forge: Callable[[Network], bytes]
) -> None:
    # Whoever read the pod's ufrag and the client's (both travel in the clear in every check)
    # can't open a flow to the pod without the password only the client and the pod know.
    async with network(channel) as net:
        net.client.send(forge(net), net.address)
        await net.pod.nothing()
        assert net.relay.flows == {}
        upstream = await net.open_flow()  # the same address, signed: relayed
        await net.both_ways(upstream, MEDIA)


async def test_sessions_whose_pod_ufrags_collide_are_routed_by_their_clients(channel: Channel) -> None:
    # A pod's ufrag is short and random: two pods may pick the same; the client's half of the
    # USERNAME (and each pod's password) keeps their sessions apart.
    async with network(channel) as net, bound(POD_HOST) as pod_b, bound(STRANGER_HOST) as client_b:
        net.route("WH_b", pod_b, "clib", password="the other pod's password")
        assert sorted(net.relay.routes) == sorted([net.username(), net.username("clib")])

        upstream = await net.open_flow()
        upstream_b = await net.open_flow(client_b, pod_b, net.username("clib"), "the other pod's password")
        assert {c: f.session for c, f in net.relay.flows.items()} == {
            net.client.address: SESSION,
            client_b.address: "WH_b",
        }
        await net.both_ways(upstream, MEDIA)
        await net.both_ways(upstream_b, DTLS, client_b, pod_b)
        await net.pod.nothing()  # nothing of the other session's reached either pod
        await pod_b.nothing()

        net.relay.remove_session(SESSION)
        assert list(net.relay.routes) == [net.username("clib")] and list(net.relay.flows) == [
            client_b.address
        ]
        await net.both_ways(upstream_b, MEDIA, client_b, pod_b)


async def test_a_check_signed_with_another_sessions_password_opens_no_flow(channel: Channel) -> None:
    async with network(channel) as net, bound(POD_HOST) as pod_b:
        net.route("WH_b", pod_b, "clib", password="the other pod's password")
        net.check(username=net.username("clib"))  # signed with SESSION's password
        net.check(password="the other pod's password")
        await net.pod.nothing()
        await pod_b.nothing()
        assert net.relay.flows == {}


async def test_flows_per_session_are_capped(channel: Channel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(udp, "MAX_FLOWS_PER_SESSION", 2)
    async with (
        network(channel) as net,
        bound(CLIENT_HOST) as second,
        bound(CLIENT_HOST) as third,
        bound(POD_HOST) as pod_b,
        bound(STRANGER_HOST) as client_b,
    ):
        net.route("WH_b", pod_b, "clib")
        upstreams = [await net.open_flow(), await net.open_flow(second)]
        net.check(third)  # one interface too many: dropped
        await net.pod.nothing()
        assert sorted(net.relay.flows) == sorted([net.client.address, second.address])
        # The cap is the session's: another session still opens a flow, and the session's own
        # flows go on.
        await net.open_flow(client_b, pod_b, net.username("clib"))
        for client, upstream in zip((net.client, second), upstreams, strict=True):
            await net.both_ways(upstream, MEDIA, client)
        third.send(MEDIA, net.address)
        await net.pod.nothing()
        await third.nothing()


async def test_flows_are_capped_in_total(channel: Channel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(udp, "MAX_FLOWS", 2)
    async with (
        network(channel) as net,
        bound(POD_HOST) as pod_b,
        bound(STRANGER_HOST) as client_b,
        bound(STRANGER_HOST) as client_c,
    ):
        net.route("WH_b", pod_b, "clib")
        net.route("WH_c", pod_b, "clic")
        await net.open_flow()
        upstream_b = await net.open_flow(client_b, pod_b, net.username("clib"))
        net.check(client_c, net.username("clic"))  # WH_c has no flow yet: the total is full
        await pod_b.nothing()
        assert sorted(net.relay.flows) == sorted([net.client.address, client_b.address])

        net.relay.remove_session(SESSION)  # room again
        await net.open_flow(client_c, pod_b, net.username("clic"))
        await net.both_ways(upstream_b, MEDIA, client_b, pod_b)


async def test_remove_session_closes_its_flows(channel: Channel) -> None:
    async with network(channel) as net:
        upstream = await net.open_flow()
        net.relay.remove_session("WH_other")
        await net.both_ways(upstream, MEDIA)

        net.relay.remove_session(SESSION)
        assert net.relay.flows == {} and net.relay.routes == {}
        net.client.send(MEDIA, net.address)
        net.check()  # no route either
        await net.pod.nothing()
        net.pod.send(MEDIA, upstream)  # to the closed flow's socket
        await net.client.nothing()


async def test_a_session_removed_while_its_flow_opens_gets_no_flow(channel: Channel) -> None:
    async with network(channel) as net:
        # The check as the relay's socket hands it over, then the session ends before the flow's
        # own socket is open.
        net.relay.datagram_received(binding(net.username(), net.password), net.client.address)
        assert list(net.relay.flows) == [net.client.address]
        net.relay.remove_session(SESSION)
        await net.pod.nothing()
        assert net.relay.flows == {}


async def test_idle_flows_are_swept(channel: Channel) -> None:
    async with network(channel, idle_timeout=IDLE) as net:
        upstream = await net.open_flow()
        for _ in range(12):  # 3 idle timeouts of traffic: the flow stays
            await net.both_ways(upstream, MEDIA)
            await asyncio.sleep(IDLE / 4)
        assert list(net.relay.flows) == [net.client.address]

        await eventually(lambda: not net.relay.flows, "the idle flow swept")
        net.client.send(MEDIA, net.address)
        await net.pod.nothing()
        # The client's next check opens a new flow.
        upstream = await net.open_flow()
        await net.both_ways(upstream, MEDIA)


async def test_close_stops_relaying(channel: Channel) -> None:
    async with network(channel) as net:
        upstream = await net.open_flow()
        net.relay.close()
        assert net.relay.flows == {}
        net.client.send(MEDIA, net.address)
        net.check()
        await net.pod.nothing()
        net.pod.send(MEDIA, upstream)
        await net.client.nothing()


async def test_a_webrtc_client_publishes_through_the_relay(channel: Channel) -> None:
    # aioice's own checks, signed with the password of the pod's own answer: what the relay
    # reads of them is what a real client sends. Neither side has the other's address but
    # through the relay: the client's offer carries no candidate, the answer only the relay's.
    relay = UdpRelay(ADVERTISE, keep_pod_candidates=False)
    await relay.start(RELAY_HOST, 0)
    try:
        assert relay._transport is not None
        relay.advertise = cast(tuple[str, int], relay._transport.get_extra_info("sockname")[:2])
        pc = client(audio=None)
        channel.offer, _ = without_candidates(await make_offer(pc))
        client_ufrag = sdp.attribute(sdp.sections(channel.offer)[1], "ice-ufrag")
        assert client_ufrag
        to_pod = relayed("to_pod")
        async with whip_input(channel, pc) as source:
            answer = await channel.next_answer()
            rewritten = relay.route(SESSION, answer["sdp"], client_ufrag)
            assert candidates(rewritten.splitlines()) == [
                f"a=candidate:lkirelay 1 udp 2130706431 {relay.advertise[0]} {relay.advertise[1]} typ host"
            ]
            await pc.setRemoteDescription(RTCSessionDescription(rewritten, "answer"))
            assert (await units(source, 1))[0].keyframe
            assert relay.flows and {flow.session for flow in relay.flows.values()} == {SESSION}
            assert relayed("to_pod") - to_pod >= 2  # checks, DTLS and media, all of it relayed
    finally:
        relay.close()
