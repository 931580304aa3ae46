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
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import av
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Pod
from livekit import api

from ingress_operator.models import ID_LABEL
from ingress_operator.sessions import MEDIA_PORT
from local_stack.stack import running_or_private

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests.e2e
from tests.e2e import media  # shared with the end-to-end tests

warnings.filterwarnings("ignore", message="The HMAC key is")  # the dev secret is short

CLK_TCK = os.sysconf("SC_CLK_TCK")
WARMUP = 5.0  # seconds after the first frame reaches the room before any window opens
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


# --- process accounting ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """CPU-seconds of each thread of a process: thread id → (thread name, seconds)."""
    out = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                stat = (task / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                name = MAIN_THREAD if task.name == str(pid) else name
                out[task.name] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


# What the media pod's threads do, by the names they carry. Python's threads keep the process's
# name: the main thread is told apart by its id, the others are the input's (av-input).
MAIN_THREAD = "<main>"
THREAD_ROLES = [
    ("VideoEncoderQue", "video encode (SDK: layer downscale + OpenH264 per layer)"),
    ("av:h264", "H.264 decode (FFmpeg's own threads)"),
    (MAIN_THREAD, "main thread (asyncio: I420 copy, capture_frame, state)"),
    ("lki-media", "input thread(s) (PyAV demux, decode, scale)"),
    ("AudioEncoderQue", "Opus encode"),
]


OTHER_THREADS = "other (WebRTC, tokio, audio)"


def by_role(before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]]) -> dict[str, float]:
    """CPU-seconds between two `thread_cpu` snapshots, summed by THREAD_ROLES (the rest: WebRTC's
    network and worker threads, tokio, audio capture)."""
    out: dict[str, float] = {}
    for tid, (name, secs) in after.items():
        used = secs - before.get(tid, (name, 0.0))[1]
        role = next((r for prefix, r in THREAD_ROLES if name.startswith(prefix)), OTHER_THREADS)
        out[role] = out.get(role, 0.0) + used
    return out


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) / 1024 if match else None


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass
class CpuWindow:
    """CPU used by named groups of processes, and by the whole machine, between open and close."""

    groups: dict[str, list[int]]
    start: dict[int, float] = field(default_factory=dict)
    end: dict[int, float] = field(default_factory=dict)
    machine: tuple[tuple[int, int], tuple[int, int]] | None = None
    wall: float = 0.0

    def open(self) -> CpuWindow:
        self.start = {pid: cpu_seconds(pid) or 0.0 for pids in self.groups.values() for pid in pids}
        self._machine0, self._t0 = machine_ticks(), time.monotonic()
        return self

    def close(self) -> CpuWindow:
        self.end = {pid: cpu_seconds(pid) or self.start[pid] for pid in self.start}
        self.machine = (self._machine0, machine_ticks())
        self.wall = time.monotonic() - self._t0
        return self

    def seconds(self, group: str) -> float:
        """CPU-seconds the group used in the window."""
        return sum(self.end[p] - self.start[p] for p in self.groups.get(group, []))

    def per_second(self, group: str) -> float:
        return self.seconds(group) / self.wall

    def machine_cores(self) -> float:
        """Cores busy on the whole machine (everyone's processes, not only this stack's)."""
        assert self.machine is not None
        (busy0, total0), (busy1, total1) = self.machine
        return (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)


def own_pid_group() -> list[int]:
    """This process: the subscribers (native WebRTC receive + decode, in the livekit FFI's threads)
    and the benchmark's own bookkeeping."""
    return [os.getpid()]


# --- the stack ------------------------------------------------------------------------------------


def component_pid(env: dict[str, str], name: str) -> int | None:
    """The pid of one of the stack's components (from its pid file)."""
    if not env.get("LKI_STACK_DIR"):
        return None
    from local_stack.stack import Stack

    return Stack.load(env["LKI_STACK_DIR"]).pid(name)


