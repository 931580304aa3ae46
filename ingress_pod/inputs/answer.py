"""How the pod's SDP answer differs from the one aiortc writes, and why.

- **Bandwidth.** aiortc estimates the client's bandwidth from abs-send-time (REMB). In a busy
  Python process its arrival times jitter, which the estimator reads as queueing: it held
  Chromium at about 250 kbit/s, 2-4 frames per second at 720p. The answer leaves that extension
  out (the client then adapts to the loss the pod's receiver reports, RFC 3550) and asks the
  client to start at `START_BITRATE_KBPS` (`x-google-start-bitrate`, which Chromium-based
  clients read from the answer), about LiveKit's 720p top layer.
- **Simulcast** (RFC 8853). aiortc receives one stream per media section and declines
  simulcast by leaving it out; a client then sends only its first encoding, which LiveKit's
  clients (and most others) list smallest first. So the answer accepts simulcast with one layer,
  the client's best, which the client then sends alone (RFC 8853 5.3 lets the answerer drop
  layers); the pod forwards it as any single stream. Forwarding every layer would take a
  receiver per RTP stream id and a publication with a pre-encoded source per layer, which the
  rtc SDK does not offer (pre-encoded video is published with `simulcast=False`).
"""

from __future__ import annotations

import re

from ingress_pod import sdp

START_BITRATE_KBPS = 2000
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
# A simulcast answer must negotiate the RTP header extension that carries the rid (RFC 8852).
RID_EXTENSION = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
# LiveKit's layer names, best first (`f`ull, `h`alf, `q`uarter).
_LIVEKIT_RIDS = ("f", "h", "q")
_MAX_SIZE = re.compile(r"max-(width|height)=(\d+)")
_VIDEO_RTPMAP = re.compile(r"a=rtpmap:(\d+) (VP8|H264)/")


def shape(answer: str, offer: str) -> tuple[str, str | None]:
    """(the answer to send, the rid of the simulcast layer taken or None)."""
    parts = sdp.sections(answer)
    for part in parts[1:]:
        part[:] = [line for line in part if not (line.startswith("a=extmap:") and ABS_SEND_TIME in line)]
    video = sdp.media(parts, "video")
    if video is None:
        return sdp.join(parts), None
    video[:] = _with_start_bitrate(video)
    offered = sdp.media(sdp.sections(offer), "video")
    best = best_layer(offered) if offered else None
    if best is not None:
        rid, extmap = best
        video += [extmap, f"a=rid:{rid} recv", f"a=simulcast:recv {rid}"]
    return sdp.join(parts), best and best[0]


def best_layer(video: list[str]) -> tuple[str, str] | None:
    """(rid, the offer's `a=extmap` line of the rid extension) of the best layer a video media
    section offers to send; None without simulcast (or without the rid extension). The best is
    the largest by `max-width`/`max-height`, else LiveKit's `f`, `h`, `q`, else the last listed
    (clients list smallest first)."""
    direction, _, layers = (sdp.attribute(video, "simulcast") or "").partition(" ")
    extmap = next((line for line in video if line.startswith("a=extmap:") and RID_EXTENSION in line), "")
    rids = [layer.split(",")[0].lstrip("~") for layer in layers.split(";") if layer]
    if direction != "send" or not rids or not extmap:
        return None
    area: dict[str, int] = {}
    for line in video:
        if line.startswith("a=rid:"):
            rid, _, params = line[len("a=rid:") :].partition(" ")
            sizes = dict(_MAX_SIZE.findall(params))
            if sizes:
                area[rid] = int(sizes.get("width", 1)) * int(sizes.get("height", 1))
    if set(area) >= set(rids):
        return max(rids, key=lambda rid: area[rid]), extmap
    return next((rid for rid in _LIVEKIT_RIDS if rid in rids), rids[-1]), extmap


def _with_start_bitrate(video: list[str]) -> list[str]:
    """The video section with `x-google-start-bitrate` on each VP8/H.264 format."""
    param = f"x-google-start-bitrate={START_BITRATE_KBPS}"
    payloads = [m.group(1) for m in map(_VIDEO_RTPMAP.match, video) if m]
    out = []
    for line in video:
        fmtp = next((pt for pt in payloads if line.startswith(f"a=fmtp:{pt} ")), None)
        out.append(f"{line};{param}" if fmtp else line)
    have_fmtp = {pt for pt in payloads if any(line.startswith(f"a=fmtp:{pt} ") for line in video)}
    out += [f"a=fmtp:{pt} {param}" for pt in payloads if pt not in have_fmtp]
    return out
