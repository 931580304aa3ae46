"""`lki-media`: the media pod of one live session (see ingress_pod.session).

Exit codes: 0 when the session ended normally (end of input, SIGTERM, or it was not or no
longer the ingress's current session), 1 after writing ENDPOINT_ERROR (or when the CR could
not be read), 2 for an invalid environment.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from lightkube.core.exceptions import ConfigError
from pydantic import ValidationError

from ingress_operator import logs
from ingress_operator.kube import Kube, connect
from ingress_pod import metrics
from ingress_pod.config import MediaSettings
from ingress_pod.publish import redact_tokens
from ingress_pod.session import Session

log = logging.getLogger("ingress_pod")


class _RedactTokens(logging.Filter):
    """The rtc SDK logs its connect errors with the access token in them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_tokens(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class _SessionFields(logging.Filter):
    """Stamps every log line with the session it belongs to."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self.fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            setattr(record, key, value)
        return True


async def _main(settings: MediaSettings, fields: dict[str, str]) -> int:
    try:
        client = connect(settings.ingress_namespace)
    except ConfigError as err:
        log.error("no Kubernetes credentials", extra={"error": str(err)})
        return 1
    runner = await metrics.serve(settings.pod_ip, settings.media_port)
    try:
        # The ingress id is known once the CR is read: every line carries it from then on.
        session = Session(
            settings,
            Kube(client, settings.ingress_namespace),
            on_ingress_id=lambda i: fields.update(ingress_id=i),
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, session.stop)
        return await session.run()
    finally:
        await client.close()
        await runner.cleanup()


def main() -> None:
    """Entry point of the `lki-media` console script."""
    logs.setup()
    logging.captureWarnings(True)  # library warnings become JSON lines too
    try:
        settings = MediaSettings()  # from the environment
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in err.errors())
        log.error("invalid environment", extra={"error": problems})
        sys.exit(2)
    logging.getLogger().setLevel(settings.log_level)
    fields = {"ingress": settings.ingress_name, "resource_id": settings.resource_id}
    for handler in logging.getLogger().handlers:
        handler.addFilter(_SessionFields(fields))
        handler.addFilter(_RedactTokens())
    sys.exit(asyncio.run(_main(settings, fields)))


if __name__ == "__main__":
    main()
