"""`lki-operator`: run the kopf operator on the ingress namespace, with health and metrics."""

from __future__ import annotations

import logging

import kopf
import prometheus_client

from ingress_operator import handlers, logs  # noqa: F401  (importing handlers registers them)
from ingress_operator.config import Settings


def main() -> None:
    settings = Settings()
    logs.setup()  # kopf's per-object records keep their object reference as `k8s_ref`
    logging.getLogger("kopf.objects").addFilter(
        # kopf logs a success line for every watch event handled, drowning the rest; failures
        # still show
        lambda record: (
            not (record.getMessage().startswith("Handler '") and record.getMessage().endswith(" succeeded."))
        )
    )
    prometheus_client.start_http_server(settings.operator_metrics_port, addr=settings.operator_bind)
    kopf.run(
        namespaces=[settings.ingress_namespace],
        standalone=True,
        liveness_endpoint=f"http://{settings.operator_bind}:{settings.operator_health_port}/healthz",
    )


if __name__ == "__main__":
    main()
