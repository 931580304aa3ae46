"""`lki-operator`: run the kopf operator on the ingress namespace, with health and metrics."""

from __future__ import annotations

import kopf
import prometheus_client

from ingress_operator import (
    handlers,  # noqa: F401  (registers the handlers)
    logs,
)
from ingress_operator.config import Settings


def main() -> None:
    settings = Settings()
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=False)
    logs.quiet()
    prometheus_client.start_http_server(settings.operator_metrics_port, addr="127.0.0.1")
    kopf.run(
        namespaces=[settings.ingress_namespace],
        standalone=True,
        liveness_endpoint=f"http://127.0.0.1:{settings.operator_health_port}/healthz",
    )


if __name__ == "__main__":
    main()
