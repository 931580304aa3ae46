"""EagerJitterBuffer against aiortc's own JitterBuffer, both fed the same real RTP packets (their
`_data` set as aiortc's receiver sets it once it has depayloaded them), and `install` on real
aiortc receivers, alone and in a WhipInput's session with a real aiortc client."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from ingress_pod.inputs import jitter
from ingress_pod.inputs.encoded import VIDEO_CLOCK
from ingress_pod.inputs.jitter import AUDIO_CAPACITY, VIDEO_CAPACITY, EagerJitterBuffer, install
from tests.unit.test_whip_input import Channel, Pattern, client, session, units

# test_whip_input's fixtures: `loopback_only` (autouse: aiortc on 127.0.0.1 only, what WhipInput
# patches in aiortc undone after each test) and `channel` (the front door's end of a session).
from tests.unit.test_whip_input import channel as channel
from tests.unit.test_whip_input import loopback_only as loopback_only

VIDEO_STEP = VIDEO_CLOCK // 30  # RTP timestamp step of a 30 fps frame
AUDIO_STEP = 960  # 20 ms of Opus at 48 kHz
PAYLOAD_TYPE = 96
UNITS = 20  # taken from a WhipInput to measure its latency


@dataclass(frozen=True)
class Out:
    """A frame a buffer handed on: `at` is the index, in arrival order, of the packet it came with."""

    at: int
    timestamp: int
    data: bytes


def packet(seq: int, timestamp: int, marker: bool, data: bytes) -> RtpPacket:
    """An RTP packet as aiortc's receiver hands it to its jitter buffer: depayloaded into `_data`."""
    rtp = RtpPacket(PAYLOAD_TYPE, marker=int(marker), sequence_number=seq % 65536, timestamp=timestamp)
    rtp._data = data  # type: ignore[attr-defined]  # aiortc's receiver sets it, aiortc's RtpPacket has no field
    return rtp


def video(
    frames: int, first_seq: int = 1000, per_frame: int = 3, marker: bool = True
) -> list[list[RtpPacket]]:
    """`frames` video frames of `per_frame` packets each, in sequence from `first_seq` (mod 2**16),
    the marker on each frame's last packet (or on none)."""
    out = []
    for index in range(frames):
        timestamp = (index + 1) * VIDEO_STEP
        seqs = range(first_seq + index * per_frame, first_seq + (index + 1) * per_frame)
        out.append(
            [
                packet(seq, timestamp, marker and seq == seqs[-1], f"f{index}p{seq - seqs[0]};".encode())
                for seq in seqs
            ]
        )
    return out


def frame_data(frame: Sequence[RtpPacket]) -> bytes:
    """A frame's data, whole: its packets' in sequence."""
    return b"".join(p._data for p in frame)  # type: ignore[attr-defined]


class Recording(EagerJitterBuffer):
    """The eager buffer, keeping what it delivers (the receiver's decoder queue, in `install`)."""

    def __init__(self, capacity: int, is_video: bool) -> None:
        self.delivered: list[JitterFrame] = []
        super().__init__(capacity, is_video, lambda frame, _: self.delivered.append(frame))


def feed(buffer: JitterBuffer, packets: Sequence[RtpPacket]) -> list[Out]:
    """What `buffer` hands on as `packets` arrive, in order: the frame `add` returns (aiortc's),
    or those delivered meanwhile (the eager one's)."""
    out = []
    for index, rtp in enumerate(packets):
        _, frame = buffer.add(rtp)
        frames = [frame] if frame is not None else []
        if isinstance(buffer, Recording):
            frames += buffer.delivered
            buffer.delivered.clear()
        out += [Out(index, f.timestamp, f.data) for f in frames]
    return out


def aiortc_video() -> JitterBuffer:
    """aiortc's video jitter buffer, as its RTCRtpReceiver makes it."""
    return JitterBuffer(capacity=VIDEO_CAPACITY, is_video=True)


def eager_video() -> Recording:
    """The eager video jitter buffer, as `install` makes it."""
    return Recording(VIDEO_CAPACITY, is_video=True)


def flat(frames: Sequence[Sequence[RtpPacket]]) -> list[RtpPacket]:
    """The packets of `frames`, in sequence."""
    return [rtp for frame in frames for rtp in frame]


