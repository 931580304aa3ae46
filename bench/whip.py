"""WHIP session benchmark: what a WHIP session's media pod costs, passing the browser's video
through and transcoding it, and how late its pictures reach the room.

For the issue "WHIP ingress", on the stack described by the environment (`source .stack/env`
after `make up`), or on a private local stack started for the run when LIVEKIT_URL is unset:

    python bench/whip.py [--seconds 30] [--latency-seconds 15] [--variants vp8,h264,transcode]

The client is headless Chromium (tests/e2e/browser.py) publishing a 1280x720@30 canvas, which
carries a wall-clock stamp in its top strip, and a WebAudio tone, through the front door's UDP
relay (the path of a client outside the cluster). Each variant is one session:

1. CPU-seconds per media-second of the media pod over a steady window (one subscriber), from
   /proc/<pid>/stat, split by thread; the front door's, livekit-server's, Chromium's (every
   process of the session it was started in: canvas, encoder, WebRTC) and the subscriber's CPU
   in the same window. Variants: pass-through of VP8 and of H.264 (`enable_transcoding` unset,
   the client's frames forwarded as they are), transcoding (`enable_transcoding=True`, the VP8
   decoded and re-encoded into the simulcast layers as an RTMP session is), and, when asked for,
   VP8 pass-through without audio, or straight to the pod's own address. A browser starts
   sending at a low bit rate and raises it as its bandwidth estimate grows: the window opens
   once the subscriber decodes at full rate (and, passed through, full size), or after
   --ramp-seconds; a session that never got there is printed as it was and tried once more
   (--attempts).
2. Glass-to-room latency, in the same session after the CPU window: the subscriber decodes the
   frames and reads the stamp the page drew; latency = arrival wall clock - stamp. Chromium's
   own capture and encode are inside this figure (the stamp is drawn before the canvas is
   captured), as a camera's encoder is for a WHIP client.
3. Media pod RSS: before the first frame reached the subscriber (idle), and during the window.

Prints figures, never asserts them: the goals are printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from common import (  # first: it puts the repository on sys.path, for tests.e2e
    MAIN_THREAD,
    THREAD_ROLES,
    WARMUP,
    CpuWindow,
    MediaSession,
    StackBench,
    component_pids,
    counters_summary,
    first_frame,
    measure_window,
    own_pid_group,
    pct,
    print_pod_cpu,
    stamp_ages,
)
from livekit import api

from local_stack.stack import running_or_private
from tests.e2e import browser, media

SIZE = (1280, 720)
FPS = 30
STEADY_FPS = 25.0  # the subscriber's decode rate that counts as the browser sending in full
GOALS = {"passthrough_cpu": 0.03, "latency_ms": 80}  # latency: p50 and p95, on loopback
# What common's thread roles are in a WHIP pod: aiortc receives on the event loop, and runs one
# decoder thread per track (the pod's _Tap), Python threads that keep the process's name.
_ROLE = dict(THREAD_ROLES)
WHIP_ROLES = {
    _ROLE[MAIN_THREAD]: "main thread (asyncio: aiortc ICE/SRTP/RTP/jitter buffer, capture_frame, state)",
    _ROLE["lki-media"]: "aiortc decoder threads (Opus decode; VP8/H.264 decode or keyframe sizing)",
}


@dataclass(frozen=True)
class Variant:
    """One session's setup: what the page sends and whether the pod transcodes it."""

    title: str
    codec: str  # the page's first choice: VP8 or H264
    transcode: bool
    audio: bool = True
    path: str = "relay"  # the page keeps only the front door's relay candidate, or only the pod's


VARIANTS = {
    "vp8": Variant("Pass-through, VP8", "VP8", transcode=False),
    "h264": Variant("Pass-through, H.264", "H264", transcode=False),
    "transcode": Variant("Transcoding (enable_transcoding=True), VP8 in", "VP8", transcode=True),
    # Not run by default: what the audio costs, and what the relay's hop costs, by difference
    # with "vp8".
    "vp8-video-only": Variant("Pass-through, VP8, no audio", "VP8", transcode=False, audio=False),
    "vp8-direct": Variant("Pass-through, VP8, straight to the pod", "VP8", transcode=False, path="pod"),
}
DEFAULT_VARIANTS = "vp8,h264,transcode"


# --- the stack ------------------------------------------------------------------------------------


