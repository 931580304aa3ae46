"""Structured logs of the local stack's own processes: the project's JSON-lines format
(ingress_operator.logs), one event per line, with a `component` field.

Pass fields with `extra={"pod": "ns/name", ...}`; they become keys of the line.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from ingress_operator.logs import JsonFormatter, quiet


class _Component(logging.Filter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def filter(self, record: logging.LogRecord) -> bool:
        record.component = self.component
        return True


def setup_json_logging(component: str, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Route the root logger to `stream` (stderr by default) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_Component(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet()
