"""RTMP session benchmark: what one live session costs and how many two cores sustain.

For the issue "RTMP ingress end to end", on the stack described by the environment (`source
.stack/env` after `make up`), or on a private local stack started for the run when
LIVEKIT_URL is unset:

    python bench/rtmp.py [--seconds 60] [--sessions 1,2,4,6,8] [--skip-reference] ...

1. CPU-seconds per media-second of one session's media pod (1080p30 H.264 + AAC in, 720p in
   three simulcast layers + Opus out), from /proc/<pid>/stat over a steady window, split by
   thread, with one subscriber on the HIGH layer, then one per layer, then one on LOW only
   (livekit-server's dynacast enables every layer up to the highest watched, so HIGH alone
   keeps all three encoding; LOW alone pauses the upper two); the front door's, livekit-server's
   and the subscribers' CPU in the same window; and, in the same run, the ffmpeg reference
   (decode, three scales, three libx264 veryfast encodes and Opus, in real time). The input is
   a file encoded once at the start and pushed with `ffmpeg -re -c copy`, so no encoder's cost
   is in either figure.
2. Glass-to-room latency: a PyAV source (its own process) stamps the wall clock into each
   picture; a subscriber reads the stamp back from the decoded frame.
3. Concurrent sessions: N pushes of the file, one HIGH subscriber each; the frame rate each
   subscriber decoded over a window, and the CPU of the machine and of the stack's processes.
4. Media pod RSS: from its start until the first frame reaches the room (idle), and during the
   session (live).

Prints figures, never asserts them: the goals are printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (  # first: it puts the repository on sys.path, for tests.e2e
    WARMUP,
    CpuWindow,
    MediaSession,
    StackBench,
    component_pids,
    counters_summary,
    first_frame,
    measure_window,
    media_seconds,
    own_pid_group,
    pct,
    print_pod_cpu,
    print_reference,
    run_reference,
    stamp_ages,
)
from livekit import api

from local_stack.stack import running_or_private
from tests.e2e import media

FPS_WINDOW = 20.0  # the concurrency test's window
FULL_RATE = 28.0  # a session "sustains" when its subscriber decodes at least this many fps
GOALS = {
    "cpu": 0.30,
    "vs_reference": 2.0,
    "latency_p50_ms": 300,
    "sessions": 6,
    "rss_live": 250,
    "rss_idle": 120,
}


# --- the stack ------------------------------------------------------------------------------------


@dataclass
class Session(MediaSession):
    """One RTMP ingress being pushed to, with its media pod once it runs."""

    push: media.Push = field(kw_only=True)


class Bench(StackBench):
    """The stack's clients, and RTMP ingresses pushed the source file."""

    def __init__(self, env: dict[str, str], source: Path) -> None:
        super().__init__(env)
        self.source = source

    async def create(self, identity: str) -> Any:
        """An RTMP ingress in a room of its own."""
        return await self.lk.ingress.create_ingress(
            api.CreateIngressRequest(
                input_type=api.IngressInput.RTMP_INPUT,
                name=f"bench-{identity}",
                room_name=f"bench-{uuid.uuid4().hex[:8]}",
                participant_identity=identity,
            )
        )

    @contextlib.asynccontextmanager
    async def sessions(self, n: int, tag: str) -> AsyncIterator[list[Session]]:
        """N ingresses, each pushed the source file, with their media pods found."""
        made: list[Session] = []
        try:
            for i in range(n):
                info = await self.create(f"{tag}-{i}")
                push = await media.push_file(f"{info.url}/{info.stream_key}", self.source)
                made.append(Session(info, push=push))
            await asyncio.gather(*(self.find_pod(s) for s in made))
            yield made
        finally:
            for s in made:
                await s.push.stop()
                await self.delete(s.info.ingress_id)
            await self.pods_gone([s.info.ingress_id for s in made])


# --- 1 and 4: one session's CPU and memory --------------------------------------------------------


QUALITIES = {"HIGH": "VIDEO_QUALITY_HIGH", "MEDIUM": "VIDEO_QUALITY_MEDIUM", "LOW": "VIDEO_QUALITY_LOW"}


@dataclass
class SessionFigures:
    layers: list[str]
    cpu_pod: float  # CPU-s per media-second
    cpu_frontdoor: float | None
    cpu_livekit: float | None
    cpu_push: float
    cpu_subscribers: float
    received: dict[str, tuple[float, int, int]]  # layer → (fps, width, height) at its subscriber
    rss_idle: float  # max before the pod decoded its first frame
    rss_first: float  # the first sample after the pod started
    rss_live: float  # max during the window
    layers_sent: str  # the pod's last dynacast update before the window closed
    threads: dict[str, float]  # CPU-s/s of the pod by thread role
    startup: float  # push → first frame decoded at the subscriber, seconds
    pod_counters: dict[str, float]  # lki_media_frames_* over the window
    window: float