class Bench(StackBench):
    """The stack's clients, and WHIP ingresses Chromium publishes to."""

    async def create(self, identity: str, transcode: bool) -> Any:
        """A WHIP ingress in a room of its own; transcoding is left unset (WHIP's default, off)
        unless asked for."""
        request = api.CreateIngressRequest(
            input_type=api.IngressInput.WHIP_INPUT,
            name=f"bench-{identity}",
            room_name=f"bench-{uuid.uuid4().hex[:8]}",
            participant_identity=identity,
        )
        if transcode:
            request.enable_transcoding = True
        return await self.lk.ingress.create_ingress(request)

    async def input_state(self, ingress_id: str) -> str:
        """The input as the media pod measures and reports it (ListIngress' state): codec, bit
        rate and frame rate of the video, bit rate of the audio."""
        listed = await self.lk.ingress.list_ingress(api.ListIngressRequest(ingress_id=ingress_id))
        if not listed.items:
            return "unknown"
        state = listed.items[0].state
        parts = []
        if state.HasField("video"):
            video = state.video
            parts.append(
                f"{video.mime_type} {video.average_bitrate / 1000:.0f} kbit/s at {video.framerate:.1f} fps"
            )
        if state.HasField("audio"):
            parts.append(f"{state.audio.mime_type} {state.audio.average_bitrate / 1000:.0f} kbit/s")
        return "; ".join(parts) or "unknown"

    async def relayed_packets(self, whip_url: str) -> float | None:
        """Packets the front door's UDP relay has passed to media pods so far; None when unreadable."""
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, StopIteration):
            return await browser.relayed_packets(whip_url)
        return None

    @contextlib.asynccontextmanager
    async def session(self, variant: Variant, tag: str) -> AsyncIterator[tuple[MediaSession, browser.Page]]:
        """An ingress with Chromium publishing to it (never DELETEing), its media pod found."""
        info = await self.create(tag, variant.transcode)
        session = MediaSession(info)
        try:
            params: dict[str, object] = {"w": SIZE[0], "h": SIZE[1], "fps": FPS, "seconds": 0}
            params |= {"codec": variant.codec, "path": variant.path} | ({} if variant.audio else {"audio": 0})
            async with browser.chromium_whip(info.url, info.stream_key, **params) as page:
                # The pod starts on the POST: look for it while the page waits for its answer, so
                # the RSS samples begin with the pod's.
                pod = asyncio.create_task(self.find_pod(session))
                try:
                    answer = await page.next("answer", within=60)
                    if answer["status"] != 201:
                        raise RuntimeError(f"WHIP POST answered {answer['status']}: {answer['body'].strip()}")
                    await pod
                finally:
                    pod.cancel()
                yield session, page
        finally:
            await self.delete(info.ingress_id)
            await self.pods_gone([info.ingress_id])


def session_pids(leader: int) -> list[int]:
    """The processes of the session `leader` started (Chromium's browser, renderer, GPU and
    utility processes all stay in the session it was started in)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == leader:
                    out.append(int(entry.name))
    return out


# --- one session ----------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one session measured."""

    variant: Variant
    mime_type: str  # the video track as the room has it
    cpu_pod: float  # CPU-s per media-second
    threads: dict[str, float]  # CPU-s/s of the pod by thread role
    cpu: dict[str, float | None]  # the other processes' CPU-s/s in the same window, by group
    chromium_processes: int
    received: tuple[float, int, int]  # (fps, width, height) at the subscriber
    layers_sent: str
    pod_counters: dict[str, float]
    startup: float  # Chromium started → first frame decoded at the subscriber, seconds
    ramp: float | None  # first frame → steady full-rate video at the subscriber; None: never
    input_state: str  # the input as the pod measured it (ListIngress)
    encoder: dict[str, Any]  # Chromium's outbound video stats (the page's report) after the window
    relayed: float | None  # packets the front door's relay passed to pods in the window
    machine_cores: float  # the whole machine, everyone's processes, in the window
    rss_first: float
    rss_idle: float  # max before the first frame reached the subscriber
    rss_live: float  # max during the window
    window: float
    ages_ms: list[int]  # glass-to-room latency of each frame read
    unreadable: int


