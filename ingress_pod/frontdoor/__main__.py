"""`lki-frontdoor`: the RTMP listener every RTMP ingress shares, the HTTP port of the WHIP
endpoint and of the sessions media pods read, and the WHIP UDP relay port (when configured)."""

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
from ingress_pod.frontdoor.udp import UdpRelay


async def serve(settings: Settings) -> None:
    client = connect(settings.ingress_namespace)
    store = IngressStore(Kube(client, settings.ingress_namespace), settings)
    source = settings.frontdoor_source_url or (
        f"http://{settings.frontdoor_bind}:{settings.frontdoor_http_port}"
    )
    registry = SessionRegistry(store.kube, store, source)
    relay = None
    if settings.frontdoor_whip_udp_port:
        host, _, port = settings.frontdoor_whip_udp_advertise.rpartition(":")
        advertise = (
            (host.strip("[]"), int(port))
            if host
            else (settings.frontdoor_bind, settings.frontdoor_whip_udp_port)
        )
        relay = UdpRelay(advertise, settings.frontdoor_whip_pod_candidates)
        await relay.start(settings.frontdoor_bind, settings.frontdoor_whip_udp_port)
    # A WHIP client hanging up while its pod starts must end its session (whip.Whip.publish).
    runner = web.AppRunner(make_app(registry, relay), access_log=None, handler_cancellation=True)
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
    # WHIP sessions have no connection to close: their pods' channels end here, and with them
    # the sessions (INACTIVE), within the pod's grace period rather than aiohttp's 60 s wait.
    registry.end_all("front door stopping")
    await runner.cleanup()
    if relay is not None:
        relay.close()
    await store.stop()
    await client.close()


def main() -> None:
    logs.setup()
    asyncio.run(serve(Settings()))


if __name__ == "__main__":
    main()
