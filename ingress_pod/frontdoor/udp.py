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
RELAYED = Counter(
    "lki_frontdoor_whip_relayed_packets_total", "WHIP media packets relayed by the UDP port", ["direction"]
)
_TO_POD, _TO_CLIENT = RELAYED.labels("to_pod"), RELAYED.labels("to_client")
# A flow nobody sent on for this long is closed (ICE consent checks come every few seconds).
FLOW_IDLE_TIMEOUT = 30.0


def stun_ufrag(packet: bytes) -> str | None:
    """The recipient's ufrag in a STUN Binding request (the USERNAME's part before ':'), or None
    for any other packet."""
    if len(packet) < _STUN_HEADER.size:
        return None
    kind, length, magic, _ = _STUN_HEADER.unpack_from(packet)
    if kind != _STUN_BINDING_REQUEST or magic != _STUN_MAGIC or len(packet) < _STUN_HEADER.size + length:
        return None
    offset, end = _STUN_HEADER.size, _STUN_HEADER.size + length
    while offset + 4 <= end:
        attr, size = struct.unpack_from("!HH", packet, offset)
        if offset + 4 + size > end:
            return None
        if attr == _STUN_USERNAME:
            username = packet[offset + 4 : offset + 4 + size].decode(errors="replace")
            return username.split(":", 1)[0]
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
        self.routes: dict[str, tuple[str, tuple[str, int]]] = {}  # ufrag → (session, pod address)
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

    def route(self, session: str, answer: str) -> str:
        """The pod's answer for `session`, with the relay's candidate added; clients checking the
        pod's ufrag are relayed to its candidate from now on. ValueError for an answer without."""
        rewritten, ufrag, pod = relay_answer(answer, self.advertise, self.keep_pod_candidates)
        self.routes[ufrag] = (session, pod)
        return rewritten

    def remove_session(self, session: str) -> None:
        """The session ended: forget its route and close its flows."""
        for ufrag in [u for u, (s, _) in self.routes.items() if s == session]:
            del self.routes[ufrag]
        for client in [c for c, f in self.flows.items() if f.session == session]:
            self._close(client)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        flow = self.flows.get(addr)
        if flow is None:
            route = self.routes.get(stun_ufrag(data) or "")
            if route is None:
                return  # not a check for a live session: nothing to answer
            flow = self.flows[addr] = _Flow(route[0])
            asyncio.get_running_loop().create_task(self._connect(addr, flow, route[1]))
        flow.last_seen = asyncio.get_running_loop().time()
        if flow.upstream is None:
            flow.pending.append(data)
        else:
            flow.upstream.sendto(data)
            _TO_POD.inc()

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