@dataclass
class Session:
    """One RTMP ingress being pushed to, with its media pod once it runs."""

    info: Any  # api.IngressInfo
    push: Any  # media.Push
    pid: int | None = None
    pod_ip: str | None = None
    pod_name: str | None = None
    rss: list[tuple[float, float]] = field(default_factory=list)  # (monotonic time, MB)
    first_decoded: float | None = None  # when the pod's decoded-frame counter first moved

    @property
    def push_url(self) -> str:
        return f"{self.info.url}/{self.info.stream_key}"


class Bench:
    def __init__(self, env: dict[str, str], source: Path) -> None:
        self.env, self.source = env, source
        self.lk = api.LiveKitAPI(env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"])
        self.kube = AsyncClient(KubeConfig.from_file(env["KUBECONFIG"]), namespace=env["INGRESS_NAMESPACE"])
        self.http = aiohttp.ClientSession()
        self.ws_url = env["LIVEKIT_SERVER_URL"].replace("http://", "ws://")

    async def close(self) -> None:
        await self.lk.aclose()
        await self.kube.close()
        await self.http.close()

    async def create(self, identity: str) -> Any:
        return await self.lk.ingress.create_ingress(
            api.CreateIngressRequest(
                input_type=api.IngressInput.RTMP_INPUT,
                name=f"bench-{identity}",
                room_name=f"bench-{uuid.uuid4().hex[:8]}",
                participant_identity=identity,
            )
        )

    async def delete(self, ingress_id: str) -> None:
        with contextlib.suppress(api.TwirpError):
            await self.lk.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=ingress_id))

    def subscriber(self, room: str) -> Any:
        return media.Subscriber(
            self.ws_url, self.env["LIVEKIT_API_KEY"], self.env["LIVEKIT_API_SECRET"], room
        )

    async def find_pod(self, session: Session, within: float = 60) -> None:
        """Wait for the session's media pod to run; its pid is in its container id
        (`process://<pid>` on the process node)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            async for pod in self.kube.list(Pod, labels={ID_LABEL: session.info.ingress_id}):
                statuses = (pod.status and pod.status.containerStatuses) or []
                if statuses and statuses[0].containerID and pod.status and pod.metadata:
                    session.pid = int(statuses[0].containerID.removeprefix("process://"))
                    session.pod_ip = pod.status.podIP
                    session.pod_name = pod.metadata.name
                    return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no media pod for {session.info.ingress_id}")

    async def sample_rss(self, session: Session, stop: asyncio.Event, every: float = 0.1) -> None:
        """Sample the pod's RSS; until the pod has decoded its first frame, also its /metrics, so
        the samples before that moment are the idle pod's (imported, joining, waiting for input)."""
        while not stop.is_set() and session.pid is not None:
            mb = rss_mb(session.pid)
            if mb is None:
                return
            session.rss.append((time.monotonic(), mb))
            if session.first_decoded is None:
                counters = await self.pod_metrics(session)
                if any(v > 0 for k, v in counters.items() if k.startswith("lki_media_frames_decoded")):
                    session.first_decoded = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    def layers_sent(self, session: Session, before: float) -> str:
        """The last simulcast layer switch livekit-server asked of the pod (dynacast), from the
        rtc SDK's log line in the pod's log; `before` is a wall-clock time."""
        root = self.env.get("LKI_STACK_DIR")
        if not root or not session.pod_name:
            return "unknown"
        log = Path(root) / "logs" / "pods" / f"{self.env['INGRESS_NAMESPACE']}_{session.pod_name}_media.log"
        last = "unknown (no dynacast update in the pod's log)"
        with contextlib.suppress(OSError):
            for line in log.read_text(errors="replace").splitlines():
                found = re.search(r'"ts": "([^"]+)".*subscribed_codecs=\\"\w+:\[([^\]]*)\]', line)
                if found and datetime.fromisoformat(found.group(1)).timestamp() <= before:
                    last = found.group(2)
        return last

    async def pod_metrics(self, session: Session) -> dict[str, float]:
        """The media pod's frame counters (lki_media_frames_*), from its /metrics."""
        out: dict[str, float] = {}
        if not session.pod_ip:
            return out
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self.http.get(
                f"http://{session.pod_ip}:{MEDIA_PORT}/metrics", timeout=aiohttp.ClientTimeout(total=2)
            ) as resp:
                for line in (await resp.text()).splitlines():
                    if line.startswith("lki_media_frames_") and "_created" not in line:
                        name, value = line.rsplit(" ", 1)
                        out[name] = float(value)
        return out

    async def pods_gone(self, ingress_ids: Sequence[str], within: float = 60) -> None:
        deadline = time.monotonic() + within
        ids = set(ingress_ids)
        while time.monotonic() < deadline:
            left = [
                p
                async for p in self.kube.list(Pod, labels={"app.kubernetes.io/component": "media"})
                if p.metadata and p.metadata.labels and p.metadata.labels.get(ID_LABEL) in ids
            ]
            if not left:
                return
            await asyncio.sleep(0.5)
        print(f"warning: media pods still there after {within:.0f} s", file=sys.stderr)

    @contextlib.asynccontextmanager
    async def sessions(self, n: int, tag: str) -> AsyncIterator[list[Session]]:
        """N ingresses, each pushed the source file, with their media pods found."""
        made: list[Session] = []
        try:
            for i in range(n):
                info = await self.create(f"{tag}-{i}")
                made.append(
                    Session(info, await media.push_file(f"{info.url}/{info.stream_key}", self.source))
                )
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
            live_from = len(session.rss)
            assert session.pid is not None
            window = CpuWindow(
                {
                    "pod": [session.pid],
                    "frontdoor": [p for p in [component_pid(bench.env, "frontdoor")] if p],
                    "livekit": [p for p in [component_pid(bench.env, "livekit-server")] if p],
                    "push": [session.push.proc.pid],
                    "subscribers": own_pid_group(),
                }
            )
            before = [await s.inbound_video() for s in subs]
            counters0 = await bench.pod_metrics(session)
            threads0 = thread_cpu(session.pid)
            window.open()
            await asyncio.sleep(seconds)
            window.close()
            threads1 = thread_cpu(session.pid)
            after = [await s.inbound_video() for s in subs]
            counters1 = await bench.pod_metrics(session)
            layers_sent = bench.layers_sent(session, time.time())
            stop_rss.set()
            await rss_task
        idle_until = session.first_decoded or first
        received = {}
        for layer, b, a in zip(layers, before, after, strict=True):
            frames = sum(x.frames_decoded for x in a) - sum(x.frames_decoded for x in b)
            size = (a[0].width, a[0].height) if a else (0, 0)
            received[layer] = (frames / window.wall, *size)
        live = [mb for _, mb in session.rss[live_from:]]
        return SessionFigures(
            layers=layers,
            cpu_pod=window.per_second("pod"),
            cpu_frontdoor=window.per_second("frontdoor") if window.groups["frontdoor"] else None,
            cpu_livekit=window.per_second("livekit") if window.groups["livekit"] else None,
            cpu_push=window.per_second("push"),
            cpu_subscribers=window.per_second("subscribers"),
            received=received,
            rss_idle=max((mb for t, mb in session.rss if t < idle_until), default=0.0),
            rss_first=session.rss[0][1] if session.rss else 0.0,
            rss_live=max(live, default=0.0),
            layers_sent=layers_sent,
            threads={role: secs / window.wall for role, secs in by_role(threads0, threads1).items()},
            startup=startup,
            pod_counters={k: counters1[k] - counters0.get(k, 0.0) for k in counters1},
            window=window.wall,
        )