async def one_session(bench: Bench, seconds: float, layers: list[str]) -> SessionFigures:
    started = time.monotonic()
    async with bench.sessions(1, "cpu-" + "-".join(layer.lower() for layer in layers)) as (session,):
        stop_rss = asyncio.Event()
        rss_task = asyncio.create_task(bench.sample_rss(session, stop_rss))
        subs = [bench.subscriber(session.info.room_name) for _ in layers]
        async with contextlib.AsyncExitStack() as stack:
            for sub, layer in zip(subs, layers, strict=True):
                await stack.enter_async_context(sub)
                await sub.tracks_of(
                    session.info.participant_identity, kinds=("video",), quality=QUALITIES[layer]
                )
            first = await first_frame(subs)
            startup = first - started
            await asyncio.sleep(WARMUP)
            groups = {
                "frontdoor": component_pids(bench.env, "frontdoor"),
                "livekit": component_pids(bench.env, "livekit-server"),
                "push": [session.push.proc.pid],
                "subscribers": own_pid_group(),
            }
            measured = await measure_window(bench, session, subs, seconds, groups)
            stop_rss.set()
            await rss_task
        window = measured.cpu
        return SessionFigures(
            layers=layers,
            cpu_pod=window.per_second("pod"),
            cpu_frontdoor=window.per_second("frontdoor") if groups["frontdoor"] else None,
            cpu_livekit=window.per_second("livekit") if groups["livekit"] else None,
            cpu_push=window.per_second("push"),
            cpu_subscribers=window.per_second("subscribers"),
            received=dict(zip(layers, measured.received, strict=True)),
            rss_idle=session.rss_before(session.first_decoded or first),
            rss_first=session.rss[0][1] if session.rss else 0.0,
            rss_live=measured.rss_live,
            layers_sent=measured.layers_sent,
            threads=measured.threads,
            startup=startup,
            pod_counters=measured.counters,
            window=window.wall,
        )


# --- 2: latency -----------------------------------------------------------------------------------


@dataclass
class Latency:
    ages_ms: list[int]
    unreadable: int
    source_frames: int


async def latency(bench: Bench, seconds: float, size: str) -> Latency:
    """Glass-to-room: the stamp source runs as a child process (`--stamp-source`), so its encoder
    and this process's subscriber don't share an interpreter lock."""
    info = await bench.create("latency")
    url = f"{info.url}/{info.stream_key}"
    run_for = seconds + 30  # start-up and the skipped first seconds
    child = [__file__, "--stamp-source", url, "--stamp-seconds", str(run_for), "--stamp-size", size]
    source = await asyncio.create_subprocess_exec(sys.executable, *child, stdout=asyncio.subprocess.PIPE)
    try:
        async with bench.subscriber(info.room_name) as sub:
            got = await sub.tracks_of(info.participant_identity, kinds=("video",))
            assert got.video_track is not None
            ages, unreadable = await stamp_ages(sub.video_stream(got.video_track), seconds, settle=2)
    finally:
        source.terminate()
        out, _ = await source.communicate()
        await bench.delete(info.ingress_id)
        await bench.pods_gone([info.ingress_id])
    sent = int(out.decode().strip() or 0) if out else 0
    return Latency(ages, unreadable, sent)


def stamp_source_main(url: str, seconds: float, size: str) -> None:
    """The child process of `latency`: publish the stamped picture until told to stop."""
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    width, height = (int(x) for x in size.split("x"))
    sent = media.push_stamped(url, seconds, size=(width, height), stop=stop)
    print(sent, flush=True)


# --- 3: concurrent sessions -----------------------------------------------------------------------


@dataclass
class Level:
    n: int
    fps: list[float]
    sizes: list[tuple[int, int]]
    machine_cores: float
    stack_cores: dict[str, float]
    pod_drops: float  # frames the pods dropped in the window, all sessions
    started: bool = True

    @property
    def sustained(self) -> bool:
        return self.started and all(f >= FULL_RATE for f in self.fps)


