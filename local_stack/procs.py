"""Process bookkeeping shared by the stack and the process node.

A process is identified by (pid, start time in clock ticks since boot) so a recycled pid
is never mistaken for ours. Every process we start leads its own session and process
group, so signalling the group reaches its children too.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _libc = None


def start_ticks(pid: int) -> int | None:
    """The process's start time (field 22 of /proc/<pid>/stat), None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[19])


def is_zombie(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return raw[raw.rindex(")") + 2 :].split()[0] in ("Z", "X")


@dataclass(frozen=True)
class ProcRef:
    pid: int
    ticks: int | None
    name: str = ""

    @classmethod
    def of(cls, pid: int, name: str = "") -> ProcRef:
        return cls(pid=pid, ticks=start_ticks(pid), name=name)

    def alive(self) -> bool:
        ticks = start_ticks(self.pid)
        if ticks is None or (self.ticks is not None and ticks != self.ticks):
            return False
        return not is_zombie(self.pid)

    def signal_group(self, sig: int) -> bool:
        """Signal the process group the process leads (or the process); False if gone."""
        if not self.alive():
            # the leader may be gone while others of its group live on
            return _killpg(self.pid, sig) if self._group_exists() else False
        return _killpg(self.pid, sig) or _kill(self.pid, sig)

    def _group_exists(self) -> bool:
        return bool(group_members(self.pid))

    def group_alive(self) -> bool:
        return self.alive() or self._group_exists()


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _kill(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of the process group."""
    out: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(entry.name))
    return out


def terminate(
    refs: Iterable[ProcRef],
    grace: float,
    reap: Callable[[], object] | None = None,
    poll: float = 0.05,
) -> list[ProcRef]:
    """SIGTERM each group, wait up to `grace` s, SIGKILL what is left. Returns the killed ones.

    `reap` is called while waiting, so the caller can collect its own exited children.
    """
    live = [r for r in refs if r.group_alive()]
    for r in live:
        r.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(r.group_alive() for r in live):
        if reap:
            reap()
        time.sleep(poll)
    killed = [r for r in live if r.group_alive()]
    for r in killed:
        r.signal_group(signal.SIGKILL)
    for _ in range(100):
        if reap:
            reap()
        if not any(r.group_alive() for r in killed):
            break
        time.sleep(poll)
    return killed


def die_with_parent() -> None:
    """For `preexec_fn`: the child gets SIGKILL when the thread that forked it exits."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ProcessRegistry:
    """A JSON file of the process groups a process node runs, so none outlive a crash of it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}

    def add(self, ref: ProcRef, **meta: Any) -> None:
        self.entries[str(ref.pid)] = {**asdict(ref), **meta}
        self._save()

    def remove(self, pid: int) -> None:
        if self.entries.pop(str(pid), None) is not None:
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries, indent=1))
        tmp.replace(self.path)

    @staticmethod
    def load(path: Path) -> list[ProcRef]:
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return []
        return [
            ProcRef(pid=int(e["pid"]), ticks=e.get("ticks"), name=e.get("name", "")) for e in data.values()
        ]

    @staticmethod
    def kill_leftovers(path: Path) -> list[ProcRef]:
        """SIGKILL the process groups a previous run left behind; empties the file."""
        leftovers = [r for r in ProcessRegistry.load(path) if r.alive()]
        for r in leftovers:
            r.signal_group(signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return leftovers
