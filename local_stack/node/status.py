"""Pod status as a kubelet reports it, built from the node's view of its containers (pure).

The process node keeps one `ContainerRecord` per container; `build_pod_status` turns the
records into the `status` the API expects (phase, conditions, container statuses, IPs).
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Pod = Mapping[str, Any]

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
TERMINAL_PHASES = frozenset({SUCCEEDED, FAILED})


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str | None) -> datetime | None:
    if not s:
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str | None = None


@dataclass(frozen=True)
class Running:
    started_at: datetime


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    finished_at: datetime
    started_at: datetime | None = None
    message: str | None = None
    signal: int | None = None
    container_id: str | None = None


ContainerState = Waiting | Running | Terminated


@dataclass
class ContainerRecord:
    """What the node knows of one container (of the spec's `containers` or `initContainers`)."""

    name: str
    image: str = ""
    state: ContainerState = field(default_factory=lambda: Waiting("ContainerCreating"))
    last_state: Terminated | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str | None = None
    sidecar: bool = False  # an init container with restartPolicy: Always


def terminated_from_returncode(
    returncode: int,
    started_at: datetime | None,
    finished_at: datetime,
    container_id: str | None = None,
    message: str | None = None,
) -> Terminated:
    """A process's exit as a container's terminated state (signal N → exit code 128+N)."""
    if returncode < 0:
        sig = -returncode
        return Terminated(
            exit_code=128 + sig,
            reason="Error",
            finished_at=finished_at,
            started_at=started_at,
            message=message or f"killed by {_signal_name(sig)}",
            signal=sig,
            container_id=container_id,
        )
    return Terminated(
        exit_code=returncode,
        reason="Completed" if returncode == 0 else "Error",
        finished_at=finished_at,
        started_at=started_at,
        message=message,
        container_id=container_id,
    )


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def should_restart(restart_policy: str, exit_code: int) -> bool:
    if restart_policy == "Always":
        return True
    if restart_policy == "OnFailure":
        return exit_code != 0
    return False


def backoff_delay(restarts_so_far: int, base: float, cap: float) -> float:
    """The kubelet's crash-loop back-off: the first restart at once, then base, 2·base, … ≤ cap."""
    if restarts_so_far <= 0:
        return 0.0
    return float(min(cap, base * (2 ** (restarts_so_far - 1))))


# --- serialisation -------------------------------------------------------------------


def state_dict(state: ContainerState | None) -> dict[str, Any]:
    if state is None:
        return {}
    if isinstance(state, Waiting):
        w: dict[str, Any] = {"reason": state.reason}
        if state.message:
            w["message"] = state.message
        return {"waiting": w}
    if isinstance(state, Running):
        return {"running": {"startedAt": rfc3339(state.started_at)}}
    t: dict[str, Any] = {
        "exitCode": state.exit_code,
        "reason": state.reason,
        "finishedAt": rfc3339(state.finished_at),
    }
    if state.started_at:
        t["startedAt"] = rfc3339(state.started_at)
    if state.message:
        t["message"] = state.message
    if state.signal is not None:
        t["signal"] = state.signal
    if state.container_id:
        t["containerID"] = state.container_id
    return {"terminated": t}


def container_status(rec: ContainerRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": rec.name,
        "image": rec.image,
        "imageID": "",
        "state": state_dict(rec.state),
        "lastState": state_dict(rec.last_state),
        "ready": rec.ready,
        "restartCount": rec.restart_count,
        "started": rec.started,
    }
    if rec.container_id:
        out["containerID"] = rec.container_id
    return out


def state_from_dict(d: Mapping[str, Any] | None) -> ContainerState | None:
    if not d:
        return None
    if d.get("running"):
        return Running(parse_time(d["running"].get("startedAt")) or now())
    if d.get("terminated"):
        t = d["terminated"]
        return Terminated(
            exit_code=int(t.get("exitCode", 0)),
            reason=t.get("reason") or "",
            finished_at=parse_time(t.get("finishedAt")) or now(),
            started_at=parse_time(t.get("startedAt")),
            message=t.get("message"),
            signal=t.get("signal"),
            container_id=t.get("containerID"),
        )
    if "waiting" in d:
        w = d["waiting"] or {}
        return Waiting(w.get("reason") or "ContainerCreating", w.get("message"))
    return None


# --- adoption after a restart of the node ---------------------------------------------


def records_for(
    pod: Pod, init: bool, lost_message: str = "the process node restarted"
) -> list[ContainerRecord]:
    """Records for the pod's containers, seeded from its current status.

    A container the status shows running is gone (the node that ran it stopped): it is
    recorded as terminated with exit code 137 and the restart policy decides what follows.
    """
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    containers = spec.get("initContainers" if init else "containers") or []
    previous = {
        s["name"]: s for s in status.get("initContainerStatuses" if init else "containerStatuses") or []
    }
    out: list[ContainerRecord] = []
    for c in containers:
        rec = ContainerRecord(
            name=c["name"],
            image=c.get("image") or "",
            sidecar=init and c.get("restartPolicy") == "Always",
        )
        prev = previous.get(c["name"])
        if prev:
            rec.restart_count = int(prev.get("restartCount") or 0)
            state = state_from_dict(prev.get("state"))
            last = state_from_dict(prev.get("lastState"))
            rec.last_state = last if isinstance(last, Terminated) else None
            if isinstance(state, Running):
                rec.state = Terminated(
                    exit_code=137,
                    reason="Error",
                    finished_at=now(),
                    started_at=state.started_at,
                    message=lost_message,
                    signal=int(signal.SIGKILL),
                    container_id=prev.get("containerID"),
                )
            elif isinstance(state, Terminated):
                rec.state = state
            elif isinstance(state, Waiting) and rec.last_state is not None:
                # crash-looping before: the last run is what counts
                rec.state = rec.last_state
                rec.last_state = None
        out.append(rec)
    return out


def was_initialized(pod: Pod, init_records: Sequence[ContainerRecord]) -> bool:
    """Init containers all completed before (so they are not run again)."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Initialized" and cond.get("status") == "True":
            return True
    return all(
        r.sidecar or (isinstance(r.state, Terminated) and r.state.exit_code == 0) for r in init_records
    )


# --- phase and conditions ----------------------------------------------------------------


def pod_phase(
    init: Sequence[ContainerRecord],
    main: Sequence[ContainerRecord],
    restart_policy: str,
    initialized: bool,
    terminal: bool = False,
) -> str:
    """The kubelet's getPhase for the records; `terminal`: the pod is being shut down for good."""
    if not initialized:
        for r in init:
            failed = isinstance(r.state, Terminated) and r.state.exit_code != 0
            if failed and not r.sidecar and (restart_policy == "Never" or terminal):
                return FAILED
        return FAILED if terminal else PENDING
    running = waiting = stopped = succeeded = 0
    for r in main:
        if isinstance(r.state, Running):
            running += 1
        elif isinstance(r.state, Terminated):
            stopped += 1
            succeeded += r.state.exit_code == 0
        elif r.last_state is not None:
            stopped += 1
            succeeded += r.last_state.exit_code == 0
        else:
            waiting += 1
    if terminal:
        if running or waiting:
            return FAILED
        return SUCCEEDED if stopped == succeeded and stopped > 0 else FAILED
    if waiting:
        return PENDING
    if running:
        return RUNNING
    if stopped:
        if restart_policy == "Always":
            return RUNNING
        if stopped == succeeded:
            return SUCCEEDED
        if restart_policy == "Never":
            return FAILED
        return RUNNING
    return PENDING


def _cond(
    ctype: str,
    ok: bool,
    reason: str | None,
    message: str | None,
    existing: Mapping[str, Mapping[str, Any]],
    at: datetime,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    prev = existing.get(ctype)
    if prev and prev.get("status") == status and prev.get("lastTransitionTime"):
        transition = prev["lastTransitionTime"]
    else:
        transition = rfc3339(at)
    # reason/message are always sent (null deletes): a strategic merge patch merges
    # conditions by type and would otherwise keep a stale reason
    return {
        "type": ctype,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    }


def build_conditions(
    pod: Pod,
    phase: str,
    init: Sequence[ContainerRecord],
    main: Sequence[ContainerRecord],
    initialized: bool,
    sandbox_ready: bool,
    at: datetime,
) -> list[dict[str, Any]]:
    """PodReadyToStartContainers, Initialized, ContainersReady, Ready (PodScheduled is kept)."""
    existing = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or [] if "type" in c}
    completed = phase in TERMINAL_PHASES
    conds = [_cond("PodReadyToStartContainers", sandbox_ready, None, None, existing, at)]

    if initialized:
        conds.append(_cond("Initialized", True, None, None, existing, at))
    else:
        pending = [r.name for r in init if not _init_done(r)]
        conds.append(
            _cond(
                "Initialized",
                False,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending)}]",
                existing,
                at,
            )
        )

    unready = [r.name for r in [*[i for i in init if i.sidecar], *main] if not r.ready]
    containers_ready: tuple[bool, str | None, str | None]
    if completed:
        containers_ready = (False, "PodCompleted", None)
    elif not initialized:
        containers_ready = (
            False,
            "ContainersNotReady",
            f"containers with unready status: [{' '.join(r.name for r in main)}]",
        )
    elif unready:
        containers_ready = (
            False,
            "ContainersNotReady",
            f"containers with unready status: [{' '.join(unready)}]",
        )
    else:
        containers_ready = (True, None, None)
    conds.append(
        _cond("ContainersReady", containers_ready[0], containers_ready[1], containers_ready[2], existing, at)
    )

    ready = containers_ready
    if ready[0]:
        for gate in (pod.get("spec") or {}).get("readinessGates") or []:
            gtype = gate.get("conditionType")
            gcond = existing.get(gtype)
            if gcond is None:
                ready = (
                    False,
                    "ReadinessGatesNotReady",
                    f'corresponding condition of pod readiness gate "{gtype}" does not exist.',
                )
                break
            if gcond.get("status") != "True":
                ready = (
                    False,
                    "ReadinessGatesNotReady",
                    f'the status of pod readiness gate "{gtype}" is not "True", but {gcond.get("status")}',
                )
                break
    conds.append(_cond("Ready", ready[0], ready[1], ready[2], existing, at))
    return conds