@pytest.mark.parametrize("first_seq", [1000, 65533, 65534], ids=["no-wrap", "wrap-between", "wrap-inside"])
@pytest.mark.parametrize(
    "order", [(0, 1, 2), (1, 0, 2), (2, 1, 0)], ids=["order-123", "order-213", "order-321"]
)
def test_a_video_frame_goes_with_its_last_packet(first_seq: int, order: tuple[int, int, int]) -> None:
    # The first frame in order (a buffer's origin is the first packet it sees), the second in `order`.
    first, second = video(2, first_seq)
    arrivals = [*first, *(second[i] for i in order)]
    expected = [
        Out(2, first[0].timestamp, frame_data(first)),
        Out(5, second[0].timestamp, frame_data(second)),
    ]
    assert feed(eager_video(), arrivals) == expected
    # aiortc's: the first once the second's first packet is in, the second not until a third starts.
    second_starts = len(first) + order.index(0)
    assert feed(aiortc_video(), arrivals) == [Out(second_starts, first[0].timestamp, frame_data(first))]


def lose(frames: list[list[RtpPacket]], frame: int, index: int, back_after: int | None) -> list[RtpPacket]:
    """The packets of `frames` in order, less packet `index` of frame `frame`, which comes back
    (a retransmission) `back_after` packets later, or never (None)."""
    lost = frames[frame][index]
    arrivals = [rtp for rtp in flat(frames) if rtp is not lost]
    if back_after is not None:
        arrivals.insert(flat(frames).index(lost) + back_after, lost)
    return arrivals


def reorder(frames: list[list[RtpPacket]], seed: int) -> list[RtpPacket]:
    """The packets of `frames`, each a few places from its own, a few lost, some of those
    retransmitted a few packets later: as a seeded random network would deliver them."""
    rng = random.Random(seed)
    # The first frame in order: a packet before the buffers' origin is dropped by both.
    arrivals = flat(frames[:1])
    keys = []
    for position, rtp in enumerate(flat(frames[1:])):
        if rng.random() < 0.05:
            if rng.random() < 0.5:
                continue
            position += rng.randint(3, 20)
        keys.append((position + rng.uniform(0, 3), rtp))
    return arrivals + [rtp for _, rtp in sorted(keys, key=lambda key: key[0])]


def swap_first(frames: list[list[RtpPacket]]) -> list[RtpPacket]:
    """The packets of `frames` in order, but for the first frame's first two, swapped."""
    first, second, *rest = flat(frames)
    return [second, first, *rest]


@pytest.mark.parametrize(
    "arrivals",
    [
        pytest.param(flat(video(10)), id="in-order"),
        pytest.param(flat(video(10, per_frame=1)), id="one-packet-frames"),
        pytest.param(flat(video(10, first_seq=65530, per_frame=2)), id="seq-wrap"),
        pytest.param(lose(video(10), 3, 1, back_after=4), id="middle-lost-then-retransmitted"),
        pytest.param(lose(video(10), 3, 2, back_after=4), id="marker-lost-then-retransmitted"),
        pytest.param(lose(video(10), 3, 0, back_after=7), id="first-lost-then-retransmitted"),
        pytest.param(lose(video(10), 3, 1, back_after=None), id="middle-lost"),
        # aiortc's rule drops the broken frame once the packets after it overflow the buffer.
        pytest.param(lose(video(200), 3, 1, back_after=None), id="middle-lost-overflow"),
        pytest.param(swap_first(video(10)), id="first-frame-out-of-order"),
        *[
            pytest.param(reorder(video(60, per_frame=1 + seed % 4), seed), id=f"random-{seed}")
            for seed in range(20)
        ],
    ],
)
def test_what_aiortcs_hands_on_and_never_later(arrivals: list[RtpPacket]) -> None:
    assert_aiortcs_and_never_later(arrivals)


def assert_aiortcs_and_never_later(arrivals: list[RtpPacket]) -> None:
    """The eager buffer hands on what aiortc's does, in order, each no later."""
    reference_buffer = aiortc_video()
    eager, reference = feed(eager_video(), arrivals), feed(reference_buffer, arrivals)
    assert [(out.timestamp, out.data) for out in eager[: len(reference)]] == [
        (out.timestamp, out.data) for out in reference
    ]
    assert all(mine.at <= theirs.at for mine, theirs in zip(eager, reference, strict=False))
    # Beyond those, only frames aiortc's buffer still holds, waiting for a next frame to start.
    held = {rtp.timestamp for rtp in reference_buffer._packets if rtp is not None}
    assert {out.timestamp for out in eager[len(reference) :]} <= held


def test_a_frame_missing_a_packet_waits_for_it() -> None:
    frames = video(6)
    arrivals = lose(frames, 1, 1, back_after=6)  # frame 1's middle packet, retransmitted at index 10
    assert [(out.at, out.timestamp) for out in feed(eager_video(), arrivals)] == [
        (2, frames[0][0].timestamp),
        (10, frames[1][0].timestamp),  # with the retransmission
        # Those held behind it (frames 2 and 3, already whole) go at once with it, then each
        # with its last packet again. (aiortc's would hand on one per packet added: with
        # one-packet frames the lag would never drain.)
        (10, frames[2][0].timestamp),
        (11, frames[3][0].timestamp),  # its last packet
        (14, frames[4][0].timestamp),
        (17, frames[5][0].timestamp),
    ]


