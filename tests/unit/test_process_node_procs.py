"""Process bookkeeping of the process node and the stack: identity, group signals, leftovers."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_stack.procs import ProcessRegistry, ProcRef, group_members, terminate
from local_stack.tools import parse_env_file


@pytest.fixture
def group() -> Iterator[subprocess.Popen[bytes]]:
    """A session leader with a child: `sh` waiting on a `sleep`."""
    p = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while len(group_members(p.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        yield p
    finally:
        p.kill()
        p.wait()


def test_proc_ref_identity(group: subprocess.Popen[bytes]) -> None:
    ref = ProcRef.of(group.pid)
    assert ref.alive() and ref.ticks is not None
    assert not ProcRef(pid=group.pid, ticks=(ref.ticks or 0) + 1).alive()  # a recycled pid
    assert len(group_members(group.pid)) == 2


def test_terminate_reaches_the_whole_group(group: subprocess.Popen[bytes]) -> None:
    ref = ProcRef.of(group.pid)
    killed = terminate([ref], grace=5, reap=group.poll)
    assert killed == []  # SIGTERM was enough
    assert group.poll() is not None and not group_members(group.pid)


def test_terminate_kills_what_ignores_sigterm() -> None:
    p = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while len(group_members(p.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # the trap is set once the loop runs
        ref = ProcRef.of(p.pid)
        t0 = time.monotonic()
        killed = terminate([ref], grace=0.5, reap=p.poll)
        assert killed == [ref] and time.monotonic() - t0 >= 0.5
        assert not ref.group_alive()
    finally:
        p.kill()
        p.wait()


def test_registry_kills_leftovers(group: subprocess.Popen[bytes], tmp_path: Path) -> None:
    reg = ProcessRegistry(tmp_path / "processes.json")
    reg.add(ProcRef.of(group.pid), pod="ns/p")
    reg.add(ProcRef(pid=os.getpid(), ticks=1), pod="ns/recycled")  # a recycled pid: left alone
    leftovers = ProcessRegistry.kill_leftovers(reg.path)
    assert [r.pid for r in leftovers] == [group.pid]
    group.wait(timeout=5)
    assert not reg.path.exists()
    assert ProcessRegistry.kill_leftovers(reg.path) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB=two\n", {"A": "1", "B": "two"}),
        ("# comment\n\nexport C='x y'\nD=\"q\"\n", {"C": "x y", "D": "q"}),
        ("not a pair\n1BAD=x\nE=a=b\n", {"E": "a=b"}),
    ],
)
def test_parse_env_file(text: str, expected: dict[str, str]) -> None:
    assert parse_env_file(text) == expected
