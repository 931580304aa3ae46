"""The front door's WHIP UDP port (ingress_pod/frontdoor/udp.py): the pod ufrag read from an ICE
connectivity check, the relay's candidate added to the pod's answer (aiortc's, as WhipInput
sends it), and UdpRelay relaying between real sockets on 127.0.0.x: a client, a "pod" and the
relay, each on an address of its own."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

import pytest
from aioice import stun
from aiortc.sdp import SessionDescription, candidate_from_sdp
from prometheus_client import REGISTRY

from ingress_pod import sdp
from ingress_pod.frontdoor.udp import FLOW_IDLE_TIMEOUT, UdpRelay, relay_answer, stun_ufrag
from tests.unit.test_whip_answer import answered
from tests.unit.test_whip_frontdoor import eventually
from tests.unit.test_whip_input import Channel

# test_whip_input's fixtures: `loopback_only` (autouse: aiortc on 127.0.0.1 only, what WhipInput
# patches in aiortc undone after each test) and `channel` (the front door's end of a session).
from tests.unit.test_whip_input import channel as channel
from tests.unit.test_whip_input import loopback_only as loopback_only

RELAY_HOST, POD_HOST, CLIENT_HOST, STRANGER_HOST = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"
ADVERTISE = ("198.51.100.7", 7885)  # the relay's public address: only ever written into answers
RELAY_CANDIDATE = f"a=candidate:lkirelay 1 udp 2130706431 {ADVERTISE[0]} {ADVERTISE[1]} typ host"
SESSION = "WH_session"
WAIT = 2.0  # seconds for a packet to arrive (loopback: well under a millisecond)
QUIET = 0.3  # seconds a packet that must not arrive is waited for
IDLE = 0.2  # a short idle timeout, for the sweep
MEDIA = b"\x80\x60\x00\x01" + bytes(28)  # an RTP header and payload: not STUN
DTLS = b"\x16\xfe\xfd" + bytes(30)  # a DTLS record


def binding(
    username: str | None = "podu:cli",
    message_class: stun.Class = stun.Class.REQUEST,
    before: dict[str, object] | None = None,
) -> bytes:
    """A STUN Binding message as aioice writes it: `before` attributes, USERNAME, then an ICE
    check's attributes, MESSAGE-INTEGRITY and FINGERPRINT."""
    attributes = dict(before or {})
    if username is not None:
        attributes["USERNAME"] = username
    attributes |= {"PRIORITY": 1853817087, "ICE-CONTROLLING": 0x1234567890ABCDEF, "USE-CANDIDATE": None}
    message = stun.Message(stun.Method.BINDING, message_class, attributes=attributes)
    message.add_message_integrity(b"the pod's ice password")
    return bytes(message)


CHECK = binding()


@pytest.mark.parametrize(
    ("packet", "ufrag"),
    [
        (CHECK, "podu"),
        (binding("podu"), "podu"),  # no ':': the whole USERNAME
        (binding(before={"SOFTWARE": "abcde"}), "podu"),  # 3 bytes of padding before USERNAME
        (binding("pod:c", before={"SOFTWARE": "x"}), "pod"),
        (
            bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST, attributes={"USERNAME": "podu:cli"})),
            "podu",
        ),
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
        "username-only",
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
def test_stun_ufrag(packet: bytes, ufrag: str | None) -> None:
    assert stun_ufrag(packet) == ufrag


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


@dataclass
class Network:
    """A relay with one session's route, the session's pod and a client."""

    relay: UdpRelay
    address: tuple[str, int]  # where the relay listens
    pod: Peer
    client: Peer
    ufrag: str  # the pod's

    def check(self) -> None:
        """The client's connectivity check for the pod, to the relay."""
        self.client.send(binding(f"{self.ufrag}:cli"), self.address)

    async def open_flow(self) -> tuple[str, int]:
        """The client's check relayed to the pod; where the pod sees it come from."""
        self.check()
        data, upstream = await self.pod.receive()
        assert stun_ufrag(data) == self.ufrag
        return upstream

    async def both_ways(self, upstream: tuple[str, int], data: bytes) -> None:
        """`data` from the client reaches the pod from `upstream`, and the pod's reply to that
        address reaches the client from the relay's port."""
        self.client.send(data, self.address)
        assert await self.pod.receive() == (data, upstream)
        self.pod.send(data[::-1], upstream)
        assert await self.client.receive() == (data[::-1], self.address)


@contextlib.asynccontextmanager
async def network(channel: Channel, idle_timeout: float = FLOW_IDLE_TIMEOUT) -> AsyncIterator[Network]:
    """A relay listening on RELAY_HOST, routing SESSION to a pod socket (a real answer's
    candidate pointed at it), and a client socket."""
    relay = UdpRelay(ADVERTISE, idle_timeout=idle_timeout)
    await relay.start(RELAY_HOST, 0)
    try:
        assert relay._transport is not None
        address = cast(tuple[str, int], relay._transport.get_extra_info("sockname")[:2])
        async with bound(POD_HOST) as pod, bound(CLIENT_HOST) as client:
            answer = re.sub(
                r"^(a=candidate:\S+ 1 udp \d+) \S+ \d+ typ host",
                rf"\1 {pod.address[0]} {pod.address[1]} typ host",
                await pod_answer(channel),
                flags=re.M,
            )
            assert RELAY_CANDIDATE in relay.route(SESSION, answer)
            ufrag = sdp.attribute(sdp.sections(answer)[1], "ice-ufrag")
            assert ufrag is not None and relay.routes == {ufrag: (SESSION, pod.address)}
            yield Network(relay, address, pod, client, ufrag)
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
            binding("otherufrag:cli"),
            binding(f"{net.ufrag}:cli", stun.Class.RESPONSE),
            binding(f"{net.ufrag}:cli")[:-1],
        ):
            stranger.send(packet, net.address)
        await net.pod.nothing()
        assert list(net.relay.flows) == [net.client.address]
        await net.both_ways(upstream, MEDIA)  # the known client's flow is unaffected
        await stranger.nothing()


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
        net.relay.datagram_received(binding(f"{net.ufrag}:cli"), net.client.address)
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
