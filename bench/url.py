"""URL input benchmark: how soon a pulled source reaches a subscriber, and what pulling costs.

For the issue "URL input", on the stack described by the environment (`source .stack/env` after
`make up`), or on a private local stack started for the run when LIVEKIT_URL is unset:

    python bench/url.py [--runs 5] [--other-runs 1] [--seconds 30] [--skip-reference] ...

1. Create → first frame: with a subscriber already in the room, the time from just before
   CreateIngress to the first video frame the subscriber decodes, for an MP4 served over HTTP
   from 127.0.0.1 (`--runs` times), then for an HLS VOD playlist and an SRT stream
   (`--other-runs` times each). Each run is broken down by the moments the benchmark sees on
   the way: the CR's status and the media pod (two watches of the API), the pod's process
   start (/proc), the pod's JSON log lines, and the subscriber's events.
2. CPU-seconds per media-second of the media pod pulling a 1080p30 H.264 High + AAC MP4 over
   HTTP (paced at the media clock), one subscriber on HIGH, over a steady window, split by
   thread; beside it, in the same run, the ffmpeg reference of bench/rtmp.py on the same file.
   The pod's RSS before its first decoded frame and during the window.

The file is bench/rtmp.py's source (tests.e2e.media.make_source_file) remuxed to MP4 with its
index at the front, so both benchmarks decode the same pictures.

Prints figures, never asserts them: the goals are printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
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
    started_at,
)
from lightkube.resources.core_v1 import Pod
from livekit import api

from ingress_operator.kube import LiveKitIngressResource, as_dict
from ingress_operator.models import ID_LABEL
from local_stack.stack import running_or_private
from tests.e2e import media, sources

GOALS = {"first_frame": 1.5}
FIRST_FRAME_WITHIN = 30.0  # a run that shows no frame by then is reported as failed
IDENTITY = "puller"
# Paths on the media server, which serves `files/<path>` from its root's <path>: under the run's
# directory, the same paths hold the files.
MP4 = "files/source.mp4"
HLS = "files/hls/index.m3u8"

# The moments of one ingress's start, in the order they happen, with what each one is.
STEPS = [
    ("created", "CreateIngress answered (the shim wrote the CR and its Secret)"),
    ("ready", "CR Ready seen (operator: finalizer, then status with Ready)"),
    ("session", "session seen (operator wrote status.session, state BUFFERING)"),
    ("pod", "media pod seen (operator created it)"),
    ("spawned", "pod's process started (process node: bind, token, spawn)"),
    ("logging", "pod's first log line (interpreter, imports, settings, CR read)"),
    ("joining", "pod starts joining the room (SDK's 'connecting to' line)"),
    ("opened", "input opened (pod wrote the input's tracks to the CR)"),
    ("joined", "pod's 'joined room' line (input open and room joined)"),
    ("published", "pod's 'track published' line (video)"),
    ("subscribed", "subscriber got the video track"),
    ("frame", "first video frame decoded at the subscriber"),
]


# --- watching an ingress start --------------------------------------------------------------------


class Watcher:
    """The first moment (wall clock) each step of STEPS was seen, per ingress id, from watches
    of the CRs and the media pods; the pod's process start comes from /proc as soon as its pid
    is known, while the process still runs."""

    def __init__(self, bench: StackBench) -> None:
        self.kube = bench.kube
        self.marks: defaultdict[str, dict[str, float]] = defaultdict(dict)
        self.pod_names: dict[str, str] = {}

    async def run(self) -> None:
        """Watch until cancelled."""
        await asyncio.gather(self._ingresses(), self._pods())

    async def _ingresses(self) -> None:
        async for _, obj in self.kube.watch(LiveKitIngressResource):
            now, cr = time.time(), as_dict(obj)
            ingress_id = (cr["metadata"].get("labels") or {}).get(ID_LABEL)
            if not ingress_id:
                continue
            marks, status = self.marks[ingress_id], cr.get("status") or {}
            conditions = status.get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                marks.setdefault("ready", now)
            if status.get("session"):
                marks.setdefault("session", now)
            state = status.get("state") or {}
            if state.get("video") or state.get("audio"):
                marks.setdefault("opened", now)

    async def _pods(self) -> None:
        async for _, pod in self.kube.watch(Pod, labels={"app.kubernetes.io/component": "media"}):
            now = time.time()
            labels = (pod.metadata and pod.metadata.labels) or {}
            ingress_id = labels.get(ID_LABEL)
            if not ingress_id or not pod.metadata or not pod.metadata.name:
                continue
            marks = self.marks[ingress_id]
            marks.setdefault("pod", now)
            self.pod_names[ingress_id] = pod.metadata.name
            statuses = (pod.status and pod.status.containerStatuses) or []
            if "spawned" not in marks and statuses and statuses[0].containerID:
                start = started_at(int(statuses[0].containerID.removeprefix("process://")))
                if start is not None:
                    marks["spawned"] = start


def log_marks(path: Path | None) -> dict[str, float]:
    """The steps of STEPS the media pod's log shows, from its JSON lines' `ts`."""
    marks: dict[str, float] = {}
    if path is None:
        return marks
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a native library's own line (OpenH264)
                continue
            when = datetime.fromisoformat(entry["ts"]).timestamp()
            message = entry.get("msg", "")
            marks.setdefault("logging", when)
            if message.startswith("livekit_signaling") and " - connecting to " in message:
                marks.setdefault("joining", when)
            elif message == "joined room":
                marks.setdefault("joined", when)
            elif message == "track published" and entry.get("track", {}).get("type") == "VIDEO":
                marks.setdefault("published", when)
    return marks


@dataclass
class Timeline:
    """One ingress's start: wall-clock moments by step, from just before CreateIngress."""

    began: float
    marks: dict[str, float] = field(default_factory=dict)

    def since(self, step: str) -> float | None:
        """Seconds from just before CreateIngress to a step; None if it was not seen."""
        return self.marks[step] - self.began if step in self.marks else None

    @property
    def total(self) -> float | None:
        """Seconds from just before CreateIngress to the first frame; None if none came."""
        return self.since("frame")


