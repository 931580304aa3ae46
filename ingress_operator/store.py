"""A view of the ingresses: LiveKitIngress objects and Secrets of one namespace, kept current by a
watch and by the holder's own writes, so the shim's List and Get and the front door's stream-key
lookups answer from memory.

The API server stays the truth: every change goes to it first, and the shim's own writes are
folded in at once so a caller reads what it just wrote.

An entry holds only strings and bytes (the CR as JSON, its IngressInfo encoded both ways):
Python's collector never scans those, where a thousand parsed CRs cost every full collection
about 50 ms, a pause any call could land in.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2
from lightkube import ApiError
from lightkube.resources.core_v1 import Secret
from livekit.protocol import ingress as pb
from pydantic import ValidationError

from ingress_operator import ids
from ingress_operator.config import Settings
from ingress_operator.errors import NotFound, Unavailable
from ingress_operator.kube import Kube, LiveKitIngressResource, Obj, as_dict, list_and_watch, secret_value
from ingress_operator.models import (
    FINALIZER,
    ID_LABEL,
    STREAM_KEY_FIELD,
    IngressSpec,
    IngressState,
    IngressStatus,
    InputType,
    LiveKitIngress,
    ingress_info,
    seniority,
    stream_key_secret_name,
)
from ingress_operator.shim.codec import to_json

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Entry:
    """One listed ingress, as of one version of its CR (and of its stream key)."""

    ingress_id: str
    name: str
    uid: str
    resource_version: str
    room_name: str
    cr_json: str
    secret_ref: tuple[str, str] | None
    info_pb: bytes
    info_json: str
    seniority: tuple[bool, str, str]
    stream_key: str = ""  # also in info_pb; kept apart so the key index needs no decoding

    @property
    def cr(self) -> LiveKitIngress:
        return LiveKitIngress.model_validate_json(self.cr_json)

    @property
    def info(self) -> pb.IngressInfo:
        return pb.IngressInfo.FromString(self.info_pb)


def _secret_ref(cr: LiveKitIngress) -> tuple[str, str] | None:
    """(Secret name, key) holding the stream key; None for URL input."""
    spec = cr.spec
    if spec.input_type is InputType.URL:
        return None
    if spec.stream_key_secret_ref:
        return spec.stream_key_secret_ref.name, spec.stream_key_secret_ref.key
    return stream_key_secret_name(cr.metadata.name), STREAM_KEY_FIELD


def _newer(held: Entry, meta: Obj) -> bool:
    """Whether the entry we hold is a later version of the same object than `meta`'s."""
    try:
        return held.uid == meta.get("uid") and int(held.resource_version) > int(meta["resourceVersion"])
    except (KeyError, ValueError):
        return False


