"""The pod's WHIP answer: the SDP section helpers (ingress_pod/sdp.py), which of an offer's
simulcast layers is its best (answer.best_layer), and answer.shape on aiortc's own answer to an
aiortc offer (made Chromium-like with simulcast where a test says so), negotiated by a WhipInput."""

from __future__ import annotations

import re

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.sdp import SessionDescription

from ingress_pod import sdp
from ingress_pod.inputs.answer import ABS_SEND_TIME, RID_EXTENSION, START_BITRATE_KBPS, best_layer, shape
from tests.unit.test_whip_input import Channel, make_offer, whip_input

# test_whip_input's fixtures: `loopback_only` (autouse: aiortc on 127.0.0.1 only, what WhipInput
# patches in aiortc undone after each test) and `channel` (the front door's end of a session).
from tests.unit.test_whip_input import channel as channel
from tests.unit.test_whip_input import loopback_only as loopback_only

SESSION = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0"]
VIDEO = ["m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:0", "a=rtpmap:96 VP8/90000"]
AUDIO = ["m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=mid:1", "a=rtpmap:111 opus/48000/2"]
APPLICATION = ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "a=mid:2"]
TEXT = "\r\n".join(SESSION + VIDEO + AUDIO) + "\r\n"
START = f"x-google-start-bitrate={START_BITRATE_KBPS}"
# Chromium's id for the rid extension (aiortc's own offer uses 1 and 3).
RID_EXTMAP = f"a=extmap:10 {RID_EXTENSION}"
# How LiveKit's clients (and Chromium) offer three layers, smallest first.
LIVEKIT_SIMULCAST = ["a=rid:q send", "a=rid:h send", "a=rid:f send", "a=simulcast:send q;h;f"]


@pytest.mark.parametrize(
    "text",
    [
        TEXT,
        TEXT.replace("\r\n", "\n"),
        TEXT.removesuffix("\r\n"),
        TEXT.replace("\r\n", "\n").removesuffix("\n"),
        TEXT + "\r\n",
    ],
    ids=["crlf", "lf", "crlf-unterminated", "lf-unterminated", "blank-line-at-end"],
)
def test_sections_and_join_round_trip(text: str) -> None:
    parts = sdp.sections(text)
    assert parts == [SESSION, VIDEO, AUDIO]
    assert sdp.join(parts) == TEXT


def test_a_description_without_media_is_one_section() -> None:
    assert sdp.sections("\n".join(SESSION)) == [SESSION]
    assert sdp.join([SESSION]) == "\r\n".join(SESSION) + "\r\n"


ATTRIBUTES = [
    "a=ice-ufrag:abcd",
    "a=ice-pwd: xyz ",
    "a=sendonly",
    "a=fmtp:96 x=1",
    "a=fmtp:97 y=2",
    "a=extmap-allow-mixed",
]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ice-ufrag", "abcd"),
        ("ice-pwd", "xyz"),  # stripped
        ("fmtp", "96 x=1"),  # the first
        ("sendonly", None),  # a flag has no value
        ("ice", None),  # a prefix of a name is not the name
        ("extmap", None),
        ("rtpmap", None),
    ],
)
def test_attribute(name: str, value: str | None) -> None:
    assert sdp.attribute(ATTRIBUTES, name) == value


@pytest.mark.parametrize(
    ("parts", "kind", "expected"),
    [
        ([SESSION, VIDEO, AUDIO], "video", VIDEO),
        ([SESSION, VIDEO, AUDIO], "audio", AUDIO),
        ([SESSION, AUDIO], "video", None),
        ([SESSION, VIDEO, [*VIDEO, "a=inactive"]], "video", VIDEO),  # the first
        ([SESSION, ["m=videox 9 RTP/AVP 96"]], "video", None),
        ([SESSION, APPLICATION, VIDEO], "application", APPLICATION),
    ],
    ids=["video", "audio", "absent", "first-of-two", "kind-is-a-word", "application"],
)
def test_media(parts: list[list[str]], kind: str, expected: list[str] | None) -> None:
    assert sdp.media(parts, kind) == expected


