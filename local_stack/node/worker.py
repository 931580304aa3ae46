"""One Pod on the process node: its containers as local processes, supervised like a kubelet.

Lifecycle of a `PodWorker`:
  IP from the node's range → service-account kubeconfig → init containers in order →
  containers (each supervised: restart policy with crash-loop back-off, probes) → either
  all containers end for good (phase Succeeded/Failed) or the pod is deleted (preStop,
  SIGTERM to each process group, grace period, SIGKILL, then the Pod is deleted with
  grace 0, as the kubelet does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from local_stack.node import status as st
from local_stack.node.envvars import (
    EnvError,
    EnvSources,
    PodNetwork,
    command_line,
    referenced_objects,
    resolve_env,
)
from local_stack.node.kube import JSON, KubeError, kubeconfig_cluster, token_kubeconfig
from local_stack.node.probes import ProbeTiming, ProbeTracker, run_probe
from local_stack.procs import ProcRef, die_with_parent

if TYPE_CHECKING:
    from local_stack.process_node import ProcessNode

log = logging.getLogger("local_stack.process_node")

MIN_GRACE = 2.0  # the kubelet's minimum termination grace period, in seconds


@dataclass
class _Run:
    """A running process of a container."""

    proc: asyncio.subprocess.Process
    ref: ProcRef
    started: float
    kill_message: str | None = None


@dataclass
class _Container:
    spec: Mapping[str, Any]
    rec: st.ContainerRecord
    init: bool = False
    run: _Run | None = None
    crashes: int = 0  # consecutive restarts, for the back-off
    task: asyncio.Task[None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


class PodWorker:
    def __init__(self, node: ProcessNode, pod: JSON) -> None:
        self.node = node
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.key = f"{self.namespace}/{self.name}"
        spec = pod.get("spec") or {}
        self.restart_policy: str = spec.get("restartPolicy") or "Always"
        init_recs = st.records_for(pod, init=True)
        main_recs = st.records_for(pod, init=False)
        self.initialized = st.was_initialized(pod, init_recs)
        self.init = [
            _Container(spec=c, rec=r, init=True)
            for c, r in zip(spec.get("initContainers") or [], init_recs, strict=True)
        ]
        self.main = [
            _Container(spec=c, rec=r) for c, r in zip(spec.get("containers") or [], main_recs, strict=True)
        ]
        self.pod_ip: str | None = None
        self.start_time = st.parse_time((pod.get("status") or {}).get("startTime"))
        self.sandbox_ready = False
        self.terminal = False
        self.gone = False  # the Pod object no longer exists
        self.deleting = asyncio.Event()
        self.dirty = asyncio.Event()
        self._changed = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._last_written: JSON | None = None
        self.task: asyncio.Task[None] | None = None
        self.pod_dir = node.cfg.state_dir / "pods" / self.uid
        self.extra_env: dict[str, str] = {}
        self.halt = False  # no more (re)starts of containers
        if meta.get("deletionTimestamp"):
            self.deleting.set()

    # --- inputs from the node ---------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self._main(), name=f"pod {self.key}")
        return self.task

    def update(self, pod: JSON) -> None:
        """A newer version of the Pod from the watch."""
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp") and not self.deleting.is_set():
            log.info("pod deletion requested", extra={"pod": self.key, "grace": self._grace()})
            self.deleting.set()
        self._notify()

    def vanished(self) -> None:
        """The Pod was removed from the API (force-deleted or deleted by us)."""
        self.gone = True
        self.deleting.set()
        self._notify()

    # --- bookkeeping --------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def mark(self) -> None:
        """Something changed: write the status (coalesced) and wake waiters."""
        self.dirty.set()
        self._notify()

    async def _wait_until(self, pred: Callable[[], bool], within: float | None = None) -> bool:
        deadline = None if within is None else time.monotonic() + within
        while not pred():
            ev = self._changed
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ev.wait(), remaining)
        return True

    def halted(self) -> bool:
        return self.halt or self.deleting.is_set()

    async def _sleep_unless_deleting(self, seconds: float) -> bool:
        """Sleep; True if the pod started terminating meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.deleting.wait(), seconds)
        return self.deleting.is_set()

    def _grace(self) -> float:
        meta = self.pod.get("metadata") or {}
        g = meta.get("deletionGracePeriodSeconds")
        if g is None:
            g = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        return max(float(g if g is not None else 30), MIN_GRACE)

    def view(self) -> st.PodView:
        return st.PodView(
            init=[c.rec for c in self.init],
            main=[c.rec for c in self.main],
            restart_policy=self.restart_policy,
            initialized=self.initialized,
            host_ip=self.node.cfg.host_ip,
            pod_ip=self.pod_ip,
            start_time=self.start_time,
            sandbox_ready=self.sandbox_ready,
            terminal=self.terminal,
        )

    def phase(self) -> str:
        v = self.view()
        return st.pod_phase(v.init, v.main, v.restart_policy, v.initialized, v.terminal)

    # --- status ---------------------------------------------------------------------------

    async def _status_writer(self) -> None:
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            try:
                await self.write_status()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("status update failed", extra={"pod": self.key, "error": str(exc)[:300]})
                await asyncio.sleep(1.0)
                self.dirty.set()

    async def write_status(self) -> None:
        async with self._write_lock:
            if self.gone:
                return
            status = st.build_pod_status(self._pod_for_status(), self.view())
            if status == self._last_written:
                return
            path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
            try:
                updated = await self.node.kube.patch(path, {"metadata": {"uid": self.uid}, "status": status})
            except KubeError as exc:
                if exc.status in (404, 409, 422) and await self._pod_missing():
                    self.gone = True
                    return
                raise
            self._last_written = status
            self.pod = {**self.pod, "status": updated.get("status", status)}

    def _pod_for_status(self) -> JSON:
        """The pod with our last written conditions on top: a watch event older than our last
        patch must not reset their transition times."""
        if not self._last_written:
            return self.pod
        mine = {c["type"]: c for c in self._last_written.get("conditions") or []}
        status = self.pod.get("status") or {}
        others = [c for c in status.get("conditions") or [] if c.get("type") not in mine]
        return {**self.pod, "status": {**status, "conditions": [*others, *mine.values()]}}

    async def _pod_missing(self) -> bool:
        cur = await self.node.kube.get_or_none(f"/api/v1/namespaces/{self.namespace}/pods/{self.name}")
        return cur is None or cur["metadata"].get("uid") != self.uid

    async def event(self, reason: str, message: str, etype: str = "Normal") -> None:
        await self.node.event(self.pod, reason, message, etype)

    # --- the pod's life ---------------------------------------------------------------------

    async def _main(self) -> None:
        writer = asyncio.create_task(self._status_writer(), name=f"status {self.key}")
        try:
            await self._live()
            await self._finish()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await self._kill_all(self.node.cfg.shutdown_grace if self.node.stopping else MIN_GRACE)
            self.node.ipam.release(self.uid)

    async def _live(self) -> None:
        if self.deleting.is_set():
            return
        prior_ip = (self.pod.get("status") or {}).get("podIP")
        if (self.pod.get("spec") or {}).get("hostNetwork"):
            self.pod_ip = self.node.cfg.host_ip
        elif prior_ip and self.node.ipam.adopt(self.uid, prior_ip):
            self.pod_ip = prior_ip
        else:
            self.pod_ip = self.node.ipam.allocate(self.uid)
        self.start_time = self.start_time or st.now()
        self.sandbox_ready = True
        pdir = self.pod_dir
        pdir.mkdir(parents=True, exist_ok=True)
        for c in self.main:
            if isinstance(c.rec.state, st.Waiting) and c.rec.last_state is None:
                c.rec.state = st.Waiting("PodInitializing" if not self.initialized else "ContainerCreating")
        self.mark()
        log.info("pod admitted", extra={"pod": self.key, "uid": self.uid, "podIP": self.pod_ip})

        while not self.deleting.is_set():
            try:
                self.extra_env = await self._credentials()
                break
            except (KubeError, OSError, TimeoutError, aiohttp.ClientError) as exc:
                for c in [*self.init, *self.main]:
                    if isinstance(c.rec.state, st.Waiting):
                        c.rec.state = st.Waiting(
                            "CreateContainerConfigError", f"service account token: {exc}"[:500]
                        )
                self.mark()
                if await self._sleep_unless_deleting(2.0):
                    return

        if not self.initialized and not await self._run_init():
            return
        self.initialized = True
        for c in self.main:
            if isinstance(c.rec.state, st.Waiting) and c.rec.last_state is None:
                c.rec.state = st.Waiting("ContainerCreating")
        self.mark()
        for c in self.main:
            c.task = self._spawn_supervisor(c, "container")
        await self._wait_until(
            lambda: self.deleting.is_set() or all(c.task is not None and c.task.done() for c in self.main)
        )

    async def _run_init(self) -> bool:
        for c in self.init:
            if self.deleting.is_set():
                return False
            if not c.rec.sidecar and isinstance(c.rec.state, st.Terminated) and c.rec.state.exit_code == 0:
                continue
            task = self._spawn_supervisor(c, "init")
            c.task = task

            def started(rec: st.ContainerRecord = c.rec, task: asyncio.Task[None] = task) -> bool:
                return self.deleting.is_set() or rec.started or task.done()

            def ended(task: asyncio.Task[None] = task) -> bool:
                return self.deleting.is_set() or task.done()

            if c.rec.sidecar:
                await self._wait_until(started)
                continue
            await self._wait_until(ended)
            ok = isinstance(c.rec.state, st.Terminated) and c.rec.state.exit_code == 0
            if not ok:
                return False
        return True

    async def _finish(self) -> None:
        if self.deleting.is_set():
            await self._terminate()
        else:
            # every container ended for good (or init failed): stop sidecars, then done
            await self._stop_containers(self._grace(), "pod completed")
        self.terminal = True
        self.sandbox_ready = False
        self.node.ipam.release(self.uid)
        if not self.gone:
            for attempt in range(10):
                try:
                    await self.write_status()
                    break
                except (KubeError, OSError, TimeoutError) as exc:
                    log.warning(
                        "final status failed",
                        extra={"pod": self.key, "error": str(exc)[:200], "attempt": attempt},
                    )
                    await asyncio.sleep(0.5)
        log.info(
            "pod finished", extra={"pod": self.key, "phase": self.phase(), "deleted": self.deleting.is_set()}
        )
        if self.deleting.is_set() and not self.gone:
            await self.node.delete_pod_now(self.namespace, self.name, self.uid)

    async def _terminate(self) -> None:
        grace = self._grace()
        await self.event("Killing", f"Stopping containers (grace period {grace:g}s)")
        await self._stop_containers(grace, "pod deleted", run_pre_stop=not self.gone)

    async def _stop_containers(self, grace: float, why: str, run_pre_stop: bool = False) -> None:
        """preStop hooks, SIGTERM, wait up to `grace` (shortened if the deletion is), SIGKILL."""
        self.halt = True
        start = time.monotonic()
        deadline = start + grace
        containers = [c for c in [*self.main, *self.init] if c.run is not None]
        if run_pre_stop:
            hooks = [self._pre_stop(c, deadline) for c in containers]
            await asyncio.gather(*hooks, return_exceptions=True)
        for c in containers:
            if c.run is not None:
                c.run.kill_message = why
                c.run.ref.signal_group(signal.SIGTERM)
        while any(c.run is not None for c in containers):
            deadline = min(deadline, start + self._grace()) if self.deleting.is_set() else deadline
            if time.monotonic() >= deadline:
                break
            await self._wait_until(lambda: all(c.run is None for c in containers), within=0.2)
        for c in containers:
            if c.run is not None:
                log.info(
                    "container did not stop in time: SIGKILL",
                    extra={"pod": self.key, "container": c.rec.name},
                )
                c.run.ref.signal_group(signal.SIGKILL)
        await self._wait_until(lambda: all(c.run is None for c in containers), within=5.0)
        tasks = [c.task for c in [*self.init, *self.main] if c.task is not None and not c.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _pre_stop(self, c: _Container, deadline: float) -> None:
        pre = ((c.spec.get("lifecycle") or {}).get("preStop")) or {}
        if not pre:
            return
        budget = max(0.0, deadline - time.monotonic())
        try:
            if pre.get("sleep"):
                await asyncio.sleep(min(float(pre["sleep"].get("seconds", 0)), budget))
            elif pre.get("exec") or pre.get("httpGet") or pre.get("tcpSocket"):
                probe = {**pre, "timeoutSeconds": max(1, int(budget))}
                ok, detail = await asyncio.wait_for(
                    run_probe(probe, c.spec, self.pod_ip or self.node.cfg.host_ip, c.env, c.cwd), budget
                )
                log.info(
                    "preStop hook",
                    extra={"pod": self.key, "container": c.rec.name, "ok": ok, "detail": detail},
                )
        except (TimeoutError, OSError) as exc:
            log.info(
                "preStop hook failed", extra={"pod": self.key, "container": c.rec.name, "error": str(exc)}
            )

    async def _kill_all(self, grace: float) -> None:
        self.halt = True
        live = [c for c in [*self.init, *self.main] if c.run is not None]
        for c in live:
            if c.run is not None:
                c.run.ref.signal_group(signal.SIGTERM if grace > 0 else signal.SIGKILL)
        if grace > 0:
            await self._wait_until(lambda: all(c.run is None for c in live), within=grace)
        for c in live:
            if c.run is not None:
                c.run.ref.signal_group(signal.SIGKILL)
        for c in [*self.init, *self.main]:
            if c.task is not None and not c.task.done():
                c.task.cancel()
        for c in live:
            if c.run is not None:
                with contextlib.suppress(ProcessLookupError, TimeoutError):
                    await asyncio.wait_for(c.run.proc.wait(), 2.0)
                self.node.registry.remove(c.run.ref.pid)

    # --- one container ---------------------------------------------------------------------

    def _spawn_supervisor(self, c: _Container, kind: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._supervise(c), name=f"{kind} {self.key}/{c.rec.name}")
        task.add_done_callback(lambda _: self._notify())  # waiters check task.done()
        return task

    def _wants_restart(self, c: _Container, exit_code: int) -> bool:
        if c.rec.sidecar:
            return True
        if c.init:
            return exit_code != 0 and self.restart_policy != "Never"
        return st.should_restart(self.restart_policy, exit_code)

    async def _supervise(self, c: _Container) -> None:
        cfg = self.node.cfg
        config_errors = 0
        while not self.halted():
            rec = c.rec
            if isinstance(rec.state, st.Terminated):
                if not self._wants_restart(c, rec.state.exit_code):
                    return
                delay = st.backoff_delay(c.crashes, cfg.backoff_base, cfg.backoff_max)
                if delay > 0:
                    rec.last_state = rec.state
                    rec.state = st.Waiting(
                        "CrashLoopBackOff",
                        f"back-off {delay:g}s restarting failed container={rec.name} "
                        f"pod={self.name}_{self.namespace}({self.uid})",
                    )
                    self.mark()
                    await self.event("BackOff", "Back-off restarting failed container", "Warning")
                    if await self._sleep_unless_deleting(delay) or self.halted():
                        return
                    terminated = rec.last_state
                else:
                    terminated = rec.state
                rec.last_state = terminated
                rec.restart_count += 1
                c.crashes += 1
            try:
                try:
                    argv = await self._prepare(c)
                except (KubeError, OSError, TimeoutError, aiohttp.ClientError) as api_exc:
                    raise EnvError(f"reading the container's config: {api_exc}"[:500]) from api_exc
            except EnvError as exc:
                config_errors += 1
                rec.state = st.Waiting(exc.reason, str(exc))
                self.mark()
                await self.event("Failed", f"Error: {exc}", "Warning")
                if await self._sleep_unless_deleting(min(10.0, 0.5 * 2**config_errors)):
                    return
                continue
            if self.halted():
                return
            config_errors = 0
            ran_for = await self._run_once(c, argv)
            if ran_for >= 2 * cfg.backoff_max:
                c.crashes = 0

    async def _prepare(self, c: _Container) -> list[str]:
        """The container's env, working dir and argv (EnvError if it cannot start yet)."""
        spec = c.spec
        secret_names, cm_names = referenced_objects(spec)
        sources = EnvSources(
            secrets={n: d for n in secret_names if (d := await self._secret(n)) is not None},
            config_maps={n: d for n in cm_names if (d := await self._config_map(n)) is not None},
        )
        cfg = self.node.cfg
        server, _ = self.node.cluster
        base = {
            **cfg.base_env,
            "HOSTNAME": (self.pod.get("spec") or {}).get("hostname") or self.name,
            "KUBERNETES_SERVICE_HOST": _host_of(server),
            "KUBERNETES_SERVICE_PORT": _port_of(server),
            **self.extra_env,
        }
        net = PodNetwork(
            pod_ip=self.pod_ip or cfg.host_ip,
            host_ip=cfg.host_ip,
            node_name=cfg.node_name,
            node_allocatable=self.node.allocatable,
        )
        resolved = resolve_env(self.pod, spec, sources, net, base)
        if resolved.skipped:
            log.info("invalid env names skipped", extra={"pod": self.key, "names": resolved.skipped})
        argv = command_line(spec, resolved.env)
        wd = spec.get("workingDir")
        if wd and not await asyncio.to_thread(os.path.isdir, wd):
            raise EnvError(f"workingDir {wd} does not exist on this machine", reason="CreateContainerError")
        c.env = resolved.env
        c.cwd = wd or str(self.pod_dir)
        return argv

    async def _secret(self, name: str) -> dict[str, str] | None:
        obj = await self.node.kube.get_or_none(f"/api/v1/namespaces/{self.namespace}/secrets/{name}")
        if obj is None:
            return None
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}

    async def _config_map(self, name: str) -> dict[str, str] | None:
        obj = await self.node.kube.get_or_none(f"/api/v1/namespaces/{self.namespace}/configmaps/{name}")
        if obj is None:
            return None
        return dict(obj.get("data") or {})

    async def _run_once(self, c: _Container, argv: list[str]) -> float:
        """Start the process, supervise its probes, wait for its exit. Returns seconds it ran."""
        rec = c.rec
        log_path = self.node.cfg.pod_logs / f"{self.namespace}_{self.name}_{rec.name}.log"
        started_at = st.now()
        try:
            out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    env=c.env,
                    cwd=c.cwd,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
            finally:
                os.close(out)
        except OSError as exc:
            rec.state = st.Terminated(
                exit_code=128,
                reason="StartError",
                finished_at=st.now(),
                started_at=started_at,
                message=str(exc),
            )
            self.mark()
            await self.event("Failed", f"Error: {exc}", "Warning")
            return 0.0
        ref = ProcRef.of(proc.pid, name=f"{self.key}/{rec.name}")
        self.node.registry.add(ref, pod=self.key, uid=self.uid, container=rec.name)
        run = _Run(proc=proc, ref=ref, started=time.monotonic())
        c.run = run
        container_id = f"process://{proc.pid}"
        rec.container_id = container_id
        rec.state = st.Running(started_at)
        has_startup = bool(c.spec.get("startupProbe")) and not (c.init and not rec.sidecar)
        has_readiness = bool(c.spec.get("readinessProbe")) and not (c.init and not rec.sidecar)
        rec.started = not has_startup
        rec.ready = rec.started and not has_readiness and not (c.init and not rec.sidecar)
        self.mark()
        log.info(
            "container started",
            extra={"pod": self.key, "container": rec.name, "pid": proc.pid, "argv": argv[:8]},
        )
        await self.event("Started", f"Started container {rec.name} (pid {proc.pid})")
        probes = None if (c.init and not rec.sidecar) else asyncio.create_task(self._probes(c, run))
        try:
            returncode = await proc.wait()
        finally:
            if probes is not None:
                probes.cancel()
                await asyncio.gather(probes, return_exceptions=True)
            ref.signal_group(signal.SIGKILL)  # what the container left behind in its group
            self.node.registry.remove(proc.pid)
            c.run = None
        rec.state = st.terminated_from_returncode(
            returncode, started_at, st.now(), container_id, message=run.kill_message
        )
        rec.ready = c.init and not rec.sidecar and returncode == 0
        rec.started = False
        self.mark()
        ran = time.monotonic() - run.started
        log.info(
            "container exited",
            extra={
                "pod": self.key,
                "container": rec.name,
                "exitCode": rec.state.exit_code,
                "ranSeconds": round(ran, 2),
            },
        )
        return ran

    async def _probes(self, c: _Container, run: _Run) -> None:
        spec, rec = c.spec, c.rec
        ip = self.pod_ip or self.node.cfg.host_ip
        startup = spec.get("startupProbe")
        if startup:
            timing = ProbeTiming.of(startup)
            tracker = ProbeTracker(timing)
            await asyncio.sleep(timing.initial_delay)
            while tracker.result is None:
                ok, detail = await run_probe(startup, spec, ip, c.env, c.cwd)
                if tracker.observe(ok) is None:
                    await asyncio.sleep(timing.period)
            if not tracker.result:
                await self._probe_kill(c, run, "startup", detail)
                return
            rec.started = True
            rec.ready = not spec.get("readinessProbe")
            self.mark()
        loops = []
        if spec.get("readinessProbe"):
            loops.append(self._readiness(c, spec["readinessProbe"], ip))
        if spec.get("livenessProbe"):
            loops.append(self._liveness(c, run, spec["livenessProbe"], ip))
        await asyncio.gather(*loops)

    async def _readiness(self, c: _Container, probe: Mapping[str, Any], ip: str) -> None:
        timing = ProbeTiming.of(probe)
        tracker = ProbeTracker(timing)
        await asyncio.sleep(timing.initial_delay)
        while True:
            ok, detail = await run_probe(probe, c.spec, ip, c.env, c.cwd)
            result = tracker.observe(ok)
            if result is not None and result != c.rec.ready:
                c.rec.ready = result
                log.info(
                    "readiness changed",
                    extra={"pod": self.key, "container": c.rec.name, "ready": result, "detail": detail},
                )
                if not result:
                    await self.event("Unhealthy", f"Readiness probe failed: {detail}", "Warning")
                self.mark()
            await asyncio.sleep(timing.period)

    async def _liveness(self, c: _Container, run: _Run, probe: Mapping[str, Any], ip: str) -> None:
        timing = ProbeTiming.of(probe)
        tracker = ProbeTracker(timing, initial=True)
        await asyncio.sleep(timing.initial_delay)
        while True:
            ok, detail = await run_probe(probe, c.spec, ip, c.env, c.cwd)
            if tracker.observe(ok) is False:
                await self._probe_kill(c, run, "liveness", detail, probe)
                return
            await asyncio.sleep(timing.period)

    async def _probe_kill(
        self, c: _Container, run: _Run, kind: str, detail: str, probe: Mapping[str, Any] | None = None
    ) -> None:
        msg = f"Container {c.rec.name} failed {kind} probe, will be restarted: {detail}"
        log.info(
            "probe failed: killing container", extra={"pod": self.key, "container": c.rec.name, "probe": kind}
        )
        await self.event("Unhealthy", msg, "Warning")
        run.kill_message = msg
        grace = (probe or {}).get("terminationGracePeriodSeconds")
        if grace is None:
            grace = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        run.ref.signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(run.proc.wait()), max(float(grace), MIN_GRACE))
        except TimeoutError:
            run.ref.signal_group(signal.SIGKILL)

    # --- credentials ---------------------------------------------------------------------

    async def _credentials(self) -> dict[str, str]:
        """A kubeconfig with a token of the pod's service account (bound to the pod)."""
        cfg = self.node.cfg
        spec = self.pod.get("spec") or {}
        if cfg.pod_credentials != "serviceaccount":
            return {}
        sa = spec.get("serviceAccountName") or "default"
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            sa_obj = await self.node.kube.get_or_none(
                f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}"
            )
            automount = (sa_obj or {}).get("automountServiceAccountToken", True)
        if automount is False:
            return {}
        req = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                # 3607 s, bound to the pod: the apiserver extends it as it does the kubelet's
                "expirationSeconds": 3607,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid},
            },
        }
        resp = await self.node.kube.create(
            f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token", req
        )
        token = resp["status"]["token"]
        server, ca = self.node.cluster
        sa_dir = self.pod_dir / "serviceaccount"
        sa_dir.mkdir(parents=True, exist_ok=True)
        _write_private(sa_dir / "token", token)
        _write_private(sa_dir / "namespace", self.namespace)
        if ca:
            _write_private(sa_dir / "ca.crt", ca.decode())
        kubeconfig = self.pod_dir / "kubeconfig"
        _write_private(kubeconfig, token_kubeconfig(server, ca, token, self.namespace))
        return {"KUBECONFIG": str(kubeconfig)}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _host_of(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "127.0.0.1"


def _port_of(url: str) -> str:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    return str(u.port or (443 if u.scheme == "https" else 80))


__all__ = ["PodWorker", "kubeconfig_cluster"]
