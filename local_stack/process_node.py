"""The process node: a kubelet (and scheduler) stand-in that runs Pods as local processes.

It registers a Node, keeps it alive (a Lease in kube-node-lease and the Ready condition),
binds pending Pods to itself (there is no kube-scheduler), and runs the Pods bound to it:
each container's `command` + `args` as a process on a pod IP of 127.0.x.y (the image is
not used), reporting status as a kubelet would. See docs/local-stack.md.

Run it as `lki-process-node --kubeconfig ... --state-dir ...`, or in-process:
`await ProcessNode(NodeConfig(...)).run()` (cancel the task to stop it; its containers go too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import platform
import signal
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from local_stack.logs import setup_json_logging
from local_stack.node import status as st
from local_stack.node.ipam import IpAllocator
from local_stack.node.kube import JSON, Kube, KubeError, kubeconfig_cluster, list_watch
from local_stack.node.scheduling import binding, fits_node, wants_binding
from local_stack.node.worker import PodWorker
from local_stack.procs import ProcessRegistry

PODS = Gauge("lki_node_pods", "Pods the process node runs, by phase", ["phase"])
log = logging.getLogger("local_stack.process_node")

LEASE_NAMESPACE = "kube-node-lease"


def _default_base_env() -> dict[str, str]:
    """What an image would provide: PATH and friends (the node's own), unbuffered Python."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR") if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _kubelet_version() -> str:
    try:
        from local_stack.tools import read_versions

        return read_versions().get("KUBERNETES_VERSION", "v0.0.0")
    except (OSError, KeyError):
        return "v0.0.0"


@dataclass
class NodeConfig:
    kubeconfig: Path
    state_dir: Path
    log_dir: Path | None = None  # pod logs; default <state_dir>/logs
    node_name: str = "process-node"
    pod_cidr: str = "127.0.16.0/20"
    host_ip: str = "127.0.0.1"
    health_port: int | None = None
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    lease_seconds: float = 10.0
    node_status_seconds: float = 30.0
    shutdown_grace: float = 3.0
    pod_credentials: str = "serviceaccount"  # or "none"
    base_env: dict[str, str] = field(default_factory=_default_base_env)
    labels: dict[str, str] = field(default_factory=dict)
    kubelet_version: str = field(default_factory=_kubelet_version)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)

    @property
    def pod_logs(self) -> Path:
        return Path(self.log_dir) if self.log_dir else self.state_dir / "logs"


def _meminfo_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1])}Ki"
    except OSError:
        pass
    return "4Gi"


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.platform()


