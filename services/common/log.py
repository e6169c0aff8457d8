"""Structured logs: one JSON object per line, carrying the request id of the work in progress.

Tokens, secrets and passwords are never logged on purpose; as a second line of defence every
line is scrubbed of anything shaped like an Otesse token or secret before it is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

_SECRET_SHAPES = re.compile(
    r"otesse_(?:at|rt|cs)_[A-Za-z0-9_\-\.]+"  # access and refresh tokens, client secrets
    r"|(?i:bearer)\s+[A-Za-z0-9_\-\.~+/]+=*"  # any bearer credential
)
# Attributes every LogRecord has; anything else passed in ``extra=`` becomes a JSON field.
# uvicorn's "color_message" repeats "msg" with terminal colour codes.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {
    "message", "asctime", "color_message"}


# One encoder for every line (json.dumps with arguments builds a new one for each call).
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


def scrub(text: str) -> str:
    """Replaces anything shaped like a token or secret with a marker."""
    # Both shapes start with "otesse_" or, in any case, "bearer": an ASCII line holding neither
    # (almost every line) is returned without running the pattern over it.
    if text.isascii() and "otesse_" not in text and "bearer" not in text.lower():
        return text
    return _SECRET_SHAPES.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service
        # Every request writes an access line: the date and time to the second are formatted
        # once a second, not once a line.
        self._second = -1
        self._second_text = ""

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "request_id": request_id_var.get(),
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return scrub(_ENCODER.encode(entry))


def configure_logging(service: str, level: str = "INFO") -> None:
    """Routes every logger (uvicorn's and grpc's included) to JSON lines on stderr.

    A line carries none of what ``logging`` would otherwise look up for every record (the
    caller's file and line, the thread, the process: the logging HOWTO's "Optimization"
    section): at ``INFO``, as production runs, each request writes an access line in the
    gateway and in the service behind it, and those look-ups were a third of a line's cost.
    """
    logging._srcfile = None  # no stack walk to find the caller's file and line
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Access lines are written by our own middleware, with the request id.
    logging.getLogger("uvicorn.access").disabled = True
