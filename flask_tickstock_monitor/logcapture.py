"""Error log records as events: a handler on the root logger, built never to publish its own
echo (TickStockAppV2 re-logs every message it receives on ``tickstock:errors``; see echo.py),
nor a record twice (the records about a request's error belong to its event: requestlog.py; a
record belongs to one app: the one whose context it was logged in, else the first app set up
on each monitor)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from . import echo, requestlog
from ._compat import current_request, cv_app
from ._util import on_monitoring_thread
from .constants import DEFAULT_IGNORE_LOGGERS
from .flaskhooks import CAPTURED, is_unhandled
from .transport import Dropped

if TYPE_CHECKING:
    from .capture import ErrorCapture


#: What every record has: anything else on one came with ``extra=`` (structlog's and
#: python-json-logger's way of passing fields) and goes into the event's context.
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
#: Our own loggers: what the monitor says about itself is never an event, nor a drop.
_OWN_LOGGER = DEFAULT_IGNORE_LOGGERS[0]

#: The handlers installed, in the order their apps were set up (replaced, never changed).
_handlers: tuple[MonitorLogHandler, ...] = ()
_handlers_lock = threading.Lock()


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


def _ignore_reason(pattern: str) -> str:
    """Why a record of an ignored logger is not published, counted as that (``""``: not
    counted): TickStockAppV2's re-logging loggers make echoes; others are the app's choice."""
    if pattern == _OWN_LOGGER:
        return ""
    return "echo" if pattern in DEFAULT_IGNORE_LOGGERS else "ignored"


class MonitorLogHandler(logging.Handler):
    """Publishes log records at or above a level, built never to publish its own echo."""

    def __init__(self, capture: ErrorCapture, level: int, ignore: tuple[str, ...]):
        super().__init__(level)
        self.capture = capture
        self.app = capture.state.app
        self.monitor = capture.state.monitor
        self.ignore = ignore
        self._ignored: dict[str, str | None] = {}

    def install(self) -> None:
        global _handlers
        with _handlers_lock:
            _handlers = (*_handlers, self)
        logging.getLogger().addHandler(self)

    def uninstall(self) -> None:
        global _handlers
        logging.getLogger().removeHandler(self)
        with _handlers_lock:
            _handlers = tuple(h for h in _handlers if h is not self)

    def _owns(self) -> bool:
        """The record being emitted is this app's: logged in its context, or, outside the
        context of any app with a handler, this is the first handler of its monitor."""
        handlers = _handlers
        if len(handlers) < 2:
            return True
        ctx = cv_app.get(None)
        if ctx is not None:
            for handler in handlers:
                if handler.app is ctx.app:
                    return handler is self
        return next(h for h in handlers if h.monitor is self.monitor) is self

    def _ignored_reason(self, name: str) -> str | None:
        if name in self._ignored:
            return self._ignored[name]
        reason = next(
            (_ignore_reason(p) for p in self.ignore if name == p or name.startswith(p + ".")),
            None,
        )
        if len(self._ignored) < 10_000:
            self._ignored[name] = reason
        return reason

    def _count(self, reason: str) -> None:
        self.capture.state.publisher.count_drop(reason)

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        """:meth:`emit` without the handler's lock: it only queues, which is safe on any
        thread, and under eventlet that lock is a Python-level RLock taken for every record."""
        if self.filters:
            kept = self.filter(record)
            if not kept:
                return False
            if isinstance(kept, logging.LogRecord):  # 3.12: a filter may return a new record
                record = kept
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if not self._owns():
                return  # another app's handler takes it
            if on_monitoring_thread():  # our threads' records (a subscriber's callbacks too)
                if echo.handling_ours(self.capture.recent_ids):
                    self._count("echo")
                return
            reason = self._ignored_reason(record.name)
            if reason is not None:
                if reason:
                    self._count(reason)
                return
            req = current_request()
            if req is not None:
                exc = record.exc_info[1] if record.exc_info else None
                flags = req.__dict__
                if (
                    exc is not None
                    and requestlog.REQ_PENDING not in flags
                    and requestlog.REQ_HANDLING not in flags
                    and not getattr(exc, CAPTURED, False)
                    and is_unhandled(exc)
                ):
                    # Flask's "Exception on /path", logged before the 500 reaches our hook:
                    # the event the hook would have made (what place() and publish() come to
                    # for it, without their steps: this is every unhandled error's record).
                    self.capture.capture_unhandled(exc, req)
                    return
                placed = requestlog.place(flags, record, exc)
                if placed:
                    if placed == requestlog.LATE:
                        self._count("merged")
                    elif placed == requestlog.HELD:
                        requestlog.watch_end(req, self.capture.end_request)
                    return
            self.publish(record, frames=req is None)
        except Dropped:
            pass
        except Exception:
            self.handleError(record)

    def publish(self, record: logging.LogRecord, *, frames: bool = False) -> None:
        """Queue ``record`` as an event, unless it is an echo (counted) or was published.
        ``frames``: look for a received message of ours in the frames of the logging call."""
        capture = self.capture
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            if getattr(exc, CAPTURED, False):
                return  # already published, by a hook or an earlier record
            if is_unhandled(exc):
                # Flask's "Exception on /path", logged before the 500 reaches our hook:
                # the event the hook would have made, with the request it would have seen.
                capture.capture_unhandled(exc)
                return
        text = record.getMessage()
        key = ("log", record.name, record.pathname, record.lineno)
        if frames and capture.throttle.blocked(key):
            frames = False  # the throttle drops it anyway: a storm does not pay for the look
        proof = echo.examine(record, text, capture.recent_ids, frames)
        if proof.ours is not None:
            self._count("echo")
            return
        context = {"logger": record.name, "function": record.funcName, "line": record.lineno}
        context.update(record_extras(record))
        capture.capture(
            message=text,
            exc=exc,
            severity=severity_for_level(record.levelno),
            component=record.name,
            context=context,
            key=key,
            origin="logging",
            want_id=False,
            echo_of=proof.foreign,
        )
