"""`lki-frontdoor`: the RTMP listener every RTMP ingress shares, and the HTTP port media pods
read their sessions from."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from ingress_operator import logs
from ingress_operator.config import Settings
from ingress_operator.kube import Kube, connect
from ingress_operator.store import IngressStore
from ingress_pod.frontdoor.http import make_app
from ingress_pod.frontdoor.rtmp import RTMPServer
from ingress_pod.frontdoor.sessions import SessionRegistry


async def serve(settings: Settings) -> None:
    client = connect(settings.ingress_namespace)
    store = IngressStore(Kube(client, settings.ingress_namespace), settings)
    source = settings.frontdoor_source_url or (
        f"http://{settings.frontdoor_bind}:{settings.frontdoor_http_port}"
    )
    registry = SessionRegistry(store.kube, store, source)
    runner = web.AppRunner(make_app(registry), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.frontdoor_bind, settings.frontdoor_http_port).start()
    await store.start()
    await registry.sweep()
    rtmp = RTMPServer(registry)
    server = await rtmp.start(settings.frontdoor_bind, settings.frontdoor_rtmp_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await rtmp.close_connections()
    await runner.cleanup()
    await store.stop()
    await client.close()


def main() -> None:
    logs.setup()
    asyncio.run(serve(Settings()))


if __name__ == "__main__":
    main()