async def first_frame(subs: list[Any], within: float = 60) -> float:
    """The moment every subscriber has decoded a video frame (monotonic clock)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        stats = [await s.inbound_video() for s in subs]
        if all(any(x.frames_decoded > 0 for x in st) for st in stats):
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise TimeoutError("no video frame reached a subscriber")


# --- the reference --------------------------------------------------------------------------------


def reference_args(source: Path) -> list[str]:
    """ffmpeg doing the media pod's job the classic way: decode, scale to the three layers, x264
    each (veryfast, zerolatency, the preset's bitrates), Opus; in real time, output discarded."""
    scales = "[0:v]split=3[a][b][c];[a]scale=1280:720[v0];[b]scale=640:360[v1];[c]scale=320:180[v2]"
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostats", "-re", "-i", str(source)]
    args += ["-filter_complex", scales]
    for label, rate in (("[v0]", "1900k"), ("[v1]", "672k"), ("[v2]", "238k")):
        args += ["-map", label, "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency"]
        args += ["-b:v", rate, "-f", "null", "-"]
    return [*args, "-map", "0:a", "-c:a", "libopus", "-b:a", "96k", "-ac", "2", "-f", "null", "-"]


def run_reference(source: Path) -> tuple[float, float]:
    """(CPU-s per media-second, max RSS MB) of the reference over the whole file, from the
    child's resource usage."""
    proc = subprocess.Popen(reference_args(source), stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"reference ffmpeg exited {proc.returncode}")
    return (usage.ru_utime + usage.ru_stime) / media_seconds(source), usage.ru_maxrss / 1024


def media_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        return float(container.duration or 0) / 1_000_000


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
    ages: list[int] = []
    unreadable = 0
    try:
        async with bench.subscriber(info.room_name) as sub:
            got = await sub.tracks_of(info.participant_identity, kinds=("video",))
            stream = sub.video_stream(got.video_track)
            first: float | None = None
            async for event in stream:
                now = media.stamp_now()
                mono = time.monotonic()
                first = first or mono
                if mono - first < 2:  # the jitter buffer and the encoder settle
                    continue
                value = media.read_stamp(media.i420_luma(event.frame))
                if value is None:
                    unreadable += 1
                else:
                    ages.append(media.stamp_age_ms(value, now))
                if mono - first >= seconds + 2:
                    break
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
            "front door": [p for p in [component_pid(bench.env, "frontdoor")] if p],
            "livekit-server": [p for p in [component_pid(bench.env, "livekit-server")] if p],
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


def pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def counters_summary(counters: dict[str, float]) -> str:
    """lki_media_frames_* deltas as `video: decoded 600, published 598, dropped late 2; audio: …`."""
    parts = []
    for kind in ("video", "audio"):
        words = []
        for what in ("decoded", "published"):
            value = sum(v for k, v in counters.items() if f"_{what}_" in k and f'kind="{kind}"' in k)
            words.append(f"{what} {value:.0f}")
        for key, value in sorted(counters.items()):
            reason = re.search(r'reason="(\w+)"', key)
            if "_dropped_" in key and f'kind="{kind}"' in key and value and reason:
                words.append(f"dropped {reason.group(1)} {value:.0f}")
        parts.append(f"{kind}: " + ", ".join(words))
    return "; ".join(parts) if counters else ""


def print_session(fig: SessionFigures, reference: float | None) -> None:
    watched = "+".join(fig.layers)
    print(f"\n### One session, subscribers on {watched} ({fig.window:.0f} s window)\n", flush=True)
    print("| measure | result |\n|---|---|")
    ratio = f" ({reference / fig.cpu_pod:.2f}x cheaper than the reference)" if reference else ""
    print(f"| media pod CPU | {fig.cpu_pod:.3f} CPU-s per media-second{ratio} |")
    for role, per_second in sorted(fig.threads.items(), key=lambda kv: -kv[1]):
        print(f"| &nbsp;&nbsp;{role} | {per_second:.3f} |")
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
            reference, reference_rss = await asyncio.to_thread(run_reference, source)
            print(
                f"\nReference, ffmpeg decode + 3 scales + 3x libx264 veryfast zerolatency + Opus, -re: "
                f"**{reference:.3f} CPU-s per media-second** (max RSS {reference_rss:.0f} MB)",
                flush=True,
            )
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
