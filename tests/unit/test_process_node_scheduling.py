"""The process node's scheduler filters (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from local_stack.node.scheduling import binding, fits_node, wants_binding

LABELS = {"kubernetes.io/hostname": "process-node", "kubernetes.io/os": "linux", "zone": "a", "gen": "5"}


def pod(spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", **meta},
        "spec": {"containers": [], **(spec or {})},
        "status": {"phase": "Pending"},
    }


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (pod(), True),
        (pod({"schedulerName": "default-scheduler"}), True),
        (pod({"schedulerName": "other"}), False),
        (pod({"nodeName": "n1"}), False),
        (pod({"schedulingGates": [{"name": "wait"}]}), False),
        (pod(deletionTimestamp="2026-01-01T00:00:00Z"), False),
    ],
)
def test_wants_binding(p: dict[str, Any], expected: bool) -> None:
    assert wants_binding(p) is expected


def affinity(*exprs: dict[str, Any], fields: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    term: dict[str, Any] = {"matchExpressions": list(exprs)}
    if fields:
        term["matchFields"] = fields
    return {
        "affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
        }
    }


@pytest.mark.parametrize(
    ("spec", "fits"),
    [
        ({}, True),
        ({"nodeSelector": {"zone": "a"}}, True),
        ({"nodeSelector": {"zone": "b"}}, False),
        ({"nodeSelector": {"missing": "x"}}, False),
        (affinity({"key": "zone", "operator": "In", "values": ["a", "b"]}), True),
        (affinity({"key": "zone", "operator": "NotIn", "values": ["a"]}), False),
        (affinity({"key": "zone", "operator": "Exists"}), True),
        (affinity({"key": "gpu", "operator": "DoesNotExist"}), True),
        (affinity({"key": "gen", "operator": "Gt", "values": ["4"]}), True),
        (affinity({"key": "gen", "operator": "Lt", "values": ["4"]}), False),
        (affinity(fields=[{"key": "metadata.name", "operator": "In", "values": ["process-node"]}]), True),
        (affinity(fields=[{"key": "metadata.name", "operator": "In", "values": ["other"]}]), False),
    ],
)
def test_fits_node(spec: dict[str, Any], fits: bool) -> None:
    ok, reason = fits_node(pod(spec), "process-node", LABELS)
    assert ok is fits
    assert bool(reason) is not fits


def test_binding_targets_the_node_with_a_uid_precondition() -> None:
    b = binding(pod(), "process-node")
    assert b["target"] == {"apiVersion": "v1", "kind": "Node", "name": "process-node"}
    assert b["metadata"] == {"name": "p", "namespace": "ns", "uid": "u"}