def offered(*lines: str, extmap: str | None = RID_EXTMAP) -> list[str]:
    """An offer's video section with `lines` (and the rid extension unless told otherwise)."""
    return [*VIDEO, "a=sendonly", *([extmap] if extmap else []), *lines]


@pytest.mark.parametrize(
    ("video", "rid"),
    [
        (offered(*LIVEKIT_SIMULCAST), "f"),
        (offered("a=rid:f send", "a=rid:q send", "a=rid:h send", "a=simulcast:send f;q;h"), "f"),
        (offered("a=rid:h send", "a=rid:f send", "a=rid:q send", "a=simulcast:send h;f;q"), "f"),
        (offered("a=rid:q send", "a=rid:h send", "a=simulcast:send q;h"), "h"),
        (
            offered(
                "a=rid:a send max-width=320;max-height=180",
                "a=rid:b send max-width=1280;max-height=720",
                "a=rid:c send max-width=640;max-height=360",
                "a=simulcast:send a;b;c",
            ),
            "b",
        ),
        (offered("a=rid:a send max-width=1920", "a=rid:b send max-width=640", "a=simulcast:send a;b"), "a"),
        # Sizes win over LiveKit's names.
        (
            offered("a=rid:f send max-height=180", "a=rid:q send max-height=720", "a=simulcast:send f;q"),
            "q",
        ),
        (offered("a=rid:lo send", "a=rid:mid send", "a=rid:hi send", "a=simulcast:send lo;mid;hi"), "hi"),
        # Sizes for only some layers don't order them all: the last listed.
        (
            offered("a=rid:a send max-width=1920", "a=rid:b send", "a=rid:c send", "a=simulcast:send a;b;c"),
            "c",
        ),
        (offered("a=rid:q send", "a=rid:h send", "a=rid:f send", "a=simulcast:send ~q;h;~f"), "f"),
        (offered("a=rid:0 send", "a=rid:1 send", "a=rid:2 send", "a=simulcast:send 0;~1,2"), "1"),
        (offered("a=rid:f send", "a=rid:x send", "a=rid:h send", "a=simulcast:send f,x;h"), "f"),
        (offered("a=rid:q recv", "a=rid:f recv", "a=simulcast:recv q;f"), None),
        (offered(*LIVEKIT_SIMULCAST, extmap=None), None),
        (offered(*LIVEKIT_SIMULCAST, extmap=f"a=extmap:4 {ABS_SEND_TIME}"), None),
        (offered("a=rid:f send"), None),
        (offered("a=simulcast:send"), None),
        (offered(), None),
    ],
    ids=[
        "livekit-q-h-f",
        "livekit-f-q-h",
        "livekit-h-f-q",
        "livekit-without-f",
        "largest-area",
        "width-only",
        "sizes-over-names",
        "unknown-names",
        "sizes-for-some",
        "paused",
        "alternatives-paused",
        "alternatives",
        "recv",
        "no-rid-extension",
        "other-extension",
        "rid-without-simulcast",
        "no-layers",
        "no-simulcast",
    ],
)
def test_best_layer(video: list[str], rid: str | None) -> None:
    extmap = next((line for line in video if RID_EXTENSION in line), "")
    assert best_layer(video) == (None if rid is None else (rid, extmap))


def with_simulcast(offer: str) -> str:
    """`offer` as Chromium makes it for LiveKit's three layers: the rid extension after the other
    extensions, and the layers at the end of the video section."""
    parts = sdp.sections(offer)
    video = sdp.media(parts, "video")
    assert video is not None
    last_extmap = max(i for i, line in enumerate(video) if line.startswith("a=extmap:"))
    video.insert(last_extmap + 1, RID_EXTMAP)
    video += LIVEKIT_SIMULCAST
    return sdp.join(parts)


