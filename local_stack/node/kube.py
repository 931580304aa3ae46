"""A thin JSON client over aiohttp for the local stack's own kubeconfig (a bearer token and
a CA): plain dicts in and out, list+watch.

The process node works on the API's own JSON (camelCase dicts) rather than generated models:
it writes statuses the way a kubelet does and reads only a few fields.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yaml

log = logging.getLogger(__name__)

JSON = dict[str, Any]
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class KubeError(Exception):
    def __init__(self, status: int, reason: str, body: Any = None) -> None:
        super().__init__(f"{status} {reason}: {body}")
        self.status = status
        self.reason = reason
        self.body = body


class Kube:
    def __init__(self, server: str, token: str, ca_pem: bytes | None) -> None:
        self.server = server.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        tls = ssl.create_default_context(cadata=ca_pem.decode()) if ca_pem else None
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls or False, limit=32))

    @classmethod
    async def from_kubeconfig(cls, path: Path | str) -> Kube:
        """Token-authenticated kubeconfigs only: the ones the local stack writes."""
        server, ca = kubeconfig_cluster(path)
        return cls(server, kubeconfig_token(path), ca)

    async def close(self) -> None:
        await self.http.close()

    async def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: Any,
        content_type: str,
        limit: float | aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        timeout = limit if isinstance(limit, aiohttp.ClientTimeout) else aiohttp.ClientTimeout(total=limit)
        return await self.http.request(
            method,
            self.server + path,
            params={k: str(v) for k, v in (query or {}).items() if v is not None},
            headers={**self.headers, "Content-Type": content_type},
            data=None if body is None else json.dumps(body),
            timeout=timeout,
        )

    async def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        limit: float = 30.0,
    ) -> JSON:
        resp = await self._send(method, path, query, body, content_type, limit)
        try:
            raw = await resp.read()
        finally:
            resp.release()
        data: Any
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = raw.decode(errors="replace")
        if not 200 <= resp.status < 300:
            reason = data.get("reason", "") if isinstance(data, dict) else resp.reason
            message = data.get("message", data) if isinstance(data, dict) else data
            raise KubeError(resp.status, str(reason or resp.reason), message)
        return data if isinstance(data, dict) else {"raw": data}

    async def get(self, path: str, query: Mapping[str, Any] | None = None) -> JSON:
        return await self.request("GET", path, query)

    async def get_or_none(self, path: str) -> JSON | None:
        try:
            return await self.get(path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, path: str, body: JSON) -> JSON:
        return await self.request("POST", path, body=body)

    async def patch(self, path: str, body: JSON, content_type: str = STRATEGIC) -> JSON:
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def delete(self, path: str, body: JSON | None = None) -> JSON:
        return await self.request("DELETE", path, body=body)

    async def watch(
        self, path: str, query: Mapping[str, Any], resource_version: str, timeout_s: int = 290
    ) -> AsyncIterator[tuple[str, JSON]]:
        """Events after `resource_version` until the server ends the watch; 410 raises."""
        q = {
            **query,
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_s),
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_s + 30)
        resp = await self._send("GET", path, q, None, "application/json", timeout)
        try:
            if resp.status != 200:
                raise KubeError(resp.status, resp.reason or "", (await resp.read())[:500])
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                etype, obj = event.get("type", ""), event.get("object") or {}
                if etype == "ERROR":
                    raise KubeError(int(obj.get("code", 500)), obj.get("reason", ""), obj)
                yield etype, obj
        finally:
            resp.release()


async def list_watch(
    kube: Kube,
    path: str,
    query: Mapping[str, Any],
    on_list: Callable[[list[JSON]], Awaitable[None]],
    on_event: Callable[[str, JSON], Awaitable[None]],
    what: str,
) -> None:
    """List then watch forever (an informer without cache); relists after errors and 410s."""
    delay = 0.5
    while True:
        try:
            listed = await kube.get(path, query)
            rv = listed["metadata"]["resourceVersion"]
            await on_list(listed.get("items") or [])
            delay = 0.5
            while True:
                async for etype, obj in kube.watch(path, query, rv):
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if etype != "BOOKMARK":
                        await on_event(etype, obj)
        except asyncio.CancelledError:
            raise
        except KubeError as exc:
            if exc.status != 410:
                log.warning("watch failed", extra={"watch": what, "error": str(exc)[:300]})
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.warning("watch interrupted", extra={"watch": what, "error": repr(exc)[:300]})
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


def _current(path: Path | str) -> tuple[JSON, JSON]:
    """(cluster, user) of the kubeconfig's current context."""
    doc = yaml.safe_load(Path(path).read_text())
    contexts = {c["name"]: c["context"] for c in doc.get("contexts") or []}
    ctx = contexts.get(doc.get("current-context")) or next(iter(contexts.values()))
    clusters = {c["name"]: c["cluster"] for c in doc.get("clusters") or []}
    users = {u["name"]: u["user"] for u in doc.get("users") or []}
    return clusters[ctx["cluster"]], users.get(ctx.get("user"), {})


def kubeconfig_cluster(path: Path | str) -> tuple[str, bytes | None]:
    """(server URL, CA PEM or None) of the kubeconfig's current context."""
    cluster, _ = _current(path)
    ca: bytes | None = None
    if cluster.get("certificate-authority-data"):
        ca = base64.b64decode(cluster["certificate-authority-data"])
    elif cluster.get("certificate-authority"):
        ca = Path(cluster["certificate-authority"]).read_bytes()
    return str(cluster["server"]), ca


def kubeconfig_token(path: Path | str) -> str:
    """The bearer token of the kubeconfig's current user."""
    return str(_current(path)[1]["token"])


def token_kubeconfig(server: str, ca_pem: bytes | None, token: str, namespace: str) -> str:
    """A kubeconfig for a bearer token (a service account's, for a pod)."""
    cluster: JSON = {"server": server}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "pod", "user": {"token": token}}],
        "contexts": [
            {
                "name": "pod",
                "context": {"cluster": "local", "user": "pod", "namespace": namespace},
            }
        ],
        "current-context": "pod",
    }
    return yaml.safe_dump(doc, sort_keys=False)