class UrlBench(StackBench):
    """The stack's clients, URL ingresses, and the watcher of their start."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self.watcher = Watcher(self)

    async def create(self, url: str, room: str, name: str) -> Any:
        """A URL ingress pulling `url` into `room` as IDENTITY."""
        return await self.lk.ingress.create_ingress(
            api.CreateIngressRequest(
                input_type=api.IngressInput.URL_INPUT,
                name=f"bench-{name}",
                url=url,
                room_name=room,
                participant_identity=IDENTITY,
            )
        )

    async def first_frame_run(self, url: str, name: str) -> Timeline:
        """Create an ingress for `url` with a subscriber already in its room; the moments until
        the subscriber decoded its first video frame. The ingress is deleted after it."""
        room = f"bench-url-{uuid.uuid4().hex[:8]}"
        async with self.subscriber(room) as sub:
            timeline = Timeline(time.time())
            info = await self.create(url, room, name)
            timeline.marks["created"] = time.time()
            try:
                got = await sub.tracks_of(IDENTITY, within=FIRST_FRAME_WITHIN, kinds=("video",))
                timeline.marks["subscribed"] = time.time()
                assert got.video_track is not None
                stream = sub.video_stream(got.video_track)
                await asyncio.wait_for(anext(stream), FIRST_FRAME_WITHIN)
                timeline.marks["frame"] = time.time()
            except TimeoutError:
                print(f"warning: no frame from {url} within {FIRST_FRAME_WITHIN:.0f} s", file=sys.stderr)
            finally:
                await self.delete(info.ingress_id)
        await self.pods_gone([info.ingress_id])
        pod_name = self.watcher.pod_names.get(info.ingress_id)
        log = self.pod_log(pod_name) if pod_name else None
        seen = {**self.watcher.marks[info.ingress_id], **log_marks(log)}
        timeline.marks = {**seen, **timeline.marks}
        return timeline


# --- 1: create → first frame ----------------------------------------------------------------------


def import_seconds(runs: int = 3) -> float:
    """Median wall time of a fresh interpreter importing the media pod's entry point, as
    `lki-media` does before its first line of work."""
    times = []
    with tempfile.TemporaryDirectory() as cwd:  # as a pod runs: not from the repository
        for _ in range(runs):
            began = time.perf_counter()
            code = "import ingress_pod.__main__"
            subprocess.run([sys.executable, "-c", code], check=True, cwd=cwd, stdin=subprocess.DEVNULL)
            times.append(time.perf_counter() - began)
    return pct(times, 0.5)


def print_breakdown(name: str, timelines: list[Timeline]) -> None:
    """A table of the steps in the order of their p50: p50 and max of the time since
    CreateIngress, and how much later than the row above (p50s)."""
    totals = [t.total for t in timelines if t.total is not None]
    print(f"\n### Create → first frame: {name} ({len(totals)} of {len(timelines)} runs showed a frame)\n")
    if not totals:
        return
    print("| step | p50 since create | max | Δ p50 |\n|---|---|---|---|")
    previous = 0.0
    rows = []
    for step, what in STEPS:
        times = [s for t in timelines if (s := t.since(step)) is not None]
        if times:
            rows.append((pct(times, 0.5), max(times), what))
    for p50, slowest, what in sorted(rows):
        print(
            f"| {what} | {p50 * 1000:.0f} ms | {slowest * 1000:.0f} ms | +{(p50 - previous) * 1000:.0f} ms |"
        )
        previous = p50
    runs = ", ".join(f"{s:.2f}" for s in totals)
    print(
        f"\nCreate → first frame: **p50 {pct(totals, 0.5):.2f} s, max {max(totals):.2f} s** "
        f"(goal ≤ {GOALS['first_frame']} s); runs: {runs} s",
        flush=True,
    )


def one_line(name: str, t: Timeline) -> None:
    """A row for an HLS or SRT run: its total, and when the pod was up, the input open and the
    video published."""
    if t.total is None:
        print(f"| {name} | no frame within {FIRST_FRAME_WITHIN:.0f} s | |", flush=True)
        return
    steps = [
        ("logging", "pod's first log line"),
        ("opened", "input opened"),
        ("published", "video published"),
    ]
    at = [f"{what} {s:.2f} s" for step, what in steps if (s := t.since(step)) is not None]
    print(f"| {name} | {t.total:.2f} s | {', '.join(at)} |", flush=True)


async def first_frames(
    bench: UrlBench, server: sources.MediaServer, source: Path, args: argparse.Namespace
) -> list[Timeline]:
    """Section 1: the MP4 runs' table, the import time, a line per HLS and SRT run; the MP4
    runs' timelines."""
    print("create → first frame ...", file=sys.stderr)
    mp4 = server.url(MP4)
    runs = [await bench.first_frame_run(mp4, f"mp4-{i}") for i in range(args.runs)]
    print_breakdown("MP4 over HTTP", runs)
    imports = await asyncio.to_thread(import_seconds)
    print(f"\nA fresh interpreter importing lki-media's modules alone takes {imports:.2f} s (median of 3).")
    if args.other_runs:
        print("\n| source | create → first frame | on the way, since create |\n|---|---|---|")
        for i in range(args.other_runs):
            one_line("HLS VOD (2 s segments)", await bench.first_frame_run(server.url(HLS), f"hls-{i}"))
        for i in range(args.other_runs):
            async with sources.srt_sender(source) as srt:
                one_line("SRT (ffmpeg -re, listener)", await bench.first_frame_run(srt.url, f"srt-{i}"))
    return runs