async def concurrent(bench: Bench, n: int) -> Level:
    async with bench.sessions(n, f"n{n}") as sessions, contextlib.AsyncExitStack() as stack:
        subs = []
        for s in sessions:
            sub = await stack.enter_async_context(bench.subscriber(s.info.room_name))
            await sub.tracks_of(s.info.participant_identity, kinds=("video",))
            subs.append(sub)
        try:
            await first_frame(subs, within=90)
        except TimeoutError:
            return Level(n, [], [], 0.0, {}, 0.0, started=False)
        await asyncio.sleep(WARMUP)
        groups = {
            "media pods": [s.pid for s in sessions if s.pid],
            "front door": component_pids(bench.env, "frontdoor"),
            "livekit-server": component_pids(bench.env, "livekit-server"),
            "ffmpeg pushes": [s.push.proc.pid for s in sessions],
            "subscribers (this process)": own_pid_group(),
        }
        window = CpuWindow(groups)
        before = [await s.inbound_video() for s in subs]
        counters0 = [await bench.pod_metrics(s) for s in sessions]
        window.open()
        await asyncio.sleep(FPS_WINDOW)
        window.close()
        after = [await s.inbound_video() for s in subs]
        counters1 = [await bench.pod_metrics(s) for s in sessions]
    fps = [
        (sum(x.frames_decoded for x in a) - sum(x.frames_decoded for x in b)) / window.wall
        for a, b in zip(after, before, strict=True)
    ]
    sizes = [(a[0].width, a[0].height) if a else (0, 0) for a in after]
    drops = sum(
        v - c0.get(k, 0.0)
        for c0, c1 in zip(counters0, counters1, strict=True)
        for k, v in c1.items()
        if "dropped" in k and 'kind="video"' in k
    )
    return Level(n, fps, sizes, window.machine_cores(), {g: window.per_second(g) for g in groups}, drops)


# --- the run --------------------------------------------------------------------------------------


def print_session(fig: SessionFigures, reference: float | None) -> None:
    watched = "+".join(fig.layers)
    print(f"\n### One session, subscribers on {watched} ({fig.window:.0f} s window)\n", flush=True)
    print("| measure | result |\n|---|---|")
    print_pod_cpu(fig.cpu_pod, fig.threads, reference)
    if fig.cpu_frontdoor is not None:
        print(f"| front door CPU (same window) | {fig.cpu_frontdoor:.3f} CPU-s/s |")
    if fig.cpu_livekit is not None:
        print(f"| livekit-server CPU (same window) | {fig.cpu_livekit:.3f} CPU-s/s |")
    print(f"| ffmpeg push (-c copy) CPU | {fig.cpu_push:.3f} CPU-s/s |")
    print(f"| subscriber(s) CPU (this process) | {fig.cpu_subscribers:.3f} CPU-s/s |")
    for layer, (fps, w, h) in fig.received.items():
        print(f"| received on {layer} | {w}x{h} at {fps:.1f} fps |")
    print(f"| layers the pod was asked to send (dynacast) | {fig.layers_sent} |")
    counters = counters_summary(fig.pod_counters)
    print(f"| pod frame counters in the window | {counters or 'not readable'} |")
    print(f"| push → first frame at the subscriber | {fig.startup:.1f} s |")
    print(
        f"| media pod RSS: first sample / max before its first decoded frame (idle) "
        f"| {fig.rss_first:.0f} / {fig.rss_idle:.0f} MB |"
    )
    print(f"| media pod RSS live (max) | {fig.rss_live:.0f} MB |")


def print_latency(lat: Latency, size: str) -> None:
    print("\n### Glass-to-room latency\n")
    if lat.ages_ms:
        print(
            f"p50 {pct(lat.ages_ms, 0.5):.0f} ms, p95 {pct(lat.ages_ms, 0.95):.0f} ms, "
            f"max {max(lat.ages_ms)} ms over {len(lat.ages_ms)} frames read "
            f"({lat.unreadable} unreadable; source {size}, sent {lat.source_frames} frames)"
        )
    else:
        print(f"no stamp read ({lat.unreadable} frames unreadable)")


def print_level(lv: Level) -> None:
    if not lv.started:
        print(f"| {lv.n} | did not start within 90 s | no | | | |", flush=True)
        return
    fps = ", ".join(f"{f:.1f}" for f in lv.fps)
    stack = ", ".join(f"{g} {c:.2f}" for g, c in lv.stack_cores.items())
    total = sum(lv.stack_cores.values())
    print(
        f"| {lv.n} | {fps} | {'yes' if lv.sustained else 'no'} | {lv.machine_cores:.2f} cores "
        f"| {total:.2f} cores: {stack} | {lv.pod_drops:.0f} |",
        flush=True,
    )


