"""Observability end to end: while ffmpeg pushes RTMP, the session shows in the /metrics of the
operator, the shim, the front door and its media pod, and in their JSON logs under its ingress
id; once the push ends, the gauges go back."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingress_operator.sessions import MEDIA_PORT, RESOURCE_LABEL
from local_stack.node.kube import Kube
from local_stack.stack import Stack
from tests.e2e.conftest import S, eventually
from tests.e2e.media import push

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@dataclass(frozen=True)
class Scrape:
    """One scrape of a /metrics endpoint: its samples as (name, labels, value)."""

    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels` (0 when none)."""
        return sum(v for n, ls, v in self.samples if n == name and labels.items() <= ls.items())

    def labels_of(self, name: str) -> list[dict[str, str]]:
        return [ls for n, ls, _ in self.samples if n == name]


async def scrape(url: str) -> Scrape:
    async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
        assert resp.status == 200, (url, resp.status)
        text = await resp.text()
    families = text_string_to_metric_families(text)
    return Scrape([(s.name, s.labels, s.value) for family in families for s in family.samples])


# Lines of a log that are not ours: the local stack's banner at each start, and OpenH264 (the
# rtc SDK's encoder), which writes its warnings to stderr itself.
FOREIGN = ("===", "[OpenH264]")


def json_lines(path: Path) -> list[dict[str, Any]]:
    """A component's log: every line of ours must be one JSON object."""
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip() and not line.startswith(FOREIGN)]


async def test_a_live_rtmp_session_shows_in_every_components_metrics_and_logs(
    stack: Stack, make_ingress: Any, kube: Kube
) -> None:
    urls = {
        "operator": f"http://127.0.0.1:{stack.ports.operator_metrics}/metrics",
        "shim": f"http://127.0.0.1:{stack.ports.shim}/metrics",
        "frontdoor": f"http://127.0.0.1:{stack.ports.whip}/metrics",
    }
    before = {component: await scrape(url) for component, url in urls.items()}
    rtmp = {"input_type": "RTMP"}
    created = {"call": "CreateIngress", "code": "ok"}

    ingress = await make_ingress(identity="metered")
    ingress_id = ingress.info.ingress_id
    encoder = await push(ingress.push_url, seconds=14, size="640x360")
    await ingress.state_is(S.ENDPOINT_PUBLISHING, within=30)
    pod = await ingress.media_pod(kube)
    urls["media"] = f"http://{pod['status']['podIP']}:{MEDIA_PORT}/metrics"

    live = {component: await scrape(url) for component, url in urls.items()}
    for component, now in live.items():  # CPU and memory of every component, and which it is
        assert now.value("process_cpu_seconds_total") > 0, component
        assert now.value("process_resident_memory_bytes") > 0, component
        assert [ls["component"] for ls in now.labels_of("lki_build_info")] == [component]
    door = live["frontdoor"].value("lki_frontdoor_sessions", **rtmp)
    assert door == before["frontdoor"].value("lki_frontdoor_sessions", **rtmp) + 1
    calls = live["shim"].value("lki_shim_request_seconds_count", **created)
    assert calls >= before["shim"].value("lki_shim_request_seconds_count", **created) + 1
    assert live["media"].labels_of("lki_media_info") == [
        {"ingress_id": ingress_id, "resource_id": pod["metadata"]["labels"][RESOURCE_LABEL], **rtmp}
    ]
    assert live["media"].value("lki_media_session_state", state="ENDPOINT_PUBLISHING") == 1

    async def operator_sees_it() -> None:
        now = await scrape(urls["operator"])
        assert now.value("lki_ingresses", state="ENDPOINT_PUBLISHING") >= 1
        assert now.value("lki_sessions", **rtmp) >= before["operator"].value("lki_sessions", **rtmp) + 1

    await eventually(operator_sees_it, within=10, interval=0.5)

    async def input_measured() -> Scrape:  # the pod measures its input every 5 s
        now = await scrape(urls["media"])
        assert now.value("lki_media_input_bitrate_bps", kind="video") > 0
        assert now.value("lki_media_input_bitrate_bps", kind="audio") > 0
        return now

    first = await eventually(input_measured, within=15, interval=0.5)
    await asyncio.sleep(1)
    second = await scrape(urls["media"])
    published = "lki_media_frames_published_total"
    for kind in ("video", "audio"):
        assert second.value(published, kind=kind) > first.value(published, kind=kind), kind

    code, err = await encoder.wait(within=30)
    assert code == 0, err
    await ingress.state_is(S.ENDPOINT_INACTIVE, within=30)

    async def gauges_back() -> None:
        door = await scrape(urls["frontdoor"])
        assert door.value("lki_frontdoor_sessions", **rtmp) == before["frontdoor"].value(
            "lki_frontdoor_sessions", **rtmp
        )
        operator = await scrape(urls["operator"])
        assert operator.value("lki_sessions", **rtmp) == before["operator"].value("lki_sessions", **rtmp)

    await eventually(gauges_back, within=15, interval=0.5)

    # Every component logs JSON lines, and what it did for this ingress carries its id.
    media_log = stack.pod_log_path(pod["metadata"]["namespace"], pod["metadata"]["name"], "media")
    for log in (*(stack.log_path(c) for c in ("operator", "shim", "frontdoor")), media_log):
        mine = [e for e in json_lines(log) if e.get("ingress_id") == ingress_id]
        assert mine, f"no line of {log.name} names {ingress_id}"
    media_events = json_lines(media_log)
    joined = next(i for i, e in enumerate(media_events) if e["msg"] == "joined room")
    assert all(e.get("ingress_id") == ingress_id for e in media_events[joined:])
