"""The shim as an aiohttp application: LiveKit's Ingress Twirp service backed by the custom
resources, every other Twirp service proxied to livekit-server, and health and metrics."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import httpx2
from aiohttp import web
from google.protobuf.message import Message
from lightkube import ApiError
from livekit.protocol import ingress as pb
from prometheus_client import Counter, Histogram

from ingress_operator.config import Settings
from ingress_operator.errors import (
    BadRoute,
    IngressError,
    InvalidArgument,
    InvalidToken,
    Malformed,
    Unavailable,
)
from ingress_operator.kube import Kube, connect
from ingress_operator.models import snake_path
from ingress_operator.promhttp import identify, serve_metrics
from ingress_operator.shim import auth, codec, service
from ingress_operator.store import IngressStore

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", IngressStore)
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)

PREFIX = "/twirp/livekit.Ingress/"
MAX_BODY = 1 << 20

REQUEST_SECONDS = Histogram(
    "lki_shim_request_seconds",
    "Ingress API call latency by call and Twirp code",
    ["call", "code"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PROXIED = Counter("lki_shim_proxied_requests_total", "Twirp calls proxied to livekit-server", ["status"])
identify("shim")

Call = Callable[[IngressStore, Any, Settings], Awaitable["Message | service.ListPage"]]


async def _create(store: IngressStore, req: Any, _: Settings) -> Message:
    return await service.create_ingress(store, req)


async def _update(store: IngressStore, req: Any, _: Settings) -> Message:
    return await service.update_ingress(store, req)


async def _delete(store: IngressStore, req: Any, _: Settings) -> Message:
    return await service.delete_ingress(store, req)


async def _list(store: IngressStore, req: Any, settings: Settings) -> service.ListPage:
    return service.list_ingress(store, req, settings.list_page_size)


CALLS: dict[str, tuple[type[Message], Call]] = {
    "CreateIngress": (pb.CreateIngressRequest, _create),
    "UpdateIngress": (pb.UpdateIngressRequest, _update),
    "ListIngress": (pb.ListIngressRequest, _list),
    "DeleteIngress": (pb.DeleteIngressRequest, _delete),
}


def twirp_error(err: IngressError) -> web.Response:
    """Render an error as LiveKit does: Twirp JSON, or plain text for a token that fails."""
    if isinstance(err, InvalidToken):
        return web.Response(status=401, text=err.msg + "\n", content_type="text/plain")
    msg = err.msg
    if isinstance(err, InvalidArgument) and err.field:
        msg = f"{snake_path(err.field)}: {err.rule}"
    body: dict[str, Any] = {"code": err.code, "msg": msg}
    if isinstance(err, BadRoute):
        body["meta"] = {"twirp_invalid_route": msg}
    # Exactly `application/json`: the Node SDK reads the Twirp code only then (no charset).
    return web.Response(body=json.dumps(body).encode(), status=err.http_status, content_type=codec.JSON)


async def route_twirp(request: web.Request) -> web.StreamResponse:
    """The Ingress service here, any other Twirp service to livekit-server. Repeated slashes
    are collapsed first, as LiveKit's server does: SDKs join a `LIVEKIT_URL` that ends in `/`
    and `/twirp/...` into `//twirp/...`."""
    path = re.sub("/{2,}", "/", request.path)
    if path.startswith(PREFIX):
        return await handle_ingress_call(request, path.removeprefix(PREFIX))
    if path.startswith("/twirp/"):
        return await proxy_twirp(request, path)
    raise web.HTTPNotFound()


async def handle_ingress_call(request: web.Request, method: str) -> web.StreamResponse:
    """POST /twirp/livekit.Ingress/<Method>: auth, route, decode, call, encode."""
    started = time.perf_counter()
    code = "ok"
    try:
        claims = _authenticate(request)
        if request.method != "POST" or method not in CALLS:
            raise BadRoute(f"no handler for path {PREFIX + method!r}")
        fmt = codec.wire_format(request.headers.get("Content-Type"))
        auth.require_ingress_admin(claims)
        message_type, call = CALLS[method]
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Malformed(f"the request body is larger than {MAX_BODY} bytes") from None
        req = codec.decode(body, fmt, message_type)
        settings, store = request.app[SETTINGS], request.app[STORE]
        result = await call(store, req, settings)
        if isinstance(result, service.ListPage):
            data = result.to_json() if fmt == codec.JSON else result.to_protobuf()
        else:
            data = codec.encode(result, fmt)
        return web.Response(body=data, content_type=fmt)
    except IngressError as err:
        code = err.code
        return twirp_error(err)
    except (ApiError, httpx2.HTTPError, OSError) as err:
        failure = _kube_failure(err)
        code = failure.code
        return twirp_error(failure)
    finally:
        call_label = method if method in CALLS else "unknown"
        REQUEST_SECONDS.labels(call_label, code).observe(time.perf_counter() - started)


def _kube_failure(err: ApiError | httpx2.HTTPError | OSError) -> IngressError:
    """A Kubernetes API failure as the caller sees it; the details go to the log."""
    status = err.status.code if isinstance(err, ApiError) else 0
    log.error("kubernetes API call failed", extra={"status": status, "detail": str(err)})
    if status in (400, 422):  # the API server refused a value our checks let through
        return InvalidArgument(f"refused by the Kubernetes API: {err.status.message}")  # type: ignore[union-attr]
    if status in (0, 429, 500, 502, 503, 504):
        return Unavailable("the Kubernetes API is unavailable")
    return IngressError("internal error")


def _authenticate(request: web.Request) -> dict[str, object] | None:
    """Claims of a verified token, None without a token; InvalidToken for a bad one."""
    token = auth.token_from(request.headers.get("Authorization"), request.query.get("access_token"))
    if token is None:
        return None
    settings = request.app[SETTINGS]
    return auth.verify(token, {settings.livekit_api_key: settings.livekit_api_secret.get_secret_value()})


_HOP_HEADERS = {
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "upgrade",
}


async def proxy_twirp(request: web.Request, path: str) -> web.StreamResponse:
    """Any other Twirp service goes to livekit-server unchanged (auth is livekit-server's)."""
    upstream = request.app[UPSTREAM]
    url = request.app[SETTINGS].livekit_server_url.rstrip("/") + path
    if request.query_string:
        url += "?" + request.query_string
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
    try:
        async with upstream.request(request.method, url, headers=headers, data=await request.read()) as resp:
            body = await resp.read()
            PROXIED.labels(str(resp.status)).inc()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_HEADERS}
            return web.Response(status=resp.status, body=body, headers=out)
    except (aiohttp.ClientError, TimeoutError):
        PROXIED.labels("unavailable").inc()
        return twirp_error(Unavailable("the LiveKit server is unavailable"))


async def healthz(request: web.Request) -> web.Response:
    """200 once the store has loaded the ingresses, for as long as it keeps watching them."""
    ready = request.app[STORE].healthy
    return web.Response(status=200 if ready else 503, text="ok\n" if ready else "syncing\n")


@web.middleware
async def never_a_traceback(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Whatever fails becomes a Twirp `internal` error; the traceback goes to the log only."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return twirp_error(IngressError("internal error"))


def make_app(settings: Settings, store: IngressStore | None = None) -> web.Application:
    """The shim. Without `store`, it logs in to Kubernetes and watches on startup."""
    app = web.Application(middlewares=[never_a_traceback], client_max_size=MAX_BODY)
    app[SETTINGS] = settings

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        client = None
        if store is None:
            client = connect(settings.ingress_namespace)
            app[STORE] = IngressStore(Kube(client, settings.ingress_namespace), settings)
        else:
            app[STORE] = store
        app[UPSTREAM] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        await app[STORE].start()
        yield
        await app[STORE].stop()
        await app[UPSTREAM].close()
        if client is not None:
            await client.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", serve_metrics)
    app.router.add_route("*", "/{path:.*}", route_twirp)
    return app