class ProcessNode:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.kube: Kube = None  # type: ignore[assignment]  # set in run()
        self.cluster: tuple[str, bytes | None] = kubeconfig_cluster(cfg.kubeconfig)
        self.ipam = IpAllocator(cfg.pod_cidr, reserved=[cfg.host_ip])
        self.registry = ProcessRegistry(cfg.state_dir / "processes.json")
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()
        self.deleting_finished: set[str] = set()
        self.binding: set[str] = set()
        self.stopping = False
        self.ready = asyncio.Event()
        self.node_uid: str | None = None
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        self.labels = {
            "kubernetes.io/hostname": cfg.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
            "node.kubernetes.io/instance-type": "process-node",
            **cfg.labels,
        }
        cpus = str(os.cpu_count() or 1)
        self.allocatable = {
            "cpu": cpus,
            "memory": _meminfo_total(),
            "pods": "250",
            "ephemeral-storage": "100Gi",
        }
        self._arch = arch
        self._listed = {"pods": False, "pending": False}
        self._background: set[asyncio.Task[None]] = set()

    # --- entry point ---------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled; then stop every container of the node."""
        cfg = self.cfg
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        cfg.pod_logs.mkdir(parents=True, exist_ok=True)
        leftovers = ProcessRegistry.kill_leftovers(self.registry.path)
        if leftovers:
            log.info("killed processes left by a previous run", extra={"pids": [r.pid for r in leftovers]})
        self.kube = await Kube.from_kubeconfig(cfg.kubeconfig)
        runner: web.AppRunner | None = None
        tasks: list[asyncio.Task[None]] = []
        try:
            if cfg.health_port:
                runner = await self._serve_health(cfg.health_port)
            await self._register()
            tasks = [
                asyncio.create_task(self._lease_loop(), name="lease"),
                asyncio.create_task(self._node_status_loop(), name="node-status"),
                asyncio.create_task(
                    list_watch(
                        self.kube,
                        "/api/v1/pods",
                        {"fieldSelector": f"spec.nodeName={cfg.node_name}"},
                        self._on_pod_list,
                        self._on_pod_event,
                        "pods of node",
                    ),
                    name="kubelet",
                ),
                asyncio.create_task(
                    list_watch(
                        self.kube,
                        "/api/v1/pods",
                        {"fieldSelector": "spec.nodeName="},
                        self._on_pending_list,
                        self._on_pending_event,
                        "pending pods",
                    ),
                    name="scheduler",
                ),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # surfaces the failure of a loop
        finally:
            self.stopping = True
            log.info("process node stopping", extra={"pods": len(self.workers)})
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            workers = [w.task for w in self.workers.values() if w.task is not None]
            for t in workers:
                t.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if runner is not None:
                await runner.cleanup()
            await self.kube.close()
            log.info("process node stopped")

    # --- the Node object -------------------------------------------------------------------

    def _conditions(self) -> list[JSON]:
        t = st.rfc3339(st.now())
        conds = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "process node has sufficient memory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "process node has no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "process node has sufficient PID available"),
            ("Ready", "True", "KubeletReady", "process node is posting ready status"),
        ]
        return [
            {
                "type": c,
                "status": s,
                "reason": r,
                "message": m,
                "lastHeartbeatTime": t,
                "lastTransitionTime": t,
            }
            for c, s, r, m in conds
        ]

    def _node_status(self) -> JSON:
        return {
            "capacity": self.allocatable,
            "allocatable": self.allocatable,
            "conditions": self._conditions(),
            "addresses": [
                {"type": "InternalIP", "address": self.cfg.host_ip},
                {"type": "Hostname", "address": self.cfg.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},  # no kubelet API (kubectl logs)
            "nodeInfo": {
                "machineID": _read("/etc/machine-id", "process-node"),
                "systemUUID": _read("/sys/class/dmi/id/product_uuid", "process-node"),
                "bootID": _read("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": platform.release(),
                "osImage": _os_image(),
                "containerRuntimeVersion": "process://0.1.0",
                "kubeletVersion": self.cfg.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": self._arch,
            },
        }

    async def _register(self) -> None:
        name = self.cfg.node_name
        for attempt in range(60):
            try:
                existing = await self.kube.get_or_none(f"/api/v1/nodes/{name}")
                if existing is None:
                    body = {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "metadata": {"name": name, "labels": self.labels},
                        "spec": {"podCIDR": self.cfg.pod_cidr, "podCIDRs": [self.cfg.pod_cidr]},
                        "status": self._node_status(),
                    }
                    node = await self.kube.create("/api/v1/nodes", body)
                else:
                    node = await self.kube.patch(
                        f"/api/v1/nodes/{name}", {"metadata": {"labels": self.labels}}
                    )
                self.node_uid = node["metadata"]["uid"]
                await self.kube.patch(f"/api/v1/nodes/{name}/status", {"status": self._node_status()})
                await self._renew_lease()
                log.info(
                    "node registered",
                    extra={"node": name, "podCIDR": self.cfg.pod_cidr, "new": existing is None},
                )
                return
            except (KubeError, OSError) as exc:
                if attempt == 59:
                    raise
                log.warning("node registration failed; retrying", extra={"error": str(exc)[:300]})
                await asyncio.sleep(1.0)

    async def _renew_lease(self) -> None:
        name = self.cfg.node_name
        now = st.now().strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{name}"
        try:
            await self.kube.patch(
                path, {"spec": {"renewTime": now, "holderIdentity": name}}, "application/merge-patch+json"
            )
        except KubeError as exc:
            if exc.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": name, "uid": self.node_uid}
            await self.kube.create(
                f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": [owner]},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
                },
            )

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.lease_seconds)
            try:
                await self._renew_lease()
            except (KubeError, OSError, TimeoutError) as exc:
                log.warning("lease renewal failed", extra={"error": str(exc)[:300]})

    async def _node_status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.node_status_seconds)
            try:
                node = await self.kube.get_or_none(f"/api/v1/nodes/{self.cfg.node_name}")
                if node is None or node["metadata"]["uid"] != self.node_uid:
                    log.warning("node object missing: registering again")
                    await self._register()
                    continue
                await self.kube.patch(
                    f"/api/v1/nodes/{self.cfg.node_name}/status", {"status": self._node_status()}
                )
            except (KubeError, OSError, TimeoutError) as exc:
                log.warning("node status update failed", extra={"error": str(exc)[:300]})

    # --- the kubelet part: pods bound to this node ---------------------------------------

    async def _on_pod_list(self, pods: list[JSON]) -> None:
        uids = {p["metadata"]["uid"] for p in pods}
        for uid, w in list(self.workers.items()):
            if uid not in uids:
                w.vanished()
        self.finished &= uids
        for p in pods:
            self._handle_pod(p)
        if not self._listed["pods"]:
            self._listed["pods"] = True
            self._maybe_ready()

    async def _on_pod_event(self, etype: str, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        if etype == "DELETED":
            w = self.workers.get(uid)
            if w is not None:
                w.vanished()
            self.finished.discard(uid)
            self.deleting_finished.discard(uid)
            return
        self._handle_pod(pod)

    def _handle_pod(self, pod: JSON) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        w = self.workers.get(uid)
        if w is not None:
            w.update(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        if uid in self.finished or phase in st.TERMINAL_PHASES:
            self.finished.add(uid)
            if meta.get("deletionTimestamp") and uid not in self.deleting_finished:
                self.deleting_finished.add(uid)
                task = asyncio.create_task(self.delete_pod_now(meta["namespace"], meta["name"], uid))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            return
        w = PodWorker(self, pod)
        self.workers[uid] = w
        task = w.start()
        task.add_done_callback(functools.partial(self._worker_done, uid))

    def _worker_done(self, uid: str, task: asyncio.Task[None]) -> None:
        w = self.workers.pop(uid, None)
        if not self.stopping:
            self.finished.add(uid)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "pod worker failed",
                extra={"pod": w.key if w else uid},
                exc_info=task.exception(),
            )

    async def delete_pod_now(self, namespace: str, name: str, uid: str) -> None:
        """Delete with grace 0 and a UID precondition: the kubelet's last word on a pod."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        try:
            await self.kube.delete(f"/api/v1/namespaces/{namespace}/pods/{name}", body)
            log.info("pod deleted", extra={"pod": f"{namespace}/{name}", "uid": uid})
        except KubeError as exc:
            if exc.status not in (404, 409):
                log.warning(
                    "pod deletion failed", extra={"pod": f"{namespace}/{name}", "error": str(exc)[:300]}
                )

    # --- the scheduler part: pods bound to no node ------------------------------------------

    async def _on_pending_list(self, pods: list[JSON]) -> None:
        for p in pods:
            await self._maybe_bind(p)
        if not self._listed["pending"]:
            self._listed["pending"] = True
            self._maybe_ready()

    async def _on_pending_event(self, etype: str, pod: JSON) -> None:
        if etype in ("ADDED", "MODIFIED"):
            await self._maybe_bind(pod)

    async def _maybe_bind(self, pod: JSON) -> None:
        if not wants_binding(pod):
            return
        meta = pod["metadata"]
        uid = meta["uid"]
        if uid in self.binding:
            return
        ok, reason = fits_node(pod, self.cfg.node_name, self.labels)
        ns, name = meta["namespace"], meta["name"]
        if not ok:
            conds = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
            if conds.get("PodScheduled", {}).get("reason") != "Unschedulable":
                cond = {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": reason,
                    "lastProbeTime": None,
                    "lastTransitionTime": st.rfc3339(st.now()),
                }
                with contextlib.suppress(KubeError):
                    await self.kube.patch(
                        f"/api/v1/namespaces/{ns}/pods/{name}/status", {"status": {"conditions": [cond]}}
                    )
                await self.event(pod, "FailedScheduling", reason, "Warning")
            return
        self.binding.add(uid)
        try:
            await self.kube.create(
                f"/api/v1/namespaces/{ns}/pods/{name}/binding", binding(pod, self.cfg.node_name)
            )
            log.info("pod bound", extra={"pod": f"{ns}/{name}", "node": self.cfg.node_name})
            await self.event(pod, "Scheduled", f"Successfully assigned {ns}/{name} to {self.cfg.node_name}")
        except KubeError as exc:
            if exc.status not in (404, 409):
                log.warning("binding failed", extra={"pod": f"{ns}/{name}", "error": str(exc)[:300]})
        finally:
            self.binding.discard(uid)

    # --- events and health ----------------------------------------------------------------------

    async def event(self, pod: JSON, reason: str, message: str, etype: str = "Normal") -> None:
        """A core/v1 Event about the pod (best effort)."""
        meta = pod.get("metadata") or {}
        ts = st.rfc3339(st.now())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'pod')}.", "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1000],
            "type": etype,
            "source": {"component": "process-node", "host": self.cfg.node_name},
            "reportingComponent": "process-node",
            "reportingInstance": self.cfg.node_name,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        try:
            await self.kube.create(f"/api/v1/namespaces/{meta.get('namespace')}/events", body)
        except (KubeError, OSError, TimeoutError) as exc:
            log.debug("event not recorded", extra={"error": str(exc)[:200]})

    def _maybe_ready(self) -> None:
        if all(self._listed.values()) and not self.ready.is_set():
            self.ready.set()
            log.info("process node ready", extra={"node": self.cfg.node_name})

    async def _serve_health(self, port: int) -> web.AppRunner:
        async def healthz(_: web.Request) -> web.Response:
            if self.ready.is_set():
                return web.Response(text="ok")
            return web.Response(status=503, text="starting")

        async def pods(_: web.Request) -> web.Response:
            data = {
                w.key: {"uid": uid, "podIP": w.pod_ip, "phase": w.phase()} for uid, w in self.workers.items()
            }
            return web.json_response(data)

        async def metrics(_: web.Request) -> web.Response:
            phases = Counter(w.phase() for w in self.workers.values())
            for phase in ("Pending", "Running", "Succeeded", "Failed"):
                PODS.labels(phase).set(phases.get(phase, 0))
            return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/pods", pods)
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.host_ip, port, reuse_address=True)
        await site.start()
        return runner


# --- command line -----------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> NodeConfig:
    p = argparse.ArgumentParser(prog="lki-process-node", description=__doc__.split("\n")[0])
    p.add_argument(
        "--kubeconfig", default=os.environ.get("KUBECONFIG"), required=not os.environ.get("KUBECONFIG")
    )
    p.add_argument("--state-dir", required=True, help="pod dirs, tokens, the process registry")
    p.add_argument("--log-dir", help="pod logs (<ns>_<pod>_<container>.log); default <state-dir>/logs")
    p.add_argument("--node-name", default=socket.gethostname().split(".")[0] or "process-node")
    p.add_argument("--pod-cidr", default="127.0.16.0/20")
    p.add_argument("--host-ip", default="127.0.0.1")
    p.add_argument("--health-port", type=int)
    p.add_argument("--backoff-base", type=float, default=10.0, help="crash-loop back-off start (s)")
    p.add_argument("--backoff-max", type=float, default=300.0, help="crash-loop back-off cap (s)")
    p.add_argument("--pod-credentials", choices=["serviceaccount", "none"], default="serviceaccount")
    p.add_argument("--label", action="append", default=[], help="extra node label KEY=VALUE")
    p.add_argument("--env", action="append", default=[], help="extra base env KEY=VALUE for every container")
    a = p.parse_args(argv)
    base_env = _default_base_env()
    base_env.update(dict(kv.split("=", 1) for kv in a.env if "=" in kv))
    return NodeConfig(
        kubeconfig=Path(a.kubeconfig),
        state_dir=Path(a.state_dir),
        log_dir=Path(a.log_dir) if a.log_dir else None,
        node_name=a.node_name,
        pod_cidr=a.pod_cidr,
        host_ip=a.host_ip,
        health_port=a.health_port,
        backoff_base=a.backoff_base,
        backoff_max=a.backoff_max,
        pod_credentials=a.pod_credentials,
        labels=dict(kv.split("=", 1) for kv in a.label if "=" in kv),
        base_env=base_env,
    )


async def _amain(cfg: NodeConfig) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    node_task = asyncio.create_task(ProcessNode(cfg).run())
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node_task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await node_task


def main(argv: list[str] | None = None) -> None:
    setup_json_logging("process-node")
    cfg = _parse(argv)
    asyncio.run(_amain(cfg))


if __name__ == "__main__":
    main()
