"""Pod status as the process node reports it (pure functions), table-driven."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from local_stack.node.status import (
    ContainerRecord,
    PodView,
    Running,
    Terminated,
    Waiting,
    backoff_delay,
    build_conditions,
    build_pod_status,
    container_status,
    pod_phase,
    records_for,
    should_restart,
    state_dict,
    terminated_from_returncode,
    was_initialized,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = datetime(2026, 1, 2, 3, 4, 9, tzinfo=UTC)


def running(name: str = "c", ready: bool = True) -> ContainerRecord:
    return ContainerRecord(name=name, state=Running(T0), ready=ready, started=True)


def exited(code: int, name: str = "c") -> ContainerRecord:
    return ContainerRecord(name=name, state=Terminated(code, "Completed" if code == 0 else "Error", T1, T0))


def waiting(name: str = "c", last: int | None = None) -> ContainerRecord:
    last_state = None if last is None else Terminated(last, "Error", T1, T0)
    return ContainerRecord(
        name=name,
        state=Waiting("CrashLoopBackOff" if last_state else "ContainerCreating"),
        last_state=last_state,
    )


@pytest.mark.parametrize(
    ("main", "policy", "expected"),
    [
        ([waiting()], "Always", "Pending"),
        ([running()], "Always", "Running"),
        ([running(), waiting("d")], "Always", "Pending"),
        ([running(), exited(0, "d")], "Never", "Running"),
        ([exited(0)], "Never", "Succeeded"),
        ([exited(1)], "Never", "Failed"),
        ([exited(0), exited(1, "d")], "Never", "Failed"),
        ([exited(0)], "OnFailure", "Succeeded"),
        ([exited(1)], "OnFailure", "Running"),
        ([exited(0)], "Always", "Running"),
        ([waiting(last=1)], "Always", "Running"),
        ([waiting(last=1)], "OnFailure", "Running"),
    ],
)
def test_pod_phase(main: list[ContainerRecord], policy: str, expected: str) -> None:
    assert pod_phase([], main, policy, initialized=True) == expected


@pytest.mark.parametrize(
    ("main", "expected"),
    [
        ([exited(0)], "Succeeded"),
        ([exited(143)], "Failed"),
        ([exited(0), exited(137, "d")], "Failed"),
        ([running()], "Failed"),
    ],
)
def test_pod_phase_when_terminal_ignores_restart_policy(main: list[ContainerRecord], expected: str) -> None:
    assert pod_phase([], main, "Always", initialized=True, terminal=True) == expected


@pytest.mark.parametrize(
    ("init", "policy", "expected"),
    [
        ([waiting("i")], "Always", "Pending"),
        ([exited(1, "i")], "Always", "Pending"),
        ([exited(1, "i")], "OnFailure", "Pending"),
        ([exited(1, "i")], "Never", "Failed"),
    ],
)
def test_pod_phase_during_init(init: list[ContainerRecord], policy: str, expected: str) -> None:
    assert pod_phase(init, [waiting()], policy, initialized=False) == expected


@pytest.mark.parametrize(
    ("returncode", "exit_code", "reason", "sig"),
    [(0, 0, "Completed", None), (3, 3, "Error", None), (-15, 143, "Error", 15), (-9, 137, "Error", 9)],
)
def test_terminated_from_returncode(returncode: int, exit_code: int, reason: str, sig: int | None) -> None:
    t = terminated_from_returncode(returncode, T0, T1, "process://1")
    assert (t.exit_code, t.reason, t.signal) == (exit_code, reason, sig)
    if sig:
        assert t.message and "SIG" in t.message


@pytest.mark.parametrize(
    ("policy", "code", "expected"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 2, True),
        ("Never", 1, False),
    ],
)
def test_should_restart(policy: str, code: int, expected: bool) -> None:
    assert should_restart(policy, code) is expected


@pytest.mark.parametrize(
    ("n", "expected"), [(0, 0.0), (1, 10.0), (2, 20.0), (3, 40.0), (5, 160.0), (6, 300.0), (20, 300.0)]
)
def test_backoff_delay(n: int, expected: float) -> None:
    assert backoff_delay(n, 10.0, 300.0) == expected


def test_state_dicts() -> None:
    assert state_dict(Waiting("ContainerCreating")) == {"waiting": {"reason": "ContainerCreating"}}
    assert state_dict(Running(T0)) == {"running": {"startedAt": "2026-01-02T03:04:05Z"}}
    assert state_dict(Terminated(1, "Error", T1, T0, container_id="process://9")) == {
        "terminated": {
            "exitCode": 1,
            "reason": "Error",
            "finishedAt": "2026-01-02T03:04:09Z",
            "startedAt": "2026-01-02T03:04:05Z",
            "containerID": "process://9",
        }
    }
    assert state_dict(None) == {}


def test_container_status_shape() -> None:
    rec = ContainerRecord(
        name="c",
        image="img",
        state=Running(T0),
        restart_count=2,
        ready=True,
        started=True,
        container_id="process://5",
    )
    s = container_status(rec)
    assert s == {
        "name": "c",
        "image": "img",
        "imageID": "",
        "state": {"running": {"startedAt": "2026-01-02T03:04:05Z"}},
        "lastState": {},
        "ready": True,
        "restartCount": 2,
        "started": True,
        "containerID": "process://5",
    }


def _conds(conds: list[dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
    return {c["type"]: (c["status"], c.get("reason")) for c in conds}


@pytest.mark.parametrize(
    ("main", "phase", "initialized", "expected"),
    [
        (
            [running(ready=True)],
            "Running",
            True,
            {"ContainersReady": ("True", None), "Ready": ("True", None), "Initialized": ("True", None)},
        ),
        (
            [running(ready=False)],
            "Running",
            True,
            {"ContainersReady": ("False", "ContainersNotReady"), "Ready": ("False", "ContainersNotReady")},
        ),
        (
            [exited(0)],
            "Succeeded",
            True,
            {"ContainersReady": ("False", "PodCompleted"), "Ready": ("False", "PodCompleted")},
        ),
        (
            [waiting()],
            "Pending",
            False,
            {"Initialized": ("False", "ContainersNotInitialized"), "Ready": ("False", "ContainersNotReady")},
        ),
    ],
)
def test_build_conditions(
    main: list[ContainerRecord], phase: str, initialized: bool, expected: dict[str, tuple[str, str | None]]
) -> None:
    got = _conds(build_conditions({}, phase, [waiting("i")], main, initialized, True, T0))
    for ctype, value in expected.items():
        assert got[ctype] == value, ctype


def test_conditions_keep_transition_time_while_unchanged_and_null_stale_reasons() -> None:
    pod = {
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}]
        }
    }
    conds = {c["type"]: c for c in build_conditions(pod, "Running", [], [running()], True, True, T0)}
    assert conds["Ready"]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert conds["Ready"]["reason"] is None and conds["Ready"]["message"] is None
    conds = {
        c["type"]: c for c in build_conditions(pod, "Running", [], [running(ready=False)], True, True, T0)
    }
    assert conds["Ready"]["lastTransitionTime"] == "2026-01-02T03:04:05Z"


@pytest.mark.parametrize(
    ("gated", "conditions", "expected"),
    [
        (False, [], ("True", None)),
        (True, [{"type": "example.com/lb", "status": "True"}], ("True", None)),
        (True, [{"type": "example.com/lb", "status": "False"}], ("False", "ReadinessGatesNotReady")),
        (True, [], ("False", "ReadinessGatesNotReady")),
    ],
)
def test_readiness_gates(
    gated: bool, conditions: list[dict[str, str]], expected: tuple[str, str | None]
) -> None:
    spec = {"readinessGates": [{"conditionType": "example.com/lb"}]} if gated else {}
    pod = {"spec": spec, "status": {"conditions": conditions}}
    got = _conds(build_conditions(pod, "Running", [], [running()], True, True, T0))
    assert got["Ready"] == expected


def test_build_pod_status() -> None:
    view = PodView(
        init=[exited(0, "i")],
        main=[running()],
        restart_policy="Always",
        initialized=True,
        host_ip="127.0.0.1",
        pod_ip="127.0.16.3",
        start_time=T0,
        sandbox_ready=True,
    )
    s = build_pod_status({}, view, T0)
    assert s["phase"] == "Running"
    assert s["podIP"] == "127.0.16.3" and s["podIPs"] == [{"ip": "127.0.16.3"}]
    assert s["hostIP"] == "127.0.0.1" and s["hostIPs"] == [{"ip": "127.0.0.1"}]
    assert s["startTime"] == "2026-01-02T03:04:05Z"
    assert [c["name"] for c in s["initContainerStatuses"]] == ["i"]
    assert [c["name"] for c in s["containerStatuses"]] == ["c"]
    assert {c["type"] for c in s["conditions"]} == {
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    }


def _pod_with_statuses(statuses: list[dict[str, Any]], init: bool = False) -> dict[str, Any]:
    key = "initContainers" if init else "containers"
    skey = "initContainerStatuses" if init else "containerStatuses"
    return {
        "spec": {key: [{"name": s["name"], "image": "img"} for s in statuses]},
        "status": {skey: statuses},
    }


@pytest.mark.parametrize(
    ("prev", "expect_state", "expect_exit", "restarts"),
    [
        (
            {"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}, "restartCount": 0},
            Waiting,
            None,
            0,
        ),
        (
            {"name": "c", "state": {"running": {"startedAt": "2026-01-02T03:04:05Z"}}, "restartCount": 4},
            Terminated,
            137,
            4,
        ),
        (
            {
                "name": "c",
                "state": {
                    "terminated": {"exitCode": 2, "reason": "Error", "finishedAt": "2026-01-02T03:04:09Z"}
                },
                "restartCount": 1,
            },
            Terminated,
            2,
            1,
        ),
        (
            {
                "name": "c",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {
                    "terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2026-01-02T03:04:09Z"}
                },
                "restartCount": 3,
            },
            Terminated,
            1,
            3,
        ),
    ],
)
def test_records_for_adopts_previous_statuses(
    prev: dict[str, Any], expect_state: type, expect_exit: int | None, restarts: int
) -> None:
    (rec,) = records_for(_pod_with_statuses([prev]), init=False)
    assert isinstance(rec.state, expect_state)
    assert rec.restart_count == restarts
    if expect_exit is not None:
        assert isinstance(rec.state, Terminated) and rec.state.exit_code == expect_exit


def test_records_for_fresh_pod_and_sidecars() -> None:
    pod = {
        "spec": {
            "initContainers": [
                {"name": "side", "image": "x", "restartPolicy": "Always"},
                {"name": "i", "image": "x"},
            ],
            "containers": [{"name": "c", "image": "x"}],
        }
    }
    init = records_for(pod, init=True)
    assert [(r.name, r.sidecar) for r in init] == [("side", True), ("i", False)]
    assert not was_initialized(pod, init)
    main = records_for(pod, init=False)
    assert isinstance(main[0].state, Waiting) and main[0].restart_count == 0


def test_was_initialized_by_condition_or_completed_init_containers() -> None:
    assert was_initialized(
        {"status": {"conditions": [{"type": "Initialized", "status": "True"}]}}, [waiting("i")]
    )
    assert was_initialized({}, [exited(0, "i")])
    assert not was_initialized({}, [exited(1, "i")])
    assert was_initialized({}, [])
