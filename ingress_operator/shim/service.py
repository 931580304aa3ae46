"""The four Ingress calls, as plain async functions over the store (no HTTP, no kopf)."""

from __future__ import annotations

import base64
import binascii

from livekit.protocol import ingress as pb
from livekit.protocol import models as pbm

from ingress_operator.errors import InvalidArgument
from ingress_operator.models import spec_after_update, spec_from_create
from ingress_operator.store import Entry, IngressStore


async def create_ingress(store: IngressStore, req: pb.CreateIngressRequest) -> pb.IngressInfo:
    """Validate, create the CR and its stream key, and answer with the complete IngressInfo."""
    entry = await store.create(spec_from_create(req))
    return entry.info


async def update_ingress(store: IngressStore, req: pb.UpdateIngressRequest) -> pb.IngressInfo:
    """Merge the set fields into the spec (an errored ingress goes back to INACTIVE)."""
    entry = await store.update(req.ingress_id, lambda cr: spec_after_update(cr.spec, req))
    return entry.info


async def delete_ingress(store: IngressStore, req: pb.DeleteIngressRequest) -> pb.IngressInfo:
    """Delete the CR; the answer is its last info with status INACTIVE."""
    info = (await store.delete(req.ingress_id)).info
    info.state.status = pb.IngressState.ENDPOINT_INACTIVE
    return info


def list_ingress(store: IngressStore, req: pb.ListIngressRequest, page_size: int) -> ListPage:
    """Every match, or one page of them when the caller sent a page_token (our extension)."""
    entries = store.list(req.room_name, req.ingress_id)
    if not req.HasField("page_token"):
        return ListPage(entries, "")
    after = _decode_token(req.page_token.token)
    if after:
        entries = [e for e in entries if e.ingress_id > after]
    page = entries[:page_size]
    more = len(entries) > page_size
    return ListPage(page, _encode_token(page[-1].ingress_id) if more else "")


class ListPage:
    """Entries of a ListIngress answer and the token of the next page ("" at the end)."""

    def __init__(self, entries: list[Entry], next_token: str) -> None:
        self.entries = entries
        self.next_token = next_token

    def to_protobuf(self) -> bytes:
        """ListIngressResponse on the wire, from each entry's encoded info (field 2, repeated)."""
        out = bytearray()
        for entry in self.entries:
            out += _field(_ITEMS, entry.info_pb)
        if self.next_token:
            out += _field(_NEXT_PAGE_TOKEN, _field(_TOKEN, self.next_token.encode()))
        return bytes(out)

    def to_json(self) -> bytes:
        """JSON from each entry's cached rendering: List of many ingresses stays cheap."""
        token = f'{{"token":"{self.next_token}"}}' if self.next_token else "null"
        items = ",".join(e.info_json for e in self.entries)
        return f'{{"items":[{items}],"next_page_token":{token}}}'.encode()


_LIST_FIELDS = pb.ListIngressResponse.DESCRIPTOR.fields_by_name
_ITEMS = _LIST_FIELDS["items"].number
_NEXT_PAGE_TOKEN = _LIST_FIELDS["next_page_token"].number
_TOKEN = pbm.TokenPagination.DESCRIPTOR.fields_by_name["token"].number


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field: tag, varint length, bytes."""
    out = bytearray([number << 3 | 2])
    size = len(payload)
    while size > 0x7F:
        out.append(size & 0x7F | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out) + payload


def _encode_token(after: str) -> str:
    return base64.urlsafe_b64encode(after.encode()).decode()


def _decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("invalid page token", "page_token.token") from None