class IngressStore:
    """In-memory index of ingresses by id, fed by list+watch and write-through."""

    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self.entries: dict[str, Entry] = {}  # by ingress id
        self.by_stream_key: dict[str, str] = {}  # stream key -> ingress id
        self.listeners: list[Callable[[str], None]] = []  # told the id of each changed entry
        self.secrets: dict[str, dict[str, str]] = {}  # name -> data (base64), stream-key Secrets only
        self._referenced: set[str] = set()  # Secrets named by a streamKeySecretRef
        self._fetches: set[asyncio.Future[None]] = set()
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

    @property
    def healthy(self) -> bool:
        """Loaded, and both watches still running."""
        return self.synced.is_set() and not any(task.done() for task in self._tasks)

    async def stop(self) -> None:
        for task in [*self._tasks, *self._fetches]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._fetches, return_exceptions=True)

    async def _watch_ingresses(self, listed: asyncio.Event) -> None:
        def relist(items: list[Any]) -> None:
            gone = set(self.entries)
            self.entries.clear()
            self.by_stream_key.clear()
            for obj in items:
                self._apply(as_dict(obj))
            for ingress_id in gone - set(self.entries):
                self._changed(ingress_id)
            listed.set()

        async for kind, obj in list_and_watch(self.kube.client, LiveKitIngressResource, on_list=relist):
            if kind == "DELETED":
                self._forget(as_dict(obj))
            else:
                self._apply(as_dict(obj))

    async def _watch_secrets(self, listed: asyncio.Event) -> None:
        def relist(items: list[Any]) -> None:
            self.secrets = {s.metadata.name: s.data or {} for s in items if self._holds_a_key(s)}
            self._refresh_keys(None)
            listed.set()

        async for kind, secret in list_and_watch(self.kube.client, Secret, on_list=relist):
            name = secret.metadata.name
            if kind == "DELETED" or not self._holds_a_key(secret):
                self.secrets.pop(name, None)
            else:
                self.secrets[name] = secret.data or {}
            self._refresh_keys(name)

    def _holds_a_key(self, secret: Any) -> bool:
        """Only Secrets holding stream keys are kept: the namespace's others (Helm releases,
        tokens) are none of the shim's business."""
        return ID_LABEL in (secret.metadata.labels or {}) or secret.metadata.name in self._referenced

    async def _fetch_secret(self, name: str) -> None:
        """A Secret an ingress references that the watch passed over before it was referenced."""
        try:
            secret = await self.kube.client.get(Secret, name)
        except (ApiError, httpx2.HTTPError, OSError) as err:
            if not (isinstance(err, ApiError) and err.status.code == 404):
                log.warning("can't read a referenced Secret", extra={"secret": name, "error": str(err)})
            return
        self.secrets[name] = secret.data or {}
        self._refresh_keys(name)

    def remember(self, obj: Obj) -> None:
        """Fold in a CR version the holder wrote itself, ahead of the watch."""
        self._apply(obj)

    def _apply(self, obj: Obj) -> None:
        """Fold a CR version in, unless it is older than the one we hold."""
        meta = obj.get("metadata", {})
        ingress_id = meta.get("labels", {}).get(ID_LABEL)
        if not ingress_id or meta.get("uid") in self._deleted_uids:
            return
        held = self.entries.get(ingress_id)
        if meta.get("deletionTimestamp"):
            if held and held.uid == meta.get("uid"):
                self._remove(ingress_id)
            return
        if held and _newer(held, meta):
            return
        if held and held.uid != meta.get("uid") and held.seniority < seniority(obj):
            return  # a copy of another ingress's id label: the id stays with its holder
        try:
            cr = LiveKitIngress.model_validate(obj)
        except (ValidationError, ValueError) as err:
            log.warning(
                "ignoring an invalid LiveKitIngress", extra={"ingress_id": ingress_id, "error": str(err)}
            )
            return
        self._put(cr, seniority(obj))

    def _put(self, cr: LiveKitIngress, rank: tuple[bool, str, str]) -> None:
        ref = _secret_ref(cr)
        if cr.spec.stream_key_secret_ref and ref and ref[0] not in self._referenced:
            self._referenced.add(ref[0])
            if ref[0] not in self.secrets:
                fetch = asyncio.ensure_future(self._fetch_secret(ref[0]))
                self._fetches.add(fetch)
                fetch.add_done_callback(self._fetches.discard)
        key = secret_value(self.secrets.get(ref[0]), ref[1]) if ref else None
        info = ingress_info(cr, key or "", self.settings.rtmp_base_url, self.settings.whip_base_url)
        old = self.entries.get(info.ingress_id)
        if old and self.by_stream_key.get(old.stream_key) == info.ingress_id:
            del self.by_stream_key[old.stream_key]
        if info.stream_key:
            self.by_stream_key[info.stream_key] = info.ingress_id
        self.entries[info.ingress_id] = Entry(
            ingress_id=info.ingress_id,
            name=cr.metadata.name,
            uid=cr.metadata.uid,
            resource_version=cr.metadata.resourceVersion,
            room_name=cr.spec.room_name or "",
            cr_json=cr.model_dump_json(),
            secret_ref=ref,
            info_pb=info.SerializeToString(),
            info_json=json.dumps(to_json(info), separators=(",", ":")),
            seniority=rank,
            stream_key=info.stream_key,
        )
        self._changed(info.ingress_id)

    def _remove(self, ingress_id: str) -> None:
        entry = self.entries.pop(ingress_id, None)
        if entry and self.by_stream_key.get(entry.stream_key) == ingress_id:
            del self.by_stream_key[entry.stream_key]
        self._changed(ingress_id)

    def _changed(self, ingress_id: str) -> None:
        for listener in self.listeners:
            listener(ingress_id)

    def _forget(self, obj: Obj) -> None:
        meta = obj.get("metadata", {})
        self._deleted_uids.discard(meta.get("uid", ""))
        ingress_id = meta.get("labels", {}).get(ID_LABEL, "")
        held = self.entries.get(ingress_id)
        if held and held.uid == meta.get("uid"):
            self._remove(ingress_id)

    def _refresh_keys(self, secret_name: str | None) -> None:
        """Rebuild the entries whose stream key lives in this Secret (None: in any)."""
        for entry in list(self.entries.values()):
            if entry.secret_ref and (secret_name is None or entry.secret_ref[0] == secret_name):
                self._put(entry.cr, entry.seniority)

    # --- reads ------------------------------------------------------------------------------

    def get(self, ingress_id: str) -> Entry:
        entry = self.entries.get(ingress_id) if ingress_id else None
        if entry is None:
            raise NotFound()
        return entry

    def find_by_stream_key(self, stream_key: str) -> Entry | None:
        """The ingress whose stream key this is, if any."""
        ingress_id = self.by_stream_key.get(stream_key) if stream_key else None
        return self.entries.get(ingress_id) if ingress_id else None

    def list(self, room_name: str = "", ingress_id: str = "") -> list[Entry]:
        """Matching entries sorted by id; an id filter wins over a room filter, as in LiveKit."""
        if ingress_id:
            return [self.get(ingress_id)]
        found = (e for e in self.entries.values() if not room_name or e.room_name == room_name)
        return sorted(found, key=lambda e: e.ingress_id)

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
        name = obj["metadata"]["name"]
        if spec.input_type is not InputType.URL and spec.stream_key_secret_ref is None:
            secret = stream_key_secret_name(name)
            try:
                key = await self.kube.create_stream_key_secret(secret, obj, ids.new_stream_key())
            except BaseException:
                # A caller told "failed" must not find the ingress (with a key it never got).
                await self.kube.delete_ingress(name)
                raise
            self.secrets[secret] = {STREAM_KEY_FIELD: base64.b64encode(key.encode()).decode()}
            # The watch may already hold a newer version of this CR (the operator's status patch).
            self._refresh_keys(secret)
        self._apply(obj)
        log.info("ingress created", extra={"ingress_id": ingress_id, "cr_name": name})
        return self.get(ingress_id)

    async def update(self, ingress_id: str, change: Callable[[LiveKitIngress], IngressSpec]) -> Entry:
        """Replace the spec with `change(cr)`, retrying when someone else wrote in between."""
        for _ in range(5):
            entry = self.get(ingress_id)
            spec = change(entry.cr)
            try:
                obj = await self.kube.replace_ingress_spec(entry.name, entry.resource_version, spec.to_cr())
            except ApiError as err:
                if err.status.code == 404:
                    raise NotFound() from None
                if err.status.code != 409:
                    raise
                try:
                    self._apply(await self.kube.get_ingress(entry.name))
                except ApiError as gone:
                    if gone.status.code == 404:
                        raise NotFound() from None
                    raise
                continue
            if (entry.cr.status.state or IngressState()).status is IngressStatus.ENDPOINT_ERROR:
                # As LiveKit: an update resets an errored ingress (the error text stays), even
                # when the spec is unchanged and the operator would see no new generation.
                reset = {"status": {"state": {"status": IngressStatus.ENDPOINT_INACTIVE.value}}}
                obj = await self.kube.patch_ingress(entry.name, reset, status=True)
            self._apply(obj)
            log.info("ingress updated", extra={"ingress_id": ingress_id})
            return self.get(ingress_id)
        raise Unavailable("the ingress kept changing during the update; try again")

    async def delete(self, ingress_id: str) -> Entry:
        """Delete the CR (its finalizer ends any session; owned objects go with it)."""
        entry = self.get(ingress_id)
        try:
            await self.kube.delete_ingress(entry.name)
        except ApiError as err:
            if err.status.code != 404:
                raise
        self._deleted_uids.add(entry.uid)
        self._remove(ingress_id)
        log.info("ingress deleted", extra={"ingress_id": ingress_id})
        return entry