@pytest.mark.parametrize(
    "arrivals",
    [
        pytest.param(flat(video(10, marker=False)), id="in-order"),
        pytest.param(flat(video(10, first_seq=65530, marker=False)), id="seq-wrap"),
        pytest.param(lose(video(10, marker=False), 3, 1, back_after=4), id="lost-then-retransmitted"),
        pytest.param(lose(video(200, marker=False), 3, 1, back_after=None), id="lost-overflow"),
        *[pytest.param(reorder(video(60, marker=False), seed), id=f"random-{seed}") for seed in range(5)],
    ],
)
def test_without_markers_it_hands_on_what_aiortcs_does(arrivals: list[RtpPacket]) -> None:
    assert_aiortcs_and_never_later(arrivals)
    # With nothing lost or late, exactly when aiortc's does: each frame once the next has begun.
    seqs = [rtp.sequence_number for rtp in arrivals]
    if all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs)):
        assert feed(eager_video(), arrivals) == feed(aiortc_video(), arrivals)


@pytest.mark.parametrize("first_seq", [10, 65533])
@pytest.mark.parametrize("marker", [False, True])
def test_audio_packets_go_at_once(first_seq: int, marker: bool) -> None:
    arrivals = [packet(first_seq + i, i * AUDIO_STEP, marker, b"opus%d" % i) for i in range(8)]
    expected = [Out(i, i * AUDIO_STEP, b"opus%d" % i) for i in range(8)]
    assert feed(Recording(AUDIO_CAPACITY, is_video=False), arrivals) == expected
    # aiortc's (as its receiver makes it): four packets behind.
    reference = feed(JitterBuffer(capacity=AUDIO_CAPACITY, prefetch=4), arrivals)
    assert [out.at for out in reference] == [4, 5, 6, 7]


def test_audio_waits_for_no_lost_packet_and_drops_a_late_one() -> None:
    # Packet 5 lost; 11 arrives before 10. aiortc asks for no audio retransmission: waiting for
    # one would hold the audio until the buffer overflows, and stay that far behind.
    order = [*range(5), *range(6, 10), 11, 10, *range(12, 40)]
    arrivals = [packet(seq, seq * AUDIO_STEP, False, b"opus%d" % seq) for seq in order]
    out = feed(Recording(AUDIO_CAPACITY, is_video=False), arrivals)
    assert [o.at for o in out] == [i for i, seq in enumerate(order) if seq != 10]  # each at once
    assert [o.timestamp // AUDIO_STEP for o in out] == [seq for seq in order if seq != 10]


@pytest.mark.parametrize(("kind", "capacity"), [("video", VIDEO_CAPACITY), ("audio", AUDIO_CAPACITY)])
async def test_install_replaces_the_receivers_buffer(kind: str, capacity: int) -> None:
    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver(kind, direction="recvonly").receiver
        install(receiver, kind)
        buffer = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert type(buffer) is EagerJitterBuffer
        assert (buffer.capacity, buffer._is_video) == (capacity, kind == "video")
    finally:
        await pc.close()


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "aiortcs"])
async def test_a_whip_input_hands_a_frame_on_before_the_client_makes_the_next(
    channel: Channel, monkeypatch: pytest.MonkeyPatch, eager: bool
) -> None:
    if not eager:
        monkeypatch.setattr(jitter, "install", lambda receiver, kind: None)
    pc = client(audio=None)
    pattern = pc.getTransceivers()[0].sender.track
    assert isinstance(pattern, Pattern)
    async with session(channel, pc) as source:
        # For each unit, how many frames the client had made after it when it came out. The
        # receiver counts timestamps from the first frame it got, the client from its first one:
        # on loopback, the same frame.
        ahead = []
        for _ in range(UNITS):
            (unit,) = await units(source, 1)
            ahead.append(pattern.count - 1 - round(unit.timestamp_us * 30 / 1_000_000))
        assert source._pc is not None
        (receiver,) = source._pc.getReceivers()
        buffer = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
    # Negotiation kept the installed buffer; aiortc's holds each frame until the next one's first
    # packet (so the client must have made it), the eager one hands it on a few ms after it was
    # sent, well within the 33 ms before the next (most of the time: the client's encoder runs
    # in a thread of its own, and a busy machine may delay either side).
    assert type(buffer) is (EagerJitterBuffer if eager else JitterBuffer)
    if eager:
        assert ahead.count(0) >= UNITS // 2, ahead
    else:
        assert min(ahead) >= 1, ahead
