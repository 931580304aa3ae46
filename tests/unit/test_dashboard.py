"""The Grafana dashboard the chart ships: valid dashboard JSON whose every query parses as PromQL
(promql-parser: Python bindings of a Rust PromQL parser), names only metrics our components export, follows
the namespace variable, and charts every metric of ours; docs/observability.md lists them all
and its PromQL examples hold."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm" / "livekit-ingress" / "dashboards" / "livekit-ingress.json"
DOC = ROOT / "docs" / "observability.md"

# Where each component defines its metrics. Imported in a fresh interpreter, they fill its
# default registry as in the components, with nothing another test registered.
COMPONENT_METRICS = (
    "ingress_operator.metrics",
    "ingress_operator.shim.app",
    "ingress_pod.frontdoor.http",
    "ingress_pod.metrics",
)
PROBE = """
import importlib, json, sys
from prometheus_client import REGISTRY
for module in sys.argv[1:]:
    importlib.import_module(module)
print(json.dumps({f.name: f.type for f in REGISTRY.collect()}))
"""

# The sample names a family of each type exposes (Prometheus' text format).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
# What Grafana puts in place of its variables before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$namespace": "livekit-ingress"}


@pytest.fixture(scope="module")
def types() -> dict[str, str]:
    """Every metric family the components export -> its type."""
    args = [sys.executable, "-c", PROBE, *COMPONENT_METRICS]
    probe = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    exported: dict[str, str] = json.loads(probe.stdout)
    return exported


@pytest.fixture(scope="module")
def families(types: dict[str, str]) -> dict[str, list[str]]:
    """Every metric family the components export -> its sample names."""
    return {name: [name + suffix for suffix in SUFFIXES[kind]] for name, kind in types.items()}


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    found: list[promql_parser.VectorSelector] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query in the dashboard."""
    return [(p["title"], t["expr"]) for p in panels(dashboard["panels"]) for t in p.get("targets", [])]


def test_the_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"] == "LiveKit Ingress"
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    namespace = variables["namespace"]
    assert namespace["type"] == "query" and namespace["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboard["panels"]):
        x, y, w, h = (panel["gridPos"][k] for k in "xywh")
        assert x >= 0 and w > 0 and x + w <= 24 and h > 0, panel["title"]
        mine = {(col, line) for col in range(x, x + w) for line in range(y, y + h)}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("timeseries", "stat") and panel["targets"], panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_every_query_parses_and_names_only_metrics_that_exist(
    dashboard: dict[str, Any], families: dict[str, list[str]]
) -> None:
    exported = {name for names in families.values() for name in names}
    for title, expr in queries(dashboard):
        found = selectors(expr)
        assert found, title
        for selector in found:
            assert selector.name in exported, f"{title}: no component exports {selector.name}"
            matchers = {m.name: m.value for m in selector.matchers.matchers}
            assert matchers.get("namespace") == GRAFANA_VARIABLES["$namespace"], f"{title}: {expr}"


def test_the_dashboard_charts_every_metric_of_ours(
    dashboard: dict[str, Any], families: dict[str, list[str]]
) -> None:
    charted = {s.name for _, expr in queries(dashboard) for s in selectors(expr)}
    ours = {name: samples for name, samples in families.items() if name.startswith("lki_")}
    assert {name for name, samples in ours.items() if not charted & set(samples)} == set()


def test_the_promql_examples_of_the_reference_name_only_metrics_that_exist(
    families: dict[str, list[str]],
) -> None:
    exported = {name for names in families.values() for name in names}
    examples = re.findall(r"```promql\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert examples
    for expr in examples:
        assert {s.name for s in selectors(expr)} <= exported, expr


def test_the_reference_lists_every_metric_of_ours(types: dict[str, str]) -> None:
    documented = set(re.findall(r"^\| `(lki_\w+)`", DOC.read_text(), re.MULTILINE))
    # By the name a query uses: a counter with _total, a histogram without its suffixes.
    suffix = {"counter": "_total", "gauge": "", "histogram": "", "info": "_info"}
    ours = {name + suffix[kind] for name, kind in types.items() if name.startswith("lki_")}
    assert documented == ours