# --- 2: what a pull costs ---------------------------------------------------------------------------


@dataclass
class PullFigures:
    """What one pull cost, over its window."""

    cpu_pod: float  # CPU-s per media-second
    threads: dict[str, float]  # by thread role, CPU-s/s
    cpu_livekit: float | None
    cpu_bench: float  # this process: the subscriber and the HTTP server
    machine: float  # cores busy on the whole machine in the window
    received: tuple[float, int, int]  # (fps, width, height) at the HIGH subscriber
    layers_sent: str
    counters: dict[str, float]
    rss_first: float
    rss_idle: float  # max before the pod's first decoded frame
    rss_live: float
    window: float


async def pull_cost(bench: UrlBench, url: str, seconds: float) -> PullFigures:
    """One pull of `url` with a subscriber on HIGH, measured over a window of `seconds` opened
    WARMUP after the first frame reached it."""
    room = f"bench-url-{uuid.uuid4().hex[:8]}"
    async with bench.subscriber(room) as sub:
        session = MediaSession(await bench.create(url, room, "cpu"))
        try:
            await bench.find_pod(session)
            stop_rss = asyncio.Event()
            rss_task = asyncio.create_task(bench.sample_rss(session, stop_rss))
            await sub.tracks_of(IDENTITY, kinds=("video",), quality="VIDEO_QUALITY_HIGH")
            first = await first_frame([sub])
            await asyncio.sleep(WARMUP)
            groups = {"livekit": component_pids(bench.env, "livekit-server"), "bench": own_pid_group()}
            measured = await measure_window(bench, session, [sub], seconds, groups)
            stop_rss.set()
            await rss_task
        finally:
            await bench.delete(session.info.ingress_id)
    await bench.pods_gone([session.info.ingress_id])
    window = measured.cpu
    return PullFigures(
        cpu_pod=window.per_second("pod"),
        threads=measured.threads,
        cpu_livekit=window.per_second("livekit") if groups["livekit"] else None,
        cpu_bench=window.per_second("bench"),
        machine=window.machine_cores(),
        received=measured.received[0],
        layers_sent=measured.layers_sent,
        counters=measured.counters,
        rss_first=session.rss[0][1] if session.rss else 0.0,
        rss_idle=session.rss_before(session.first_decoded or first),
        rss_live=measured.rss_live,
        window=window.wall,
    )