async def one_session(
    bench: Bench, variant: Variant, tag: str, seconds: float, latency_s: float, ramp_s: float
) -> Figures:
    """One session of `variant`: start-up, the ramp to full rate, the CPU window, the latency."""
    started = time.monotonic()
    async with bench.session(variant, tag) as (session, page):
        assert page.process is not None
        stop_rss = asyncio.Event()
        rss_task = asyncio.create_task(bench.sample_rss(session, stop_rss))
        try:
            async with bench.subscriber(session.info.room_name) as sub:
                got = await sub.tracks_of(session.info.participant_identity, kinds=("video",))
                assert got.video_track is not None and got.video_publication is not None
                first = await first_frame([sub])
                # sample_rss polls the pod's /metrics until its decoded-frame counter moves, which
                # passing video through without audio it never does: polling ten times a second
                # would be in the window's CPU. The first frame at the subscriber stands in for it.
                session.first_decoded = session.first_decoded or first
                # A browser starts at a low bitrate (and often a lower resolution) and raises it
                # as its bandwidth estimate grows: the window waits for it to send in full.
                want = SIZE[0] if not variant.transcode else None
                ramp = await steady(sub, want, ramp_s)
                await asyncio.sleep(WARMUP)
                chromium = session_pids(page.process.pid)
                groups = {
                    "front door": component_pids(bench.env, "frontdoor"),
                    "livekit-server": component_pids(bench.env, "livekit-server"),
                    "Chromium (all its processes)": chromium,
                    "subscriber (this process)": own_pid_group(),
                }
                relayed0 = await bench.relayed_packets(session.info.url)
                measured = await measure_window(bench, session, [sub], seconds, groups)
                relayed1 = await bench.relayed_packets(session.info.url)
                state = await bench.input_state(session.info.ingress_id)
                encoder = await page.next("stats", within=10, fresh=True)
                ages, unreadable = await stamp_ages(sub.video_stream(got.video_track), latency_s, settle=1)
        finally:
            stop_rss.set()
            await rss_task
    window = measured.cpu
    return Figures(
        variant=variant,
        mime_type=got.video_publication.mime_type,
        cpu_pod=window.per_second("pod"),
        threads={WHIP_ROLES.get(role, role): cpu for role, cpu in measured.threads.items()},
        cpu={g: window.per_second(g) if pids else None for g, pids in groups.items()},
        chromium_processes=len(chromium),
        received=measured.received[0],
        layers_sent=measured.layers_sent,
        pod_counters=measured.counters,
        startup=first - started,
        ramp=ramp,
        input_state=state,
        encoder=encoder,
        relayed=None if relayed0 is None or relayed1 is None else relayed1 - relayed0,
        machine_cores=window.machine_cores(),
        rss_first=session.rss[0][1] if session.rss else 0.0,
        rss_idle=session.rss_before(first),
        rss_live=measured.rss_live,
        window=window.wall,
        ages_ms=ages,
        unreadable=unreadable,
    )


async def steady(sub: media.Subscriber, width: int | None, within: float) -> float | None:
    """Seconds until the subscriber decodes at least STEADY_FPS over two seconds (in pictures
    `width` wide, when given); None when it did not within `within`."""
    started = time.monotonic()
    before = await sub.inbound_video()
    while time.monotonic() - started < within:
        await asyncio.sleep(2)
        after = await sub.inbound_video()
        fps = (sum(x.frames_decoded for x in after) - sum(x.frames_decoded for x in before)) / 2
        if after and fps >= STEADY_FPS and width in (None, after[0].width):
            return time.monotonic() - started
        before = after
    return None


# --- printing -------------------------------------------------------------------------------------


