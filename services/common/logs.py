"""Structured (JSON lines) logging with secrets redacted."""

from __future__ import annotations

import logging
import sys
import time

import orjson

from services.common.telemetry import current_trace_ids

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any extra fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (ids := current_trace_ids()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(service: str, level: str) -> None:
    """Sends every log record to stderr as JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    grpc_core = logging.getLogger("grpc._cython.cygrpc")
    grpc_core.filters[:] = [f for f in grpc_core.filters if not isinstance(f, UndecodableHeaders)]
    grpc_core.addFilter(UndecodableHeaders())


class UndecodableHeaders(logging.Filter):
    """gRPC logs an ERROR with a traceback, and the raw value (a caller's token, maybe), each time
    a service reads a request header that is not UTF-8: a few per request, on every service. The
    service refuses such a request itself (401 or 400), so this is bad input, not a fault: one
    warning line without the value or a traceback, at most once per `every` seconds, with how
    many were left out since the last."""

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self.every = every
        self._last = float("-inf")
        self._left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Invalid encoding on"):
            return True
        now = time.monotonic()
        if now - self._last < self.every:
            self._left_out += 1
            return False
        record.msg, record.args = "a request header is not valid UTF-8; the request is refused", ()
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        record.left_out = self._left_out
        self._last, self._left_out = now, 0
        return True


class Throttled:
    """Logs a recurring warning at most once per `every` seconds (an outage must not flood the logs)."""

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self.logger = logger
        self.every = every
        self._last = float("-inf")

    def warning(self, message: str, **extra: object) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self.logger.warning(message, extra=extra)
