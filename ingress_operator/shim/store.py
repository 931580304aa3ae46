"""The shim's view of the ingresses: LiveKitIngress objects and Secrets of one namespace, kept
current by a watch and by the shim's own writes, so List and Get answer from memory.

The API server stays the truth: every change goes to it first, and the shim's own writes are
folded in at once so a caller reads what it just wrote.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lightkube import ApiError
from lightkube.resources.core_v1 import Secret
from livekit.protocol import ingress as pb
from pydantic import ValidationError

from ingress_operator import ids
from ingress_operator.config import Settings
from ingress_operator.errors import InvalidArgument, NotFound
from ingress_operator.kube import Kube, LiveKitIngressResource, Obj, as_dict, list_and_watch, secret_value
from ingress_operator.models import (
    FINALIZER,
    ID_LABEL,
    STREAM_KEY_FIELD,
    IngressSpec,
    IngressStatus,
    InputType,
    LiveKitIngress,
    ingress_info,
    stream_key_secret_name,
)
from ingress_operator.shim.codec import to_json

log = logging.getLogger(__name__)


@dataclass
class Entry:
    """One listed ingress: the CR, its IngressInfo, and that info's JSON, made once per version."""

    cr: LiveKitIngress
    raw: Obj
    info: pb.IngressInfo
    _json: str | None = field(default=None, repr=False)

    @property
    def json(self) -> str:
        if self._json is None:
            self._json = json.dumps(to_json(self.info), separators=(",", ":"))
        return self._json

    @property
    def secret_ref(self) -> tuple[str, str] | None:
        spec = self.cr.spec
        if spec.input_type is InputType.URL:
            return None
        if spec.stream_key_secret_ref:
            return spec.stream_key_secret_ref.name, spec.stream_key_secret_ref.key
        return stream_key_secret_name(self.cr.metadata.name), STREAM_KEY_FIELD


def _rv(obj: Obj) -> int:
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        return 0


