"""Control-plane benchmark: CreateIngress and ListIngress latency with 1, 100 and 1000
ingresses, kubectl-style create → status.ingressId, and operator/shim memory at 1000 CRs.

Runs against the stack described by the environment (`source .stack/env` after `make up`),
or starts a private local stack when LIVEKIT_URL is unset:

    python bench/control_plane.py [--levels 1,100,1000] [--samples 100]

Prints a Markdown table (the figures in docs/benchmarks.md come from it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from livekit import api

from ingress_operator.kube import LiveKitIngressResource
from local_stack.stack import running_or_private

warnings.filterwarnings("ignore", message="The HMAC key is")  # the dev secret is short


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fmt(samples: list[float]) -> str:
    return f"p50 {pct(samples, 0.5) * 1000:.1f} ms, p99 {pct(samples, 0.99) * 1000:.1f} ms"


async def timed(n: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        out.append(time.perf_counter() - start)
    return out


def rss_mb(name: str, kubeconfig: str) -> float | None:
    """RSS of the process running `name` against this stack (matched by KUBECONFIG)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except OSError:
            continue
        if name in cmdline and f"KUBECONFIG={kubeconfig}".encode() in environ:
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    return None


class Bench:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.lk = api.LiveKitAPI(env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"])
        self.ns = env["INGRESS_NAMESPACE"]
        self.http = aiohttp.ClientSession()
        self.created: list[str] = []

    async def close(self) -> None:
        await self.lk.aclose()
        await self.http.close()

    async def create(self, room: str = "bench") -> str:
        info = await self.lk.ingress.create_ingress(
            api.CreateIngressRequest(
                input_type=api.IngressInput.RTMP_INPUT, room_name=room, participant_identity="bench"
            )
        )
        return info.ingress_id

    async def populate(self, total: int) -> None:
        sem = asyncio.Semaphore(16)

        async def one() -> None:
            async with sem:
                self.created.append(await self.create())

        await asyncio.gather(*(one() for _ in range(total - len(self.created))))

    async def list_json(self) -> bytes:
        """ListIngress as the Node SDK sends it; the body unparsed (the client's JSON parsing of
        a megabyte is not the shim's time)."""
        token = api.AccessToken(self.env["LIVEKIT_API_KEY"], self.env["LIVEKIT_API_SECRET"])
        jwt = token.with_grants(api.VideoGrants(ingress_admin=True)).to_jwt()
        async with self.http.post(
            self.env["LIVEKIT_URL"] + "/twirp/livekit.Ingress/ListIngress",
            json={},
            headers={"Authorization": f"Bearer {jwt}"},
        ) as resp:
            return await resp.read()

    async def delete_all(self, ids: list[str]) -> None:
        sem = asyncio.Semaphore(16)

        async def one(ingress_id: str) -> None:
            async with sem:
                await self.lk.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=ingress_id))

        await asyncio.gather(*(one(i) for i in ids))


async def kubectl_create_to_id(env: dict[str, str], samples: int) -> list[float]:
    """Create CRs through the Kubernetes API (as kubectl does); time until status.ingressId."""
    out: list[float] = []
    ns = env["INGRESS_NAMESPACE"]
    k8s = AsyncClient(KubeConfig.from_file(env["KUBECONFIG"]), namespace=ns)
    try:
        for i in range(samples):
            name = f"bench-kubectl-{i}"
            body = {
                "apiVersion": "ingress.lkop.dev/v1alpha1",
                "kind": "LiveKitIngress",
                "metadata": {"name": name},
                "spec": {"inputType": "RTMP", "participantIdentity": "bench"},
            }
            start = time.perf_counter()
            created = await k8s.create(LiveKitIngressResource.from_dict(body))
            events = k8s.watch(
                LiveKitIngressResource,
                fields={"metadata.name": name},
                resource_version=created.metadata.resourceVersion,
                server_timeout=30,
            )
            async for _, obj in events:
                if (obj.get("status") or {}).get("ingressId"):
                    out.append(time.perf_counter() - start)
                    break
            await k8s.delete(LiveKitIngressResource, name)
    finally:
        await k8s.close()
    return out


async def apiserver_baseline(env: dict[str, str], samples: int) -> tuple[list[float], list[float]]:
    """The floor under the shim: the same CR created, and all CRs listed, with no shim between
    (a Create through the shim is a CR POST plus a Secret POST; a List is answered from memory)."""
    k8s = AsyncClient(KubeConfig.from_file(env["KUBECONFIG"]), namespace=env["INGRESS_NAMESPACE"])
    names: list[str] = []

    async def create() -> None:
        obj = await k8s.create(
            LiveKitIngressResource.from_dict(
                {
                    "apiVersion": "ingress.lkop.dev/v1alpha1",
                    "kind": "LiveKitIngress",
                    "metadata": {"generateName": "bench-raw-"},
                    "spec": {"inputType": "RTMP", "participantIdentity": "bench"},
                }
            )
        )
        names.append(obj.metadata.name)

    async def list_all() -> None:
        [o async for o in k8s.list(LiveKitIngressResource)]

    try:
        creates = await timed(samples, create)
        for name in names:
            await k8s.delete(LiveKitIngressResource, name)
        lists = await timed(min(samples, 50), list_all)
    finally:
        await k8s.close()
    return creates, lists


async def run(env: dict[str, str], levels: list[int], samples: int) -> None:
    bench = Bench(env)
    rows: list[tuple[str, str]] = []
    try:
        for level in levels:
            await bench.populate(level)
            made: list[str] = []

            async def create_one(made: list[str] = made) -> None:
                made.append(await bench.create("bench-extra"))

            creates = await timed(samples, create_one)
            await bench.delete_all(made)
            total = len(json.loads(await bench.list_json())["items"])
            lists_json = await timed(min(samples, 50), bench.list_json)
            lists_pb = await timed(
                min(samples, 50), lambda: bench.lk.ingress.list_ingress(api.ListIngressRequest())
            )
            raw_creates, raw_lists = await apiserver_baseline(env, samples)
            rows.append((f"CreateIngress with {level} ingresses", fmt(creates)))
            rows.append(("  baseline: one CR POST straight to kube-apiserver", fmt(raw_creates)))
            rows.append((f"ListIngress of all {total} (JSON)", fmt(lists_json)))
            rows.append((f"ListIngress of all {total} (protobuf)", fmt(lists_pb)))
            rows.append(("  baseline: LIST of the CRs straight from kube-apiserver", fmt(raw_lists)))
        await asyncio.sleep(5)  # let the operator settle after the burst
        kube = env["KUBECONFIG"]
        for proc in ("lki-operator", "lki-shim"):
            rss = rss_mb(proc, kube)
            rows.append((f"{proc} RSS at {levels[-1]} CRs", f"{rss:.0f} MB" if rss else "not found"))
        to_id = await kubectl_create_to_id(env, 20)
        rows.append((f"kubectl create → status.ingressId ({levels[-1]} CRs present)", fmt(to_id)))
    finally:
        await bench.delete_all(bench.created)
        await bench.close()
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="1,100,1000")
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    with running_or_private() as env:
        asyncio.run(run(env, levels, args.samples))


if __name__ == "__main__":
    main()
