"""ListIngress answers assembled from each entry's cached encodings equal the real encodings."""

from __future__ import annotations

import json

import pytest
from livekit.protocol import ingress as pb

from ingress_operator.shim import codec
from ingress_operator.shim.service import ListPage
from ingress_operator.store import Entry


def entry(info: pb.IngressInfo) -> Entry:
    return Entry(
        ingress_id=info.ingress_id,
        name="n",
        uid="u",
        resource_version="1",
        room_name=info.room_name,
        cr_json="{}",
        secret_ref=None,
        info_pb=info.SerializeToString(),
        info_json=json.dumps(codec.to_json(info)),
        seniority=(False, "", "n"),
    )


INFOS = [
    pb.IngressInfo(ingress_id=f"IN_{i:012d}", room_name="r" * (i * 40), state=pb.IngressState())
    for i in range(5)  # names long enough that some lengths need two varint bytes
]


@pytest.mark.parametrize("token", ["", "SU5fMDAwMDAwMDAwMDA0"])
def test_assembled_answers_equal_the_encoded_message(token: str) -> None:
    page = ListPage([entry(i) for i in INFOS], token)
    expected = pb.ListIngressResponse(items=INFOS)
    if token:
        expected.next_page_token.token = token
    assert pb.ListIngressResponse.FromString(page.to_protobuf()) == expected
    assert json.loads(page.to_json()) == codec.to_json(expected)


def test_empty_page() -> None:
    assert ListPage([], "").to_protobuf() == b""
    assert json.loads(ListPage([], "").to_json()) == {"items": [], "next_page_token": None}
