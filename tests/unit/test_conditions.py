from __future__ import annotations

from ingress_operator.reconcile import set_condition


def test_transition_time_moves_only_when_the_status_changes() -> None:
    first = set_condition([], "Ready", True, "Ready", "waiting for input", 1)
    old = [{**first[0], "lastTransitionTime": "2020-01-01T00:00:00Z"}]
    same = set_condition(old, "Ready", True, "Ready", "still waiting", 2)
    assert same[0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert same[0]["message"] == "still waiting" and same[0]["observedGeneration"] == 2
    flipped = set_condition(old, "Ready", False, "InvalidSpec", "spec.url: missing", 2)
    assert flipped[0]["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    assert flipped[0]["lastTransitionTime"].endswith("Z")


def test_other_conditions_are_kept() -> None:
    both = set_condition(
        set_condition([], "Ready", True, "Ready", "", 1), "Publishing", False, "Inactive", "", 1
    )
    assert [c["type"] for c in both] == ["Ready", "Publishing"]
