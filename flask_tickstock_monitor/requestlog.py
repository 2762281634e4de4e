"""One event per failing request: the log records a request's error makes belong to its event.

Flask logs an exception no handler took ("Exception on /path"), then calls the app's 500
handler, which often logs about it again (TickStockAppV2's logs two ``FLASK-ERROR-500: …``
lines). So the event of a request's error is kept on the request until its teardown, and the
records that belong to it are attached to it (``context["log"]``, bounded, scrubbed with the
context) instead of becoming events of their own. A record belongs to it when it carries that
exception, or is logged by one of the app's error handlers while it handles an error.

A record logged by an error handler before anything was captured (a handled exception whose
5xx response is captured only after the handler) is held until the request's end: attached if
an event was made, else published as it would have been.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ._compat import CLOSES_REQUEST
from .flaskhooks import CAPTURED, REQ_CAPTURED, REQ_HANDLING

#: The queued-to-be arguments of this request's error event, sent at the request's teardown.
REQ_PENDING = "_tickstock_pending"
#: The records attached to it so far (breadcrumbs), and how many more there were.
REQ_LOG = "_tickstock_log"
#: Records an error handler logged before the request's event was made.
REQ_HELD = "_tickstock_held"
#: At most this many records are attached to one event, each message at most this long.
MAX_RECORDS = 20
MAX_RECORD_CHARS = 1_024

ATTACHED, HELD, LATE = "attached", "held", "late"


def related(flags: dict[str, Any], exc: BaseException | None) -> bool:
    """The record is about the request's error: logged by an error handler of the app, or
    carrying the exception that was captured (or the 500 Flask wrapped it in)."""
    if REQ_HANDLING in flags:
        return True
    if exc is None:
        return False
    original = getattr(exc, "original_exception", None)  # InternalServerError's
    return bool(getattr(exc, CAPTURED, False) or getattr(original, CAPTURED, False))


def place(flags: dict[str, Any], record: logging.LogRecord, exc: BaseException | None) -> str:
    """Where a record logged in a request goes: ``ATTACHED`` to the request's pending event,
    ``HELD`` until the request ends, ``LATE`` (about an event already sent), or ``""``: it is
    not about the request's error, publish it as usual."""
    if not related(flags, exc):
        return ""
    if REQ_PENDING in flags:
        attach(flags, record)
        return ATTACHED
    if REQ_HANDLING not in flags:
        return ""  # carries an exception captured before: the caller knows what to do
    if flags.get(REQ_CAPTURED):
        return LATE
    flags.setdefault(REQ_HELD, []).append(record)
    return HELD


def attach(flags: dict[str, Any], record: logging.LogRecord) -> None:
    log = flags.get(REQ_LOG)
    if log is None:
        log = flags[REQ_LOG] = [[], 0]
    if len(log[0]) >= MAX_RECORDS:
        log[1] += 1
        return
    try:
        text = record.getMessage()
    except Exception:  # a record logging itself would break: what its format was
        text = str(record.msg)
    log[0].append(
        {
            "logger": record.name,
            "level": record.levelname,
            "message": text if len(text) <= MAX_RECORD_CHARS else text[:MAX_RECORD_CHARS] + "…",
            "time": record.created,
        }
    )


def watch_end(req: Any, on_end: Callable[[dict[str, Any]], None]) -> None:
    """Have ``on_end(flags)`` run once as ``req`` ends: from its close(), which Flask calls
    after the teardown functions, still in the request (see _compat.CLOSES_REQUEST; elsewhere
    the capture's teardown function calls it)."""
    flags = req.__dict__
    if not CLOSES_REQUEST or "close" in flags:
        return
    close = type(req).close

    def end_then_close() -> None:
        del flags["close"]
        try:
            on_end(flags)
        finally:
            close(req)

    flags["close"] = end_then_close


def take_held(flags: dict[str, Any]) -> list[logging.LogRecord]:
    return flags.pop(REQ_HELD, None) or []


def breadcrumbs(flags: dict[str, Any], context: dict[str, Any]) -> None:
    """Put the request's attached records into its event's ``context``."""
    log = flags.pop(REQ_LOG, None)
    if log is None:
        return
    context["log"] = log[0]
    if log[1]:
        context["log_more"] = log[1]
