"""The checked-in CRD is the one the models generate."""

from __future__ import annotations

from pathlib import Path

from ingress_operator import crd

CRD_FILE = Path(__file__).parents[2] / "crds" / "livekitingresses.yaml"


def test_checked_in_crd_equals_the_generated_one() -> None:
    assert CRD_FILE.read_text() == crd.render(), (
        "run: python -m ingress_operator.crd > crds/livekitingresses.yaml"
    )


def test_no_defaults_in_the_schema_so_nothing_is_written_back_into_specs() -> None:
    assert "default:" not in crd.render()
