"""`lki-shim`: serve LiveKit's Ingress API over the LiveKitIngress custom resources."""

from __future__ import annotations

from aiohttp import web

from ingress_operator import logs
from ingress_operator.config import Settings
from ingress_operator.shim.app import make_app


def main() -> None:
    logs.setup()
    settings = Settings()
    if not settings.livekit_api_key or not settings.livekit_api_secret.get_secret_value():
        raise SystemExit(
            "lki-shim: set LIVEKIT_API_KEY and LIVEKIT_API_SECRET (the keys API callers sign with)"
        )
    web.run_app(make_app(settings), host=settings.shim_host, port=settings.shim_port, print=None)


if __name__ == "__main__":
    main()
