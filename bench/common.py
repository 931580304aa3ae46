"""What the media benchmarks (bench/rtmp.py, bench/url.py, bench/whip.py) share: CPU and memory
accounting of processes and threads from /proc, a client of the stack that finds a session's
media pod and reads its counters and log, one steady measurement window over a pod, the
glass-to-room reading of stamped frames, the ffmpeg reference pipeline, and a few printing
helpers.

A module for the scripts to import, not a benchmark: run by `make bench` (every bench/*.py),
it only imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
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

# The repository first: a dependency installs a `tests` package of its own into site-packages.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.e2e import media  # shared with the end-to-end tests

warnings.filterwarnings("ignore", message="The HMAC key is")  # the dev secret is short

CLK_TCK = os.sysconf("SC_CLK_TCK")
WARMUP = 5.0  # seconds after the first frame reaches the room before any window opens


# --- process accounting ---------------------------------------------------------------------------


def _stat_fields(stat: str) -> list[str]:
    """The fields of a /proc stat line after the command name (which may hold spaces); field
    N of proc(5) is at index N - 3."""
    return stat[stat.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds; None once it is gone."""
    try:
        fields = _stat_fields(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def started_at(pid: int) -> float | None:
    """When a process started, as a wall-clock time (to the kernel's 10 ms tick); None once it
    is gone. /proc gives it in ticks since boot, on the boot-time clock."""
    try:
        fields = _stat_fields(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return None
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return boot + int(fields[19]) / CLK_TCK


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """CPU-seconds of each thread of a process: thread id → (thread name, seconds)."""
    out = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                stat = (task / "stat").read_text()
                fields = _stat_fields(stat)
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
    """A process's resident memory in MB; None once it is gone."""
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
        """CPU-seconds the group used per second of the window."""
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


def component_pids(env: dict[str, str], name: str) -> list[int]:
    """The pid of one of the stack's components (from its pid file), as a group of one; none
    when the stack's directory is unknown or the component is not running."""
    if not env.get("LKI_STACK_DIR"):
        return []
    from local_stack.stack import Stack

    pid = Stack.load(env["LKI_STACK_DIR"]).pid(name)
    return [pid] if pid else []


# --- the stack and a session's media pod ----------------------------------------------------------


@dataclass
class MediaSession:
    """One ingress's session, with its media pod once it runs and the pod's RSS samples."""

    info: Any  # api.IngressInfo
    pid: int | None = None
    pod_ip: str | None = None
    pod_name: str | None = None
    rss: list[tuple[float, float]] = field(default_factory=list)  # (monotonic time, MB)
    first_decoded: float | None = None  # when the pod's decoded-frame counter first moved

    def rss_before(self, moment: float) -> float:
        """The largest RSS sample before a moment (monotonic clock)."""
        return max((mb for t, mb in self.rss if t < moment), default=0.0)


class StackBench:
    """A benchmark's clients of the stack: the LiveKit API (through the shim), the Kubernetes API
    (to find media pods) and HTTP (the pods' /metrics)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.lk = api.LiveKitAPI(env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"])
        self.kube = AsyncClient(KubeConfig.from_file(env["KUBECONFIG"]), namespace=env["INGRESS_NAMESPACE"])
        self.http = aiohttp.ClientSession()
        self.ws_url = env["LIVEKIT_SERVER_URL"].replace("http://", "ws://")

    async def close(self) -> None:
        """Close the clients."""
        await self.lk.aclose()
        await self.kube.close()
        await self.http.close()

    async def delete(self, ingress_id: str) -> None:
        """DeleteIngress, tolerating one already gone."""
        with contextlib.suppress(api.TwirpError):
            await self.lk.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=ingress_id))

    def subscriber(self, room: str) -> media.Subscriber:
        """A subscriber in `room` (use as an async context manager)."""
        return media.Subscriber(
            self.ws_url, self.env["LIVEKIT_API_KEY"], self.env["LIVEKIT_API_SECRET"], room
        )

    def pod_log(self, pod_name: str) -> Path | None:
        """The media container's log file, when the stack's directory is known."""
        root = self.env.get("LKI_STACK_DIR")
        if not root:
            return None
        return Path(root) / "logs" / "pods" / f"{self.env['INGRESS_NAMESPACE']}_{pod_name}_media.log"

    async def find_pod(self, session: MediaSession, within: float = 60) -> None:
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

    async def sample_rss(self, session: MediaSession, stop: asyncio.Event, every: float = 0.1) -> None:
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

    def layers_sent(self, session: MediaSession, before: float) -> str:
        """The last simulcast layer switch livekit-server asked of the pod (dynacast), from the
        rtc SDK's log line in the pod's log; `before` is a wall-clock time."""
        log = self.pod_log(session.pod_name) if session.pod_name else None
        if log is None:
            return "unknown"
        last = "unknown (no dynacast update in the pod's log)"
        with contextlib.suppress(OSError):
            for line in log.read_text(errors="replace").splitlines():
                found = re.search(r'"ts": "([^"]+)".*subscribed_codecs=\\"\w+:\[([^\]]*)\]', line)
                if found and datetime.fromisoformat(found.group(1)).timestamp() <= before:
                    last = found.group(2)
        return last

    async def pod_metrics(self, session: MediaSession) -> dict[str, float]:
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
        """Wait until these ingresses have no media pod left (a warning after `within`)."""
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


async def first_frame(subs: Sequence[media.Subscriber], within: float = 60) -> float:
    """The moment every subscriber has decoded a video frame (monotonic clock)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        stats = [await s.inbound_video() for s in subs]
        if all(any(x.frames_decoded > 0 for x in st) for st in stats):
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise TimeoutError("no video frame reached a subscriber")


async def stamp_ages(stream: Any, seconds: float, settle: float) -> tuple[list[int], int]:
    """Glass-to-room latency of each frame `stream` (an rtc.VideoStream) hands over for
    `seconds`, after `settle` seconds from its first frame (jitter buffers and encoders settle):
    its arrival minus the stamp in its picture (tests/e2e/media.py); and how many frames had no
    readable stamp. A stream that stops delivering ends the reading."""
    ages: list[int] = []
    unreadable = 0
    first: float | None = None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(settle + seconds + 10):
            async for event in stream:
                now = media.stamp_now()
                mono = time.monotonic()
                first = first or mono
                if mono - first >= settle + seconds:
                    break
                if mono - first < settle:
                    continue
                value = media.read_stamp(media.i420_luma(event.frame))
                if value is None:
                    unreadable += 1
                else:
                    ages.append(media.stamp_age_ms(value, now))
    return ages, unreadable


# --- one steady window over a media pod -----------------------------------------------------------


@dataclass
class PodWindow:
    """What one media pod did over a steady window, and what its subscribers received."""

    cpu: CpuWindow  # the pod is group "pod"; the caller's groups beside it
    threads: dict[str, float]  # the pod's CPU-s/s by thread role
    received: list[tuple[float, int, int]]  # per subscriber: (fps decoded, width, height)
    counters: dict[str, float]  # lki_media_frames_* over the window
    layers_sent: str  # the pod's last dynacast update before the window closed
    rss_live: float  # the pod's largest RSS sample in the window, MB


async def measure_window(
    bench: StackBench,
    session: MediaSession,
    subs: Sequence[media.Subscriber],
    seconds: float,
    groups: dict[str, list[int]],
) -> PodWindow:
    """CPU of the pod (by thread) and of `groups` over `seconds`, the frames the subscribers
    decoded (WebRTC's counters, without handing frames to Python), and the pod's own counters.
    The pod's RSS is sampled by the caller (`StackBench.sample_rss`) while this runs."""
    assert session.pid is not None
    live_from = len(session.rss)
    window = CpuWindow({"pod": [session.pid], **groups})
    before = [await s.inbound_video() for s in subs]
    counters0 = await bench.pod_metrics(session)
    threads0 = thread_cpu(session.pid)
    window.open()
    await asyncio.sleep(seconds)
    window.close()
    threads1 = thread_cpu(session.pid)
    after = [await s.inbound_video() for s in subs]
    counters1 = await bench.pod_metrics(session)
    received = []
    for b, a in zip(before, after, strict=True):
        frames = sum(x.frames_decoded for x in a) - sum(x.frames_decoded for x in b)
        size = (a[0].width, a[0].height) if a else (0, 0)
        received.append((frames / window.wall, *size))
    return PodWindow(
        cpu=window,
        threads={role: secs / window.wall for role, secs in by_role(threads0, threads1).items()},
        received=received,
        counters={k: counters1[k] - counters0.get(k, 0.0) for k in counters1},
        layers_sent=bench.layers_sent(session, time.time()),
        rss_live=max((mb for _, mb in session.rss[live_from:]), default=0.0),
    )


# --- the reference --------------------------------------------------------------------------------

REFERENCE = "ffmpeg decode + 3 scales + 3x libx264 veryfast zerolatency + Opus, -re"


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
    """A media file's duration in seconds."""
    with av.open(str(path)) as container:
        return float(container.duration or 0) / 1_000_000


# --- printing -------------------------------------------------------------------------------------


def pct(samples: Sequence[float], q: float) -> float:
    """The q-quantile of the samples (the nearest one, no interpolation)."""
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


def print_pod_cpu(cpu: float, threads: dict[str, float], reference: float | None) -> None:
    """Table rows: the pod's CPU-s per media-second against the reference, then by thread."""
    ratio = f" ({reference / cpu:.2f}x cheaper than the reference)" if reference else ""
    print(f"| media pod CPU | {cpu:.3f} CPU-s per media-second{ratio} |")
    for role, per_second in sorted(threads.items(), key=lambda kv: -kv[1]):
        print(f"| &nbsp;&nbsp;{role} | {per_second:.3f} |")


def print_reference(cpu: float, rss: float) -> None:
    """The reference's line."""
    print(
        f"\nReference, {REFERENCE}: **{cpu:.3f} CPU-s per media-second** (max RSS {rss:.0f} MB)", flush=True
    )
