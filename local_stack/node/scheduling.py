"""Whether a pending Pod may be bound to the process node (the scheduler's filters, reduced).

Checked: schedulerName, schedulingGates, nodeName, nodeSelector and required node
affinity (matchExpressions and matchFields on metadata.name). Not checked: resources,
taints and tolerations, pod (anti-)affinity, topology spread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Pod = Mapping[str, Any]
SCHEDULER_NAME = "default-scheduler"


def wants_binding(pod: Pod) -> bool:
    """An unbound, undeleted pod for the default scheduler without scheduling gates."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    return (
        not spec.get("nodeName")
        and not meta.get("deletionTimestamp")
        and (spec.get("schedulerName") or SCHEDULER_NAME) == SCHEDULER_NAME
        and not spec.get("schedulingGates")
        and status.get("phase", "Pending") == "Pending"
    )


def _match_expression(expr: Mapping[str, Any], values: Mapping[str, str]) -> bool:
    key, op = expr.get("key", ""), expr.get("operator", "")
    want = [str(v) for v in expr.get("values") or []]
    have = values.get(key)
    if op == "In":
        return have is not None and have in want
    if op == "NotIn":
        return have is None or have not in want
    if op == "Exists":
        return have is not None
    if op == "DoesNotExist":
        return have is None
    if op in ("Gt", "Lt"):
        try:
            h, w = int(have or ""), int(want[0])
        except (ValueError, IndexError):
            return False
        return h > w if op == "Gt" else h < w
    return False


def fits_node(pod: Pod, node_name: str, node_labels: Mapping[str, str]) -> tuple[bool, str]:
    """(fits, reason if not) for this node."""
    spec = pod.get("spec") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if node_labels.get(key) != value:
            return False, "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if terms:
        fields = {"metadata.name": node_name}
        ok = any(
            all(_match_expression(e, node_labels) for e in t.get("matchExpressions") or [])
            and all(_match_expression(e, fields) for e in t.get("matchFields") or [])
            for t in terms
        )
        if not ok:
            return False, "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    return True, ""


def binding(pod: Pod, node_name: str) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
    }
