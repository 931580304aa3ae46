"""Container probes (httpGet, tcpSocket, exec) against the pod IP, and their thresholds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

Probe = Mapping[str, Any]
Container = Mapping[str, Any]


@dataclass(frozen=True)
class ProbeTiming:
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def of(cls, probe: Probe) -> ProbeTiming:
        """The probe's timing with the API's defaults (0 s, 10 s, 1 s, 1, 3)."""
        return cls(
            initial_delay=float(probe.get("initialDelaySeconds") or 0),
            period=float(probe.get("periodSeconds") or 10),
            timeout=float(probe.get("timeoutSeconds") or 1),
            success_threshold=int(probe.get("successThreshold") or 1),
            failure_threshold=int(probe.get("failureThreshold") or 3),
        )


class ProbeTracker:
    """Consecutive successes/failures → the probe's verdict (None until first decided)."""

    def __init__(self, timing: ProbeTiming, initial: bool | None = None) -> None:
        self.timing = timing
        self.result: bool | None = initial
        self._successes = 0
        self._failures = 0

    def observe(self, ok: bool) -> bool | None:
        if ok:
            self._successes += 1
            self._failures = 0
            if self._successes >= self.timing.success_threshold:
                self.result = True
        else:
            self._failures += 1
            self._successes = 0
            if self._failures >= self.timing.failure_threshold:
                self.result = False
        return self.result


def resolve_port(port: int | str, container: Container) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"port {port!r} not found in the container's ports")


async def run_probe(
    probe: Probe,
    container: Container,
    pod_ip: str,
    env: Mapping[str, str],
    cwd: str | None,
) -> tuple[bool, str]:
    """One attempt of the probe: (success, detail)."""
    limit = ProbeTiming.of(probe).timeout
    try:
        if probe.get("httpGet"):
            return await _http_get(probe["httpGet"], container, pod_ip, limit)
        if probe.get("tcpSocket"):
            return await _tcp(probe["tcpSocket"], container, pod_ip, limit)
        if probe.get("exec"):
            return await _exec(probe["exec"].get("command") or [], env, cwd, limit)
        if probe.get("grpc"):
            return False, "grpc probes are not supported by the process node"
    except (TimeoutError, OSError, ValueError, aiohttp.ClientError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return False, "probe has no handler"


async def _http_get(
    h: Mapping[str, Any], container: Container, pod_ip: str, limit: float
) -> tuple[bool, str]:
    scheme = str(h.get("scheme") or "HTTP").lower()
    host = h.get("host") or pod_ip
    port = resolve_port(h["port"], container)
    path = h.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    headers = {"User-Agent": "kube-probe/process-node", "Accept": "*/*"}
    for hdr in h.get("httpHeaders") or []:
        headers[hdr["name"]] = hdr.get("value", "")
    ssl_ctx: ssl.SSLContext | bool = False
    if scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ssl_ctx = ctx
    url = f"{scheme}://{host}:{port}{path}"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit)) as session,
        session.get(url, headers=headers, ssl=ssl_ctx, allow_redirects=False) as resp,
    ):
        ok = 200 <= resp.status < 400
        return ok, f"HTTP probe {url}: {resp.status}"


async def _tcp(t: Mapping[str, Any], container: Container, pod_ip: str, limit: float) -> tuple[bool, str]:
    host = t.get("host") or pod_ip
    port = resolve_port(t["port"], container)
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, f"TCP probe {host}:{port}: connected"


async def _exec(
    command: list[str], env: Mapping[str, str], cwd: str | None, limit: float
) -> tuple[bool, str]:
    if not command:
        return False, "exec probe without command"
    proc = await asyncio.create_subprocess_exec(
        *command,
        env=dict(env),
        cwd=cwd or None,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        return False, f"exec probe timed out after {limit:g}s"
    text = out.decode(errors="replace")[-200:].strip()
    return proc.returncode == 0, f"exec probe exited {proc.returncode}: {text}"