async def answered(channel: Channel, *kinds: str, simulcast: bool = False) -> tuple[str, str, str]:
    """(the client's offer, aiortc's answer to it, the answer the pod sends): a client with a
    sendonly transceiver of each kind and every codec aiortc has (VP8 and H.264 for video),
    `with_simulcast` if told, answered by a WhipInput over test_whip_input's session channel."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind in kinds:
        pc.addTransceiver(kind, direction="sendonly")
    offer = await make_offer(pc)
    channel.offer = with_simulcast(offer) if simulcast else offer
    async with whip_input(channel, pc) as source:
        sent = await channel.next_answer()
        assert source._pc is not None and "sdp" in sent, sent
        return channel.offer, str(source._pc.localDescription.sdp), sent["sdp"]


def rtpmaps(section: list[str]) -> dict[str, str]:
    """Payload type → codec name, of a media section."""
    return dict(re.findall(r"^a=rtpmap:(\d+) ([\w-]+)/", "\n".join(section), re.M))


@pytest.mark.parametrize("simulcast", [False, True], ids=["single", "simulcast"])
async def test_shape_on_aiortcs_answer(channel: Channel, simulcast: bool) -> None:
    client_offer, raw, sent = await answered(channel, "video", "audio", simulcast=simulcast)
    shaped, rid = shape(raw, client_offer)
    assert sent == shaped

    assert ABS_SEND_TIME in raw and ABS_SEND_TIME not in shaped
    raw_video, video = (sdp.media(sdp.sections(text), "video") for text in (raw, shaped))
    assert raw_video is not None and video is not None
    codecs = {pt: name for pt, name in rtpmaps(video).items() if name in ("VP8", "H264")}
    assert sorted(set(codecs.values())) == ["H264", "VP8"]
    # aiortc writes fmtp lines for H.264 (extended) and none for VP8 (added).
    new_fmtp: list[str] = []
    for pt, name in codecs.items():
        before = [line for line in raw_video if line.startswith(f"a=fmtp:{pt} ")]
        after = [line for line in video if line.startswith(f"a=fmtp:{pt} ")]
        assert bool(before) == (name == "H264"), name
        assert after == ([f"{before[0]};{START}"] if before else [f"a=fmtp:{pt} {START}"]), name
        assert sum(line.count("x-google-start-bitrate") for line in after) == 1
        new_fmtp += [] if before else after

    accepted = [RID_EXTMAP, "a=rid:f recv", "a=simulcast:recv f"]
    if simulcast:
        assert video[-3:] == accepted and rid == "f"
    else:
        assert rid is None
        assert not [line for line in video if line.startswith(("a=rid:", "a=simulcast:"))]
        assert RID_EXTENSION not in shaped
    # Nothing else differs from aiortc's answer.
    added = new_fmtp + (accepted if simulcast else [])
    restored = [line.removesuffix(f";{START}") for line in video if line not in added]
    assert restored == [line for line in raw_video if ABS_SEND_TIME not in line]
    assert [part for part in sdp.sections(shaped) if part[0] != video[0]] == [
        [line for line in part if ABS_SEND_TIME not in line]
        for part in sdp.sections(raw)
        if part[0] != video[0]
    ]

    parsed = SessionDescription.parse(shaped)
    assert [m.kind for m in parsed.media] == ["video", "audio"]
    parsed_video = parsed.media[0]
    assert {
        str(c.parameters.get("x-google-start-bitrate"))
        for c in parsed_video.rtp.codecs
        if c.name in codecs.values()
    } == {str(START_BITRATE_KBPS)}
    uris = {ext.uri for m in parsed.media for ext in m.rtp.headerExtensions}
    assert ABS_SEND_TIME not in uris
    assert (RID_EXTENSION in uris) == simulcast


async def test_an_audio_only_answer_loses_only_abs_send_time(channel: Channel) -> None:
    client_offer, raw, sent = await answered(channel, "audio")
    parts = sdp.sections(raw)
    assert sdp.media(parts, "video") is None and sent == raw
    assert shape(raw, client_offer) == (raw, None)
    # Chromium offers abs-send-time for audio too; aiortc leaves it out of its answer, an answer
    # with it loses that line and nothing else.
    audio = sdp.media(parts, "audio")
    assert audio is not None
    audio.insert(1, f"a=extmap:3 {ABS_SEND_TIME}")
    assert shape(sdp.join(parts), client_offer) == (raw, None)