def print_figures(fig: Figures, ramp_s: float, attempt: int) -> None:
    """One session's table, and for pass-through its goals."""
    v = fig.variant
    tried = f", attempt {attempt}" if attempt > 1 or fig.ramp is None else ""
    source = f"{SIZE[0]}x{SIZE[1]}@{FPS} canvas from Chromium"
    via = "through the front door's UDP relay" if v.path == "relay" else "straight to the pod"
    print(f"\n### {v.title}: {source}, {via} ({fig.window:.0f} s window{tried})\n")
    print("| measure | result |\n|---|---|")
    print(f"| video track in the room | {fig.mime_type} |")
    print_pod_cpu(fig.cpu_pod, fig.threads, None)
    for group, cpu in fig.cpu.items():
        if cpu is None:
            continue
        extra = ""
        if group.startswith("Chromium"):
            extra = f" ({fig.chromium_processes} processes)"
        elif group == "front door" and fig.relayed is not None:
            extra = f" (its UDP relay passed {fig.relayed / fig.window:.0f} packets/s to the pod)"
        print(f"| {group} CPU, same window{extra} | {cpu:.3f} CPU-s/s |")
    print(f"| the whole machine (everyone's processes), same window | {fig.machine_cores:.2f} cores |")
    fps, w, h = fig.received
    print(f"| received at the subscriber | {w}x{h} at {fps:.1f} fps |")
    print(f"| input as the pod last reported it (ListIngress state) | {fig.input_state} |")
    e = fig.encoder
    print(
        f"| Chromium's encoder at the window's end (getStats) | {e.get('width')}x{e.get('height')} at "
        f"{e.get('fps')} fps, target {e.get('target', 0) / 1000:.0f} kbit/s, limited by {e.get('limit')}; "
        f"{e.get('keyframes')} keyframes, {e.get('plis')} PLIs since its start |"
    )
    if v.transcode:
        print(f"| layers the pod was asked to send (dynacast) | {fig.layers_sent} |")
    counters = counters_summary(fig.pod_counters)
    print(f"| pod frame counters in the window | {counters or 'not readable'} |")
    print(f"| Chromium started → first frame at the subscriber | {fig.startup:.1f} s |")
    steady_at = f"≥ {STEADY_FPS:.0f} fps" + ("" if v.transcode else f" at {SIZE[0]}x{SIZE[1]}")
    ramp = f"{fig.ramp:.0f} s" if fig.ramp is not None else f"not within {ramp_s:.0f} s (measured anyway)"
    print(f"| first frame → the subscriber decoding {steady_at} | {ramp} |")
    print(
        f"| media pod RSS: first sample / max before the first frame reached the subscriber "
        f"| {fig.rss_first:.0f} / {fig.rss_idle:.0f} MB |"
    )
    print(f"| media pod RSS live (max) | {fig.rss_live:.0f} MB |")
    if fig.ages_ms:
        p50, p95 = pct(fig.ages_ms, 0.5), pct(fig.ages_ms, 0.95)
        print(
            f"| glass-to-room latency, Chromium's capture and encode included | p50 {p50:.0f} ms, p95 "
            f"{p95:.0f} ms, max {max(fig.ages_ms)} ms over {len(fig.ages_ms)} frames read "
            f"({fig.unreadable} unreadable) |"
        )
    else:
        print(f"| glass-to-room latency | no stamp read ({fig.unreadable} frames unreadable) |")
    if not v.transcode:
        goals = [f"pod CPU {fig.cpu_pod:.3f} CPU-s/s (goal ≤ {GOALS['passthrough_cpu']})"]
        if fig.ages_ms:
            goals.append(f"latency p50 {p50:.0f} ms, p95 {p95:.0f} ms (goal ≤ {GOALS['latency_ms']} ms)")
        print("\nGoals: " + "; ".join(goals))
    sys.stdout.flush()


# --- the run --------------------------------------------------------------------------------------


async def run(env: dict[str, str], args: argparse.Namespace) -> int:
    """Measure and print variant by variant (a failed one is reported, the others still run)."""
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}")
    # The machine may be shared: what it does with no session running is the floor under the
    # windows' "whole machine" figures.
    idle = CpuWindow({}).open()
    await asyncio.sleep(5)
    background = idle.close().machine_cores()
    print(
        f"\n## WHIP session ({time.strftime('%Y-%m-%d')}; client: headless Chromium, "
        f"{SIZE[0]}x{SIZE[1]}@{FPS} canvas + WebAudio tone; the machine was {background:.2f} cores "
        "busy with no session running)"
    )
    failed = 0
    bench = Bench(env)
    try:
        for name in names:
            for attempt in range(1, args.attempts + 1):
                print(f"{name}, attempt {attempt} ...", file=sys.stderr)
                try:
                    fig = await one_session(
                        bench, VARIANTS[name], name, args.seconds, args.latency_seconds, args.ramp_seconds
                    )
                except (TimeoutError, AssertionError, RuntimeError) as err:
                    failed += 1
                    print(f"\n### {VARIANTS[name].title}: failed: {type(err).__name__}: {err}", flush=True)
                    continue
                print_figures(fig, args.ramp_seconds, attempt)
                # A session whose browser never sent in full is printed as it was (that is a
                # finding too), then tried again with a new browser.
                if fig.ramp is not None:
                    break
    finally:
        await bench.close()
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30, help="each session's CPU window")
    parser.add_argument("--latency-seconds", type=float, default=15, help="frames read for the latency")
    parser.add_argument(
        "--ramp-seconds",
        type=float,
        default=40,
        help="how long the browser gets to reach full rate (and, passed through, full size) before "
        "the window opens; past it the window opens anyway",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=2,
        help="sessions per variant until one has the browser sending in full within --ramp-seconds",
    )
    parser.add_argument(
        "--variants", default=DEFAULT_VARIANTS, help=f"sessions to run, in order, of {', '.join(VARIANTS)}"
    )
    args = parser.parse_args()
    with running_or_private() as env:
        code = asyncio.run(run(env, args))
    sys.exit(code)


if __name__ == "__main__":
    main()
