"""The four Ingress calls, as plain async functions over the store (no HTTP, no kopf)."""

from __future__ import annotations

import base64
import binascii

from livekit.protocol import ingress as pb

from ingress_operator.errors import InvalidArgument, NotFound
from ingress_operator.models import spec_after_update, spec_from_create
from ingress_operator.shim.store import Entry, IngressStore, state_after_update


async def create_ingress(store: IngressStore, req: pb.CreateIngressRequest) -> pb.IngressInfo:
    """Validate, create the CR and its stream key, and answer with the complete IngressInfo."""
    entry = await store.create(spec_from_create(req))
    return entry.info


async def update_ingress(store: IngressStore, req: pb.UpdateIngressRequest) -> pb.IngressInfo:
    """Merge the set fields into the spec; a session in progress is ended by the operator."""
    entry = await store.update(req.ingress_id, lambda e: spec_after_update(e.cr.spec, req))
    return state_after_update(entry)


async def delete_ingress(store: IngressStore, req: pb.DeleteIngressRequest) -> pb.IngressInfo:
    """Delete the CR; the answer is its last info with status INACTIVE."""
    entry = await store.delete(req.ingress_id)
    info = pb.IngressInfo()
    info.CopyFrom(entry.info)
    info.state.status = pb.IngressState.ENDPOINT_INACTIVE
    return info


def list_ingress(store: IngressStore, req: pb.ListIngressRequest, page_size: int) -> ListPage:
    """Every match, or one page of them when the caller sent a page_token (our extension)."""
    entries = store.list(req.room_name, req.ingress_id)
    if not req.HasField("page_token"):
        return ListPage(entries, "")
    after = _decode_token(req.page_token.token)
    if after:
        entries = [e for e in entries if (e.cr.ingress_id or "") > after]
    page = entries[:page_size]
    more = len(entries) > page_size
    return ListPage(page, _encode_token(page[-1].cr.ingress_id or "") if more else "")


class ListPage:
    """Entries of a ListIngress answer and the token of the next page ("" at the end)."""

    def __init__(self, entries: list[Entry], next_token: str) -> None:
        self.entries = entries
        self.next_token = next_token

    def to_proto(self) -> pb.ListIngressResponse:
        resp = pb.ListIngressResponse(items=[e.info for e in self.entries])
        if self.next_token:
            resp.next_page_token.token = self.next_token
        return resp

    def to_json(self) -> bytes:
        """JSON from each entry's cached rendering: List of many ingresses stays cheap."""
        token = f'{{"token":"{self.next_token}"}}' if self.next_token else "null"
        items = ",".join(e.json for e in self.entries)
        return f'{{"items":[{items}],"next_page_token":{token}}}'.encode()


def _encode_token(after: str) -> str:
    return base64.urlsafe_b64encode(after.encode()).decode()


def _decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("invalid page token", "page_token.token") from None


__all__ = ["NotFound", "create_ingress", "delete_ingress", "list_ingress", "update_ingress"]
