"""Error log records as events: a handler on the root logger, built never to publish its own
echo (TickStockAppV2 re-logs every message it receives on ``tickstock:errors``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._util import on_monitoring_thread
from .flaskhooks import CAPTURED, is_unhandled
from .transport import Dropped

if TYPE_CHECKING:
    from .capture import ErrorCapture


#: What every record has: anything else on one came with ``extra=`` (structlog's and
#: python-json-logger's way of passing fields) and goes into the event's context.
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record was given with ``extra=`` (scrubbed later with the context)."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_FIELDS and not key.startswith("_")
    }


def severity_for_level(levelno: int) -> str:
    if levelno >= logging.CRITICAL:
        return "critical"
    if levelno >= logging.ERROR:
        return "error"
    return "warning"


class MonitorLogHandler(logging.Handler):
    """Publishes log records at or above a level, built never to publish its own echo."""

    def __init__(self, capture: ErrorCapture, level: int, ignore: tuple[str, ...]):
        super().__init__(level)
        self.capture = capture
        self.ignore = ignore
        self._ignored: dict[str, bool] = {}

    def _is_ignored(self, name: str) -> bool:
        ignored = self._ignored.get(name)
        if ignored is None:
            ignored = any(name == p or name.startswith(p + ".") for p in self.ignore)
            if len(self._ignored) < 10_000:
                self._ignored[name] = ignored
        return ignored

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if on_monitoring_thread() or self._is_ignored(record.name):
                return
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None:
                if getattr(exc, CAPTURED, False):
                    return  # already published, by a hook or an earlier record
                if is_unhandled(exc):
                    # Flask's "Exception on /path", logged before the 500 reaches our hook:
                    # the event the hook would have made, with the request it would have seen.
                    self.capture.capture_unhandled(exc)
                    return
            text = record.getMessage()
            if self.capture.is_echo(record, text):
                return
            context = {"logger": record.name, "function": record.funcName, "line": record.lineno}
            context.update(record_extras(record))
            self.capture.capture(
                message=text,
                exc=exc,
                severity=severity_for_level(record.levelno),
                component=record.name,
                context=context,
                key=("log", record.name, record.pathname, record.lineno),
                origin="logging",
                want_id=False,
            )
        except Dropped:
            pass
        except Exception:
            self.handleError(record)
