"""Test-wide fixtures: the local stack (session-scoped) and its debugging aids.

The `stack` fixture starts a `local_stack.Stack` in a tmp dir on a port slot of its own
(claimed with a lock, so it never clashes with a `make up` stack or another test run) and
stops it at the end. Tests under tests/e2e/ are marked `e2e`. When a test that used the
stack fails, the tail of every component's log is attached to its report.

Environment knobs:
  LKI_TEST_CONTROL_PLANE=0   start the stack without the operator and the shim
  LKI_TEST_KEEP_STACK=1      leave the stack running after the session (prints its dir)
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from local_stack.node.kube import Kube
from local_stack.stack import SlotLock, Stack

_STACK: Stack | None = None
_STARTUP: dict[str, float] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if f"{os.sep}e2e{os.sep}" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The local stack: etcd, kube-apiserver, kube-controller-manager, livekit-server,
    the process node, the operator and the shim (see docs/local-stack.md)."""
    global _STACK
    root = tmp_path_factory.mktemp("stack")
    lock = SlotLock.claim(root)
    s = Stack(
        root,
        lock.slot,
        control_plane=os.environ.get("LKI_TEST_CONTROL_PLANE", "1") != "0",
        backoff=(1.0, 10.0),  # quick crash-loop back-off: tests wait for restarts
        log=lambda msg: None,
    )
    t0 = time.monotonic()
    try:
        s.start()
    except BaseException:
        s.stop()
        lock.release()
        raise
    _STARTUP.update(s.startup_seconds, wall=round(time.monotonic() - t0, 2))
    _STACK = s
    try:
        yield s
    finally:
        _STACK = None
        if os.environ.get("LKI_TEST_KEEP_STACK") == "1":
            print(f"\nstack left running in {root} (lki-stack --dir {root} down)")
        else:
            s.stop()
        lock.release()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kube(stack: Stack) -> AsyncIterator[Kube]:
    """A JSON client of the stack's API server (admin): plain dicts, see local_stack.node.kube."""
    k = await Kube.from_kubeconfig(stack.kubeconfig)
    try:
        yield k
    finally:
        await k.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _STACK is not None and "stack" in getattr(item, "fixturenames", ()):
        try:
            report.sections.append(("local stack logs (tail)", _STACK.tail_logs(lines=25)))
        except OSError as exc:  # pragma: no cover - best effort
            report.sections.append(("local stack logs", f"unavailable: {exc}"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _STARTUP:
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in _STARTUP.items())
        terminalreporter.write_line(f"local stack startup: {parts}")
