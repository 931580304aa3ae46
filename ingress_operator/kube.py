"""A thin layer over kubernetes_asyncio: log in, LiveKitIngress and Secret calls, and a
list-then-watch loop that survives expired resource versions."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from ingress_operator.models import GROUP, ID_LABEL, KIND, PLURAL, STREAM_KEY_FIELD, VERSION

log = logging.getLogger(__name__)

Obj = dict[str, Any]


async def api_client(pool_size: int = 64) -> client.ApiClient:
    """An ApiClient from the in-cluster service account, else $KUBECONFIG or ~/.kube/config."""
    cfg = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = pool_size
    return client.ApiClient(cfg)


def is_status(err: BaseException, *codes: int) -> bool:
    """Whether `err` is an API error with one of these HTTP statuses."""
    return isinstance(err, ApiException) and err.status in codes


class Kube:
    """The calls the operator and the shim make, in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    # LiveKitIngress
    async def create_ingress(self, body: Obj) -> Obj:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, **body}
        obj: Obj = await self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return obj

    async def get_ingress(self, name: str) -> Obj:
        obj: Obj = await self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return obj

    async def replace_ingress(self, body: Obj) -> Obj:
        name = body["metadata"]["name"]
        obj: Obj = await self.custom.replace_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, body
        )
        return obj

    async def delete_ingress(self, name: str) -> None:
        await self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    async def patch_ingress_status(self, name: str, status: Obj) -> Obj:
        obj: Obj = await self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, name, {"status": status}
        )
        return obj

    # Secrets
    async def create_stream_key_secret(self, name: str, owner: Obj, stream_key: str) -> str:
        """Create the owned Secret holding the stream key; if it exists, return the key it holds."""
        meta = owner["metadata"]
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=name,
                labels={ID_LABEL: meta["labels"][ID_LABEL]},
                owner_references=[
                    client.V1OwnerReference(
                        api_version=f"{GROUP}/{VERSION}",
                        kind=KIND,
                        name=meta["name"],
                        uid=meta["uid"],
                        controller=True,
                        block_owner_deletion=True,
                    )
                ],
            ),
            string_data={STREAM_KEY_FIELD: stream_key},
        )
        try:
            await self.core.create_namespaced_secret(self.namespace, body)
            return stream_key
        except ApiException as err:
            if err.status != 409:
                raise
        existing = await self.read_secret_key(name, STREAM_KEY_FIELD)
        return existing or stream_key

    async def read_secret_key(self, name: str, key: str) -> str | None:
        """The decoded value of one key of a Secret, or None if the Secret or key is missing."""
        try:
            secret = await self.core.read_namespaced_secret(name, self.namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return secret_value(secret.data, key)

    async def delete_secret(self, name: str) -> None:
        try:
            await self.core.delete_namespaced_secret(name, self.namespace)
        except ApiException as err:
            if err.status != 404:
                raise


def secret_value(data: dict[str, str] | None, key: str) -> str | None:
    raw = (data or {}).get(key)
    return base64.b64decode(raw).decode() if raw else None


ListFn = Callable[..., Awaitable[Any]]


async def list_and_watch(
    list_fn: ListFn, *args: Any, on_list: Callable[[list[Any]], None]
) -> AsyncIterator[tuple[str, Any]]:
    """Yield ("ADDED"|"MODIFIED"|"DELETED", object) forever: a full list first (handed to
    `on_list`, which replaces the caller's view), then watch events from that version on; it
    lists again only when the version has expired or the watch broke."""
    rv: str | None = None
    while True:
        try:
            if rv is None:
                listing = await list_fn(*args)
                if isinstance(listing, dict):
                    items, rv = listing["items"], listing["metadata"]["resourceVersion"]
                else:
                    items, rv = listing.items, listing.metadata.resource_version
                on_list(items)
            async with watch.Watch() as w:
                async for event in w.stream(
                    list_fn,
                    *args,
                    resource_version=rv,
                    allow_watch_bookmarks=True,
                    timeout_seconds=240,
                ):
                    if event["type"] == "ERROR":
                        rv = None
                        break
                    rv = event["raw_object"]["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        yield event["type"], event["object"]
        except ApiException as err:
            rv = None
            if err.status != 410:
                log.warning("watch failed; listing again", extra={"error": str(err)})
                await asyncio.sleep(1)