async def run(env: dict[str, str], args: argparse.Namespace) -> None:
    """Measure and print section by section (a late failure keeps the earlier figures)."""
    levels = [int(x) for x in args.sessions.split(",") if x]
    with tempfile.TemporaryDirectory(prefix="lki-bench-rtmp-") as tmp:
        source = Path(args.source) if args.source else Path(tmp) / "source.flv"
        need = max(args.seconds, FPS_WINDOW) + WARMUP + 40  # start-up of many sessions on 2 cores
        if not source.exists() or media_seconds(source) < need:
            print(f"encoding a {need:.0f} s 1080p30 source file ...", file=sys.stderr)
            await asyncio.to_thread(media.make_source_file, source, need)
        print(
            f"\n## RTMP session ({time.strftime('%Y-%m-%d')}; input: {media_seconds(source):.0f} s of "
            "1080p30 H.264 High ~6 Mbit/s + AAC, pushed with ffmpeg -re -c copy)"
        )
        reference: float | None = None
        if not args.skip_reference:
            print("reference ffmpeg pipeline ...", file=sys.stderr)
            cpu, rss = await asyncio.to_thread(run_reference, source)
            print_reference(cpu, rss)
            reference = cpu
        bench = Bench(env, source)
        try:
            variants: list[SessionFigures] = []
            for variant in args.variants.split(","):
                print(f"one session, {variant} watched ...", file=sys.stderr)
                variants.append(await one_session(bench, args.seconds, variant.split("+")))
                print_session(variants[-1], reference)
            high = variants[0]
            lat = None
            if args.latency_seconds > 0:
                print("latency ...", file=sys.stderr)
                lat = await latency(bench, args.latency_seconds, args.stamp_size)
                print_latency(lat, args.stamp_size)
            # The machine is shared: what it does with no session running is the floor under
            # the concurrency table's "machine CPU".
            idle = CpuWindow({}).open()
            await asyncio.sleep(5)
            background = idle.close().machine_cores()
            print(
                f"\n### Concurrent sessions (one HIGH subscriber each, {FPS_WINDOW:.0f} s window; the "
                f"machine was {background:.2f} cores busy with no session running)\n"
            )
            print(
                "| sessions | fps received per session | sustained | machine CPU | stack CPU by process "
                "| pod video drops |\n|---|---|---|---|---|---|",
                flush=True,
            )
            results: list[Level] = []
            for n in levels:
                print(f"{n} concurrent sessions ...", file=sys.stderr)
                results.append(await concurrent(bench, n))
                print_level(results[-1])
                if not results[-1].sustained and not args.keep_going:
                    break
        finally:
            await bench.close()

    sustained = max((lv.n for lv in results if lv.sustained), default=0)
    goal_line = [
        f"CPU {high.cpu_pod:.2f} CPU-s/s (goal ≤ {GOALS['cpu']})",
        f"reference/pod {reference / high.cpu_pod:.2f}x (goal ≥ {GOALS['vs_reference']}x)"
        if reference
        else "",
        f"latency p50 {pct(lat.ages_ms, 0.5):.0f} ms (goal ≤ {GOALS['latency_p50_ms']})"
        if lat and lat.ages_ms
        else "",
        f"sessions sustained {sustained} (goal ≥ {GOALS['sessions']})",
        f"RSS live {high.rss_live:.0f} MB (goal ≤ {GOALS['rss_live']}), idle {high.rss_idle:.0f} MB "
        f"(goal ≤ {GOALS['rss_idle']})",
    ]
    print("\nGoals: " + "; ".join(g for g in goal_line if g))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60, help="the one-session CPU window")
    parser.add_argument("--sessions", default="1,2,3,4,6,8", help="concurrency levels to try, in order")
    parser.add_argument("--keep-going", action="store_true", help="try every level even after one fails")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument(
        "--variants",
        default="HIGH,LOW+MEDIUM+HIGH,LOW",
        help="one-session runs, comma-separated; each names the layers watched, one subscriber per "
        "layer (the first is the headline figure). livekit-server keeps every layer up to the "
        "highest watched one on, so HIGH alone already has the pod encode all three",
    )
    parser.add_argument("--latency-seconds", type=float, default=20, help="0 skips the latency test")
    parser.add_argument("--stamp-size", default="1920x1080", help="the stamped source's picture size")
    parser.add_argument("--source", help="reuse (or make) the 1080p source file here")
    parser.add_argument("--stamp-source", help=argparse.SUPPRESS)  # the latency test's child process
    parser.add_argument("--stamp-seconds", type=float, default=60, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stamp_source:
        stamp_source_main(args.stamp_source, args.stamp_seconds, args.stamp_size)
        return
    with running_or_private() as env:
        asyncio.run(run(env, args))


if __name__ == "__main__":
    main()