class IngressStore:
    """In-memory index of ingresses by id, fed by list+watch and write-through."""

    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self.entries: dict[str, Entry] = {}  # by ingress id
        self.secrets: dict[str, dict[str, str]] = {}  # name -> data (base64 values)
        self._deleted_uids: set[str] = set()
        self.synced = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- the watch side ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start watching; returns once both lists have been loaded."""
        crs_listed, secrets_listed = asyncio.Event(), asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._watch_ingresses(crs_listed)),
            asyncio.create_task(self._watch_secrets(secrets_listed)),
        ]
        listed: asyncio.Future[Any] = asyncio.gather(crs_listed.wait(), secrets_listed.wait())
        await asyncio.wait([listed, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in self._tasks:
            if task.done():
                listed.cancel()
                task.result()  # a watcher that died before its first list: raise its error
        self.synced.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _watch_ingresses(self, listed: asyncio.Event) -> None:
        def relist(items: list[Any]) -> None:
            self.entries.clear()
            for obj in items:
                self._apply(as_dict(obj))
            listed.set()

        async for kind, obj in list_and_watch(self.kube.client, LiveKitIngressResource, on_list=relist):
            if kind == "DELETED":
                self._forget(as_dict(obj))
            else:
                self._apply(as_dict(obj))

    async def _watch_secrets(self, listed: asyncio.Event) -> None:
        def relist(items: list[Any]) -> None:
            self.secrets = {s.metadata.name: s.data or {} for s in items}
            self._refresh_keys(None)
            listed.set()

        async for kind, secret in list_and_watch(self.kube.client, Secret, on_list=relist):
            name = secret.metadata.name
            if kind == "DELETED":
                self.secrets.pop(name, None)
            else:
                self.secrets[name] = secret.data or {}
            self._refresh_keys(name)

    def _apply(self, obj: Obj) -> Entry | None:
        """Fold a CR version in (unless older than what we hold); returns its entry."""
        meta = obj.get("metadata", {})
        ingress_id = meta.get("labels", {}).get(ID_LABEL)
        if not ingress_id or meta.get("uid") in self._deleted_uids:
            return None
        if meta.get("deletionTimestamp"):
            self.entries.pop(ingress_id, None)
            return None
        held = self.entries.get(ingress_id)
        if held and held.raw["metadata"]["uid"] == meta.get("uid") and _rv(held.raw) > _rv(obj):
            return held
        try:
            cr = LiveKitIngress.model_validate(obj)
        except ValidationError as err:
            log.warning(
                "ignoring an invalid LiveKitIngress",
                extra={"ingress_id": ingress_id, "error": str(err)},
            )
            return None
        entry = Entry(cr=cr, raw=obj, info=pb.IngressInfo())
        entry.info = self._info(entry)
        self.entries[ingress_id] = entry
        return entry

    def _forget(self, obj: Obj) -> None:
        meta = obj.get("metadata", {})
        self._deleted_uids.discard(meta.get("uid", ""))
        held = self.entries.get(meta.get("labels", {}).get(ID_LABEL, ""))
        if held and held.raw["metadata"]["uid"] == meta.get("uid"):
            del self.entries[held.cr.ingress_id or ""]

    def _stream_key(self, entry: Entry) -> str:
        ref = entry.secret_ref
        if ref is None:
            return ""
        return secret_value(self.secrets.get(ref[0]), ref[1]) or ""

    def _info(self, entry: Entry) -> pb.IngressInfo:
        s = self.settings
        return ingress_info(entry.cr, self._stream_key(entry), s.rtmp_base_url, s.whip_base_url)

    def _refresh_keys(self, secret_name: str | None) -> None:
        for entry in self.entries.values():
            ref = entry.secret_ref
            if ref and (secret_name is None or ref[0] == secret_name):
                entry.info = self._info(entry)
                entry._json = None

    # --- reads ------------------------------------------------------------------------------

    def get(self, ingress_id: str) -> Entry:
        entry = self.entries.get(ingress_id) if ingress_id else None
        if entry is None:
            raise NotFound()
        return entry

    def list(self, room_name: str = "", ingress_id: str = "") -> list[Entry]:
        """Matching entries sorted by id; an id filter wins over a room filter, as in LiveKit."""
        if ingress_id:
            return [self.get(ingress_id)]
        found = (e for e in self.entries.values() if not room_name or e.cr.spec.room_name == room_name)
        return sorted(found, key=lambda e: e.cr.ingress_id or "")

    # --- writes -----------------------------------------------------------------------------

    async def create(self, spec: IngressSpec) -> Entry:
        """Create the CR (and, for RTMP/WHIP, its stream key Secret) and return the full entry."""
        ingress_id = ids.new_ingress_id()
        obj = await self.kube.create_ingress(
            {
                # With the finalizer set at birth, the operator needn't add it in a write of its own.
                "metadata": {
                    "generateName": "ingress-",
                    "labels": {ID_LABEL: ingress_id},
                    "finalizers": [FINALIZER],
                },
                "spec": spec.to_cr(),
            }
        )
        if spec.input_type is not InputType.URL and spec.stream_key_secret_ref is None:
            name = stream_key_secret_name(obj["metadata"]["name"])
            key = await self.kube.create_stream_key_secret(name, obj, ids.new_stream_key())
            self.secrets[name] = {STREAM_KEY_FIELD: base64.b64encode(key.encode()).decode()}
        # The watch may already hold a newer version of this CR (the operator's status patch).
        self._apply(obj)
        self._refresh_keys(stream_key_secret_name(obj["metadata"]["name"]))
        return self.get(ingress_id)

    async def update(self, ingress_id: str, change: Callable[[Entry], IngressSpec]) -> Entry:
        """Replace the spec with `change(entry)`, retrying on a concurrent write."""
        for _ in range(5):
            entry = self.get(ingress_id)
            body = dict(entry.raw)
            body["spec"] = change(entry).to_cr()
            body.pop("status", None)
            try:
                obj = await self.kube.replace_ingress(body)
            except ApiError as err:
                if err.status.code == 404:
                    raise NotFound() from None
                if err.status.code != 409:
                    raise
                self._apply(await self.kube.get_ingress(entry.cr.metadata.name))
                continue
            updated = self._apply(obj)
            assert updated is not None
            return updated
        raise InvalidArgument("the ingress kept changing; try again")

    async def delete(self, ingress_id: str) -> Entry:
        """Delete the CR (its finalizer ends any session; owned objects go with it)."""
        entry = self.get(ingress_id)
        try:
            await self.kube.delete_ingress(entry.cr.metadata.name)
        except ApiError as err:
            if err.status.code != 404:
                raise
        self._deleted_uids.add(entry.cr.metadata.uid)
        self.entries.pop(ingress_id, None)
        return entry


def state_after_update(entry: Entry) -> pb.IngressInfo:
    """The info an UpdateIngress returns: an ERROR state goes back to INACTIVE (error kept)."""
    info = pb.IngressInfo()
    info.CopyFrom(entry.info)
    if entry.cr.status.state and entry.cr.status.state.status is IngressStatus.ENDPOINT_ERROR:
        info.state.status = pb.IngressState.ENDPOINT_INACTIVE
    return info