def print_pull(fig: PullFigures, reference: float | None) -> None:
    """The pull's table, its CPU beside the reference's."""
    print(f"\n### One pull, 1080p30 MP4 over HTTP, one subscriber on HIGH ({fig.window:.0f} s window)\n")
    print("| measure | result |\n|---|---|")
    print_pod_cpu(fig.cpu_pod, fig.threads, reference)
    if fig.cpu_livekit is not None:
        print(f"| livekit-server CPU (same window) | {fig.cpu_livekit:.3f} CPU-s/s |")
    print(f"| this process: subscriber + HTTP server | {fig.cpu_bench:.3f} CPU-s/s |")
    print(f"| whole machine (everyone's processes) | {fig.machine:.2f} cores |")
    fps, width, height = fig.received
    print(f"| received on HIGH | {width}x{height} at {fps:.1f} fps |")
    print(f"| layers the pod was asked to send (dynacast) | {fig.layers_sent} |")
    print(f"| pod frame counters in the window | {counters_summary(fig.counters) or 'not readable'} |")
    print(
        f"| media pod RSS: first sample / max before its first decoded frame "
        f"| {fig.rss_first:.0f} / {fig.rss_idle:.0f} MB |"
    )
    print(f"| media pod RSS live (max) | {fig.rss_live:.0f} MB |", flush=True)


# --- the run --------------------------------------------------------------------------------------


