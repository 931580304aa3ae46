"""A thin layer over lightkube: log in, the LiveKitIngress and Secret calls the operator and the
shim make, and a list-then-watch loop that survives expired resource versions.

lightkube rather than kubernetes_asyncio: kopf imports kubernetes_asyncio's 850 generated model
modules whenever it is installed (≈80 MB and a second of start-up in every process).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Pod, Secret
from lightkube.types import PatchType

from ingress_operator.models import GROUP, ID_LABEL, KIND, PLURAL, STREAM_KEY_FIELD, VERSION

log = logging.getLogger(__name__)

Obj = dict[str, Any]

LiveKitIngressResource = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)
FIELD_MANAGER = "livekit-ingress-k8s"


def connect(namespace: str) -> AsyncClient:
    """A client from the in-cluster service account, else $KUBECONFIG / ~/.kube/config
    (lightkube's order; the process node gives pods a KUBECONFIG instead of a token file)."""
    return AsyncClient(
        KubeConfig.from_env(), namespace=namespace, field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(30)
    )


def as_dict(obj: Any) -> Obj:
    """A lightkube object (typed or generic) as the plain dict the API server sent."""
    out: Obj = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return out


class Kube:
    """The calls the operator and the shim make, in one namespace."""

    def __init__(self, client: AsyncClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    # LiveKitIngress
    async def create_ingress(self, body: Obj) -> Obj:
        obj = await self.client.create(LiveKitIngressResource.from_dict(body))
        return as_dict(obj)

    async def get_ingress(self, name: str) -> Obj:
        return as_dict(await self.client.get(LiveKitIngressResource, name))

    async def replace_ingress_spec(self, name: str, resource_version: str, spec: Obj) -> Obj:
        """Replace the whole spec, if the CR is still at `resource_version` (409 if not)."""
        ops = [
            # Setting the version the change was made against makes it a precondition.
            {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "replace", "path": "/spec", "value": spec},
        ]
        obj = await self.client.patch(LiveKitIngressResource, name, ops, patch_type=PatchType.JSON)
        return as_dict(obj)

    async def patch_ingress(self, name: str, patch: Obj, *, status: bool = False) -> Obj:
        """A JSON merge patch of the object, or of its status subresource."""
        resource = LiveKitIngressResource.Status if status else LiveKitIngressResource
        return as_dict(await self.client.patch(resource, name, patch, patch_type=PatchType.MERGE))

    async def json_patch_status(self, name: str, ops: list[Obj]) -> Obj | None:
        """A JSON patch (RFC 6902) of the status subresource; None when one of its `test`
        operations failed (the status moved on: e.g. another session took over)."""
        try:
            obj = await self.client.patch(LiveKitIngressResource.Status, name, ops, patch_type=PatchType.JSON)
        except ApiError as err:
            # The API server says which field a schema violation is about; a patch that did not
            # apply (a failed test, a missing path) comes without causes.
            if err.status.code == 422 and not (err.status.details and err.status.details.causes):
                return None
            raise
        return as_dict(obj)

    async def delete_ingress(self, name: str) -> None:
        await self.client.delete(LiveKitIngressResource, name)

    # Pods
    async def create_pod(self, pod: Obj) -> None:
        """Create a Pod; one that exists already is left as it is."""
        try:
            await self.client.create(Pod.from_dict(pod))  # type: ignore[call-overload]
        except ApiError as err:
            if err.status.code != 409:
                raise

    async def delete_pod(self, name: str) -> None:
        await self._delete_if_there(Pod, name)

    async def pod_exists(self, name: str) -> bool:
        try:
            await self.client.get(Pod, name)
        except ApiError as err:
            if err.status.code == 404:
                return False
            raise
        return True

    # Secrets
    async def create_stream_key_secret(self, name: str, owner: Obj, stream_key: str) -> str:
        """Create the owned Secret holding the stream key; if it exists, return the key it holds."""
        meta = owner["metadata"]
        secret = Secret(
            metadata=ObjectMeta(
                name=name,
                labels={ID_LABEL: meta["labels"][ID_LABEL]},
                ownerReferences=[
                    OwnerReference(
                        apiVersion=f"{GROUP}/{VERSION}",
                        kind=KIND,
                        name=meta["name"],
                        uid=meta["uid"],
                        controller=True,
                        blockOwnerDeletion=True,
                    )
                ],
            ),
            stringData={STREAM_KEY_FIELD: stream_key},
        )
        try:
            await self.client.create(secret)
            return stream_key
        except ApiError as err:
            if err.status.code != 409:
                raise
        return await self.read_secret_key(name, STREAM_KEY_FIELD) or stream_key

    async def read_secret_key(self, name: str, key: str) -> str | None:
        """The decoded value of one key of a Secret, or None if the Secret or key is missing."""
        try:
            secret = await self.client.get(Secret, name)
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise
        return secret_value(secret.data, key)

    async def delete_secret(self, name: str) -> None:
        await self._delete_if_there(Secret, name)

    async def _delete_if_there(self, resource: type[Pod] | type[Secret], name: str) -> None:
        try:
            await self.client.delete(resource, name)
        except ApiError as err:
            if err.status.code != 404:
                raise


def secret_value(data: dict[str, str] | None, key: str) -> str | None:
    """A Secret's `data` value (base64) decoded, or None."""
    raw = (data or {}).get(key)
    try:
        return base64.b64decode(raw).decode() if raw else None
    except (ValueError, UnicodeDecodeError):  # not text: not a usable stream key
        return None


async def list_and_watch(
    client: AsyncClient, resource: Any, on_list: Callable[[list[Any]], None]
) -> AsyncIterator[tuple[str, Any]]:
    """Yield ("ADDED"|"MODIFIED"|"DELETED", object) forever: a full list first (handed to
    `on_list`, which replaces the caller's view), then watch events from that version on. It
    lists again when the version has expired (410 Gone) and retries after connection failures."""
    while True:
        try:
            listing = client.list(resource)
            items = [item async for item in listing]
            on_list(items)
            async for kind, obj in client.watch(resource, resource_version=listing.resourceVersion):
                yield kind, obj
        except ApiError as err:
            if err.status.code != 410:
                log.warning("watch failed; listing again", extra={"error": str(err)})
                await asyncio.sleep(1)
        except (httpx2.HTTPError, OSError) as err:
            log.warning("lost the API server; retrying", extra={"error": str(err)})
            await asyncio.sleep(1)
