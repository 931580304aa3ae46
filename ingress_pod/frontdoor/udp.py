"""WHIP media through one UDP port of the front door, relayed to each session's media pod.

A media pod's own ICE candidate is its pod IP, which a client outside the cluster can't reach
(and hostNetwork is not an option). So the front door, which has a Service anyway, also
listens on one UDP port and adds that port's public address to every WHIP answer as a host
candidate. A client's first packet there is an ICE connectivity check, a STUN Binding request
whose USERNAME is `<pod ufrag>:<client ufrag>` (RFC 8445 7.2.2): the pod's ufrag, taken from
its answer, names the session and with it the pod's address. From then on that client address
has a flow: a socket connected to the pod, so the pod sees one peer (a peer-reflexive
candidate) and its replies go back to the client from the public port. DTLS and SRTP follow
the flow without being looked at.

This is the single-port mode LiveKit's own server offers, as a relay: one UDP port for a whole
cluster's WHIP sessions, at the cost of a hop (loopback: tens of microseconds) and of the front
door's CPU per packet (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import struct
from dataclasses import dataclass, field
from typing import cast

from prometheus_client import Counter

from ingress_pod import sdp

log = logging.getLogger(__name__)

_STUN_HEADER = struct.Struct("!HHI12s")
_STUN_BINDING_REQUEST = 0x0001
_STUN_MAGIC = 0x2112A442
_STUN_USERNAME = 0x0006
_STUN_MESSAGE_INTEGRITY = 0x0008
RELAYED = Counter(
    "lki_frontdoor_whip_relayed_packets_total", "WHIP media packets relayed by the UDP port", ["direction"]
)
_TO_POD, _TO_CLIENT = RELAYED.labels("to_pod"), RELAYED.labels("to_client")
# A flow nobody sent on for this long is closed (ICE consent checks come every few seconds).
FLOW_IDLE_TIMEOUT = 30.0
# A client checks from each of its interfaces: a few flows per session. The total bounds the
# sockets the relay holds, whoever sends.
MAX_FLOWS_PER_SESSION = 8
MAX_FLOWS = 4096


@dataclass(frozen=True)
class _Route:
    """Where a session's checks go: its pod, and the password they must be signed with."""

    session: str
    pod: tuple[str, int]
    password: str


@dataclass(frozen=True)
class BindingRequest:
    """What the relay reads of a STUN Binding request (RFC 8489): who it is for, and its
    MESSAGE-INTEGRITY (the HMAC, and the message it covers with the length it was computed on)."""

    username: str
    integrity: bytes
    covered: bytes

    def signed_with(self, password: str) -> bool:
        """Whether the sender knows `password` (the pod's ICE password, RFC 8445 7.2.2)."""
        digest = hmac.new(password.encode(), self.covered, hashlib.sha1).digest()
        return hmac.compare_digest(digest, self.integrity)


def binding_request(packet: bytes) -> BindingRequest | None:
    """The packet as a STUN Binding request with USERNAME and MESSAGE-INTEGRITY, or None."""
    if len(packet) < _STUN_HEADER.size:
        return None
    kind, length, magic, _ = _STUN_HEADER.unpack_from(packet)
    if kind != _STUN_BINDING_REQUEST or magic != _STUN_MAGIC or len(packet) < _STUN_HEADER.size + length:
        return None
    offset, end = _STUN_HEADER.size, _STUN_HEADER.size + length
    username = None
    while offset + 4 <= end:
        attr, size = struct.unpack_from("!HH", packet, offset)
        if offset + 4 + size > end:
            return None
        value = packet[offset + 4 : offset + 4 + size]
        if attr == _STUN_USERNAME:
            username = value.decode(errors="replace")
        elif attr == _STUN_MESSAGE_INTEGRITY and username is not None and size == 20:
            # The HMAC covers the message up to this attribute, its length field counting
            # up to this attribute's end (a FINGERPRINT after it is left out).
            covered = bytearray(packet[:offset])
            struct.pack_into("!H", covered, 2, offset + 24 - _STUN_HEADER.size)
            return BindingRequest(username, value, bytes(covered))
        offset += 4 + (size + 3) // 4 * 4
    return None


@dataclass(eq=False)
class _Flow:
    """One client address's packets to and from one pod."""

    session: str
    upstream: asyncio.DatagramTransport | None = None
    pending: list[bytes] = field(default_factory=list)  # sent before the upstream socket is ready
    last_seen: float = 0.0


class _Upstream(asyncio.DatagramProtocol):
    """The relay's socket towards a pod, for one client: what the pod sends goes to the client."""

    def __init__(self, relay: UdpRelay, client: tuple[str, int]) -> None:
        self.relay, self.client = relay, client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.to_client(data, self.client)


