from __future__ import annotations

from ingress_operator import ids


def test_ids_and_keys_look_like_livekits() -> None:
    made = {ids.new_ingress_id() for _ in range(1000)}
    assert len(made) == 1000
    for ingress_id in made:
        assert ingress_id.startswith("IN_") and len(ingress_id) == 15
        assert set(ingress_id[3:]) <= set(ids.ALPHABET)
    assert len(ids.new_stream_key()) == 12
