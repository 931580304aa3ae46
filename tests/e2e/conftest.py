"""Clients of the local stack for end-to-end tests: kubectl, the Kubernetes API, LiveKit's API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from livekit import api

T = TypeVar("T")

pytestmark = pytest.mark.e2e


async def eventually(check: Callable[[], Awaitable[T]], within: float = 15, interval: float = 0.1) -> T:
    """`check()`'s value once it stops raising AssertionError, within `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


async def wait_for(check: Callable[[], Awaitable[T | None]], what: str, within: float = 30.0) -> T:
    """`check()`'s first truthy value, polled every 0.2 s for at most `within` seconds."""

    async def truthy() -> T:
        value = await check()
        assert value, f"waiting for {what}; last: {value!r}"
        return value

    return await eventually(truthy, within=within, interval=0.2)


class Kubectl:
    """The real kubectl, against the stack's API server, in the ingress namespace."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}
        self.namespace = env["INGRESS_NAMESPACE"]

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["kubectl", "-n", self.namespace, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        if check and proc.returncode:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def apply(self, manifest: dict[str, Any] | str, check: bool = True) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.run("apply", "-f", "-", stdin=text, check=check)

    def get(self, kind: str, name: str = "") -> dict[str, Any]:
        """One object as JSON; `kind` may be `kind/name` (as `kubectl get -o name` prints)."""
        args = [kind, name] if name else [kind]
        out: dict[str, Any] = json.loads(self.run("get", *args, "-o", "json").stdout)
        return out


@pytest.fixture(scope="session")
def stack_env(stack: Any) -> dict[str, str]:
    env: dict[str, str] = dict(stack.env)
    return env


@pytest.fixture(scope="session")
def kubectl(stack_env: dict[str, str]) -> Kubectl:
    return Kubectl(stack_env)


@pytest.fixture(scope="session")
async def lkapi(stack_env: dict[str, str]) -> AsyncIterator[api.LiveKitAPI]:
    """LiveKit's Python server SDK pointed at the shim (LIVEKIT_URL)."""
    lk = api.LiveKitAPI(
        stack_env["LIVEKIT_URL"], stack_env["LIVEKIT_API_KEY"], stack_env["LIVEKIT_API_SECRET"]
    )
    yield lk
    await lk.aclose()


def lki(name: str, **spec: Any) -> dict[str, Any]:
    """A LiveKitIngress manifest."""
    return {
        "apiVersion": "ingress.lkop.dev/v1alpha1",
        "kind": "LiveKitIngress",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture(scope="session", autouse=True)
def no_tracebacks_in_the_control_plane(stack: Any) -> Iterator[None]:
    """Whatever the tests did, the operator and the shim never logged a traceback."""
    yield
    for component in ("operator", "shim"):
        log = stack.log_path(component).read_text(errors="replace")
        assert "Traceback" not in log, f"{component} logged a traceback: see {stack.log_path(component)}"