def _init_done(r: ContainerRecord) -> bool:
    if r.sidecar:
        return r.started
    return isinstance(r.state, Terminated) and r.state.exit_code == 0


@dataclass(frozen=True)
class PodView:
    """The node's view of one pod, from which its status is built."""

    init: Sequence[ContainerRecord]
    main: Sequence[ContainerRecord]
    restart_policy: str
    initialized: bool
    host_ip: str
    pod_ip: str | None
    start_time: datetime | None
    sandbox_ready: bool
    terminal: bool = False  # being shut down for good (deleted, or the pod ended)
    reason: str | None = None
    message: str | None = None


def build_pod_status(pod: Pod, view: PodView, at: datetime | None = None) -> dict[str, Any]:
    at = at or now()
    phase = pod_phase(view.init, view.main, view.restart_policy, view.initialized, view.terminal)
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": build_conditions(
            pod, phase, view.init, view.main, view.initialized, view.sandbox_ready, at
        ),
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "containerStatuses": [container_status(r) for r in view.main],
    }
    if view.init:
        status["initContainerStatuses"] = [container_status(r) for r in view.init]
    if view.pod_ip:
        status["podIP"] = view.pod_ip
        status["podIPs"] = [{"ip": view.pod_ip}]
    if view.start_time:
        status["startTime"] = rfc3339(view.start_time)
    if view.reason:
        status["reason"] = view.reason
    if view.message:
        status["message"] = view.message
    return status