def make_mp4(path: Path, seconds: float) -> None:
    """bench/rtmp.py's source, remuxed to MP4 with its index first (as files on the web are)."""
    flv = path.with_suffix(".flv")
    media.make_source_file(flv, seconds)
    remux = [*sources.FFMPEG, "-i", str(flv), "-c", "copy", "-movflags", "+faststart", str(path)]
    subprocess.run(remux, check=True, stdin=subprocess.DEVNULL)
    flv.unlink()


def make_hls(source: Path, playlist: Path, seconds: float) -> None:
    """The head of `source` as an HLS VOD playlist of 2 s MPEG-TS segments (one GOP each)."""
    folder = playlist.parent
    folder.mkdir(parents=True, exist_ok=True)
    args = [*sources.FFMPEG, "-i", str(source), "-t", str(seconds), "-c", "copy", "-f", "hls"]
    args += ["-hls_time", "2", "-hls_playlist_type", "vod", "-hls_segment_filename", str(folder / "s%03d.ts")]
    subprocess.run([*args, str(playlist)], check=True, stdin=subprocess.DEVNULL)


async def run(env: dict[str, str], args: argparse.Namespace) -> None:
    """Measure and print section by section (a late failure keeps the earlier figures)."""
    with tempfile.TemporaryDirectory(prefix="lki-bench-url-") as tmp:
        root = Path(tmp)
        served = root / MP4  # the server serves only what is under its root
        served.parent.mkdir()
        source = Path(args.source) if args.source else served
        need = args.seconds + WARMUP + 15  # start-up, and the end of the file kept out of the window
        if not source.exists() or media_seconds(source) < need:
            print(f"encoding a {need:.0f} s 1080p30 source file ...", file=sys.stderr)
            await asyncio.to_thread(make_mp4, source, need)
        if source != served:
            shutil.copyfile(source, served)
        make_hls(source, root / HLS, 20)
        idle = CpuWindow({}).open()
        await asyncio.sleep(3)
        background = idle.close().machine_cores()
        print(
            f"\n## URL input ({time.strftime('%Y-%m-%d')}; input: {media_seconds(source):.0f} s of 1080p30 "
            f"H.264 High ~6 Mbit/s + AAC in MP4, served from 127.0.0.1; the machine was "
            f"{background:.2f} cores busy before the run)"
        )
        bench = UrlBench(env)
        watch = asyncio.create_task(bench.watcher.run())
        try:
            async with sources.serving(root / "files") as server:
                runs = await first_frames(bench, server, source, args)
                reference: float | None = None
                if not args.skip_reference:
                    print("reference ffmpeg pipeline ...", file=sys.stderr)
                    cpu, rss = await asyncio.to_thread(run_reference, source)
                    print_reference(cpu, rss)
                    reference = cpu
                print("one pull's CPU ...", file=sys.stderr)
                pull = await pull_cost(bench, server.url(MP4), args.seconds)
                print_pull(pull, reference)
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            await bench.close()

    totals = [t.total for t in runs if t.total is not None]
    goals = [
        f"create → first frame p50 {pct(totals, 0.5):.2f} s (goal ≤ {GOALS['first_frame']} s)"
        if totals
        else "",
        f"pod {pull.cpu_pod:.3f} CPU-s per media-second",
        f"reference/pod {reference / pull.cpu_pod:.2f}x" if reference else "",
        f"RSS live {pull.rss_live:.0f} MB",
    ]
    print("\nFigures: " + "; ".join(g for g in goals if g))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="create → first frame runs with the MP4")
    parser.add_argument("--other-runs", type=int, default=1, help="runs with HLS and with SRT each; 0 skips")
    parser.add_argument("--seconds", type=float, default=30, help="the CPU window")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--source", help="reuse (or make) the 1080p MP4 here")
    args = parser.parse_args()
    with running_or_private() as env:
        asyncio.run(run(env, args))


if __name__ == "__main__":
    main()