class UdpRelay(asyncio.DatagramProtocol):
    """The WHIP UDP port: routes (pod ufrag → pod address) come from answers; flows from
    clients' first connectivity checks."""

    def __init__(
        self,
        advertise: tuple[str, int],
        keep_pod_candidates: bool = True,
        idle_timeout: float = FLOW_IDLE_TIMEOUT,
    ) -> None:
        self.advertise = advertise
        self.keep_pod_candidates = keep_pod_candidates
        self.idle_timeout = idle_timeout
        self.routes: dict[str, _Route] = {}  # by the USERNAME of the session's checks
        self._tasks: set[asyncio.Task[None]] = set()
        self.flows: dict[tuple[str, int], _Flow] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self, host: str, port: int) -> None:
        """Listen on `host:port`."""
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._sweeper = loop.call_later(self.idle_timeout, self._sweep)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # asyncio's own isn't a subclass

    def close(self) -> None:
        """Stop listening and drop every flow."""
        for flow in self.flows.values():
            if flow.upstream is not None:
                flow.upstream.close()
        self.flows.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._transport is not None:
            self._transport.close()

    def route(self, session: str, answer: str, client_ufrag: str) -> str:
        """The pod's answer for `session`, with the relay's candidate added. From now on, a
        connectivity check from the client (USERNAME `<pod ufrag>:<client ufrag>`, signed with
        the pod's password: only the client and the pod know it) opens a flow to the pod's
        candidate. ValueError for an answer without ufrag, password or UDP host candidate."""
        rewritten, ufrag, pod = relay_answer(answer, self.advertise, self.keep_pod_candidates)
        password = sdp.attribute([line for part in sdp.sections(answer) for line in part], "ice-pwd")
        if not password:
            raise ValueError("the media pod's answer has no ICE password")
        self.routes[f"{ufrag}:{client_ufrag}"] = _Route(session, pod, password)
        return rewritten

    def remove_session(self, session: str) -> None:
        """The session ended: forget its route and close its flows."""
        for username in [u for u, route in self.routes.items() if route.session == session]:
            del self.routes[username]
        for client in [c for c, f in self.flows.items() if f.session == session]:
            self._close(client)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        flow = self.flows.get(addr)
        if flow is None:
            route = self._route_of(data)
            if route is None:
                return  # not a check for a live session, or one too many: nothing to answer
            flow = self.flows[addr] = _Flow(route.session)
            task = asyncio.get_running_loop().create_task(self._connect(addr, flow, route.pod))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        flow.last_seen = asyncio.get_running_loop().time()
        if flow.upstream is None:
            flow.pending.append(data)
        else:
            flow.upstream.sendto(data)
            _TO_POD.inc()

    def _route_of(self, packet: bytes) -> _Route | None:
        """The route a new client address's first packet may open: a connectivity check for a
        live session, signed with its pod's password, within the flow limits."""
        check = binding_request(packet)
        route = self.routes.get(check.username) if check else None
        if check is None or route is None or not check.signed_with(route.password):
            return None
        if len(self.flows) >= MAX_FLOWS:
            return None
        if sum(flow.session == route.session for flow in self.flows.values()) >= MAX_FLOWS_PER_SESSION:
            return None
        return route

    def to_client(self, data: bytes, client: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(data, client)
            _TO_CLIENT.inc()

    async def _connect(self, client: tuple[str, int], flow: _Flow, pod: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Upstream(self, client), remote_addr=pod
            )
        except OSError as err:
            log.warning("could not reach a media pod", extra={"pod": f"{pod[0]}:{pod[1]}", "error": str(err)})
            self.flows.pop(client, None)
            return
        if self.flows.get(client) is not flow:  # the session ended meanwhile
            transport.close()
            return
        flow.upstream = transport
        for data in flow.pending:
            transport.sendto(data)
            _TO_POD.inc()
        flow.pending.clear()

    def _close(self, client: tuple[str, int]) -> None:
        flow = self.flows.pop(client, None)
        if flow is not None and flow.upstream is not None:
            flow.upstream.close()

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for client in [c for c, f in self.flows.items() if now - f.last_seen > self.idle_timeout]:
            self._close(client)
        self._sweeper = loop.call_later(self.idle_timeout, self._sweep)


def relay_answer(
    answer: str, advertise: tuple[str, int], keep_pod_candidates: bool
) -> tuple[str, str, tuple[str, int]]:
    """(the answer with the relay's candidate, the pod's ufrag, the pod's candidate address).

    Every media section gets the relay's candidate, a host candidate at the highest priority
    (the pod's own have the same: a client tries both); the pod's own candidates stay unless
    told otherwise (a client inside the cluster reaches them directly).
    Raises ValueError for an answer without a ufrag or a UDP host candidate."""
    parts = sdp.sections(answer)
    lines = [line for part in parts for line in part]
    ufrag = sdp.attribute(lines, "ice-ufrag")
    pod = next((a for a in map(_candidate_address, lines) if a is not None), None)
    if not ufrag or pod is None:
        raise ValueError("the media pod's answer has no ICE ufrag or UDP host candidate")
    ours = f"a=candidate:lkirelay 1 udp 2130706431 {advertise[0]} {advertise[1]} typ host"
    for part in parts[1:]:
        if not keep_pod_candidates:
            part[:] = [line for line in part if not line.startswith("a=candidate:")]
        end = next((i for i, line in enumerate(part) if line.startswith("a=end-of-candidates")), len(part))
        part.insert(end, ours)
    return sdp.join(parts), ufrag, pod


def _candidate_address(line: str) -> tuple[str, int] | None:
    """The address of an `a=candidate:` line for a UDP host candidate."""
    parts = line.split()
    if (
        line.startswith("a=candidate:")
        and len(parts) >= 8
        and parts[2].lower() == "udp"
        and parts[7] == "host"
    ):
        return parts[4], int(parts[5])
    return None
