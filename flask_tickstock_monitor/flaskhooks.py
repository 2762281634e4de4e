"""Flask's side of catching errors: which exceptions Flask itself caught, which requests carry an
error, the app's own error handlers wrapped to say what they handled. No state of ours here."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from flask import Flask

from ._compat import WSGI_APP_CODE, current_request
from .config import MonitorConfig
from .scrub import Scrubber

#: On an exception: it was published (however many hooks see it, one error is one event).
CAPTURED = "__tickstock_captured__"
#: On the request object (one per request, where ``g`` may be shared by requests made in an
#: app context pushed by the caller): what was captured in it, and the exception an error
#: handler of the app turned into a response.
REQ_CAPTURED = "_tickstock_captured"
REQ_HANDLED = "_tickstock_handled_exc"
#: Set while one of the app's error handlers runs (what it logs is about the error it handles).
REQ_HANDLING = "_tickstock_handling"


def exception_key(exc: BaseException) -> tuple[Any, ...]:
    """Same type raised at the same place: the innermost frame of the traceback."""
    tb = exc.__traceback__
    if tb is None:
        return (type(exc), str(exc)[:200])
    while tb.tb_next is not None:
        tb = tb.tb_next
    return (type(exc), tb.tb_frame.f_code.co_filename, tb.tb_lineno)


def exception_filter(ignored: tuple[type | str, ...]) -> Callable[[type], bool] | None:
    """A test of exception types against ``TICKSTOCK_MONITOR_IGNORE_EXCEPTIONS`` (classes, or
    bare or qualified class names, subclasses included), remembered per type; ``None`` when
    nothing is ignored."""
    if not ignored:
        return None
    classes = tuple(item for item in ignored if isinstance(item, type))
    names = frozenset(item for item in ignored if isinstance(item, str))
    verdicts: dict[type, bool] = {}

    def is_ignored(kind: type) -> bool:
        verdict = verdicts.get(kind)
        if verdict is None:
            verdict = issubclass(kind, classes) or any(
                base.__name__ in names or f"{base.__module__}.{base.__qualname__}" in names
                for base in kind.__mro__
            )
            if len(verdicts) < 1_000:
                verdicts[kind] = verdict
        return verdict

    return is_ignored


def request_snapshot(config: MonitorConfig, scrubber: Scrubber, req: Any) -> dict[str, Any]:
    """The small, safe part of a request: never bodies, cookies or IP by default."""
    snapshot: dict[str, Any] = {"endpoint": req.endpoint, "method": req.method, "path": req.path}
    if config.include_query and req.args:
        snapshot["query"] = req.args.to_dict(flat=False)
    if config.include_headers:
        snapshot["headers"] = scrubber.headers_view(req.headers.items())
    if config.include_client_ip:
        snapshot["client_ip"] = req.remote_addr
    return snapshot


def is_unhandled(exc: BaseException) -> bool:
    """``exc`` is what Flask's ``wsgi_app`` caught: an exception no error handler took."""
    tb = exc.__traceback__
    return tb is not None and tb.tb_frame.f_code is WSGI_APP_CODE


def needs_exception_signal(app: Flask) -> bool:
    """Some errors of ``app`` reach Flask's ``got_request_exception`` and no 5xx response: the
    app propagates exceptions (testing, debug: ``handle_exception`` re-raises instead of making
    a 500), or an extension routes its errors (Flask-RESTful and Flask-RESTX set the app's
    ``handle_exception`` and ``handle_user_exception``, and send the signal for what they
    swallow, which then has no exception our hooks can see)."""
    if "handle_exception" in app.__dict__ or "handle_user_exception" in app.__dict__:
        return True
    propagate = app.config.get("PROPAGATE_EXCEPTIONS")
    return bool(app.testing or app.debug) if propagate is None else bool(propagate)


def _note_handled(error: Any) -> dict[str, Any] | None:
    req = current_request()
    if req is None:  # a handler called outside a request: nothing to note it on
        return None
    flags: dict[str, Any] = req.__dict__
    flags[REQ_HANDLED] = error
    flags[REQ_HANDLING] = error
    return flags


def _done_handling(flags: dict[str, Any] | None) -> None:
    if flags is not None:
        flags.pop(REQ_HANDLING, None)


def _remember_handled(handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
    if getattr(handler, CAPTURED, False):
        return handler
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def remember_async(error: Any) -> Any:
            flags = _note_handled(error)
            try:
                return await handler(error)
            finally:
                _done_handling(flags)

        wrapped: Callable[[Any], Any] = remember_async
    else:

        @functools.wraps(handler)
        def remember(error: Any) -> Any:
            flags = _note_handled(error)
            try:
                return handler(error)
            finally:
                _done_handling(flags)

        wrapped = remember
    setattr(wrapped, CAPTURED, True)
    return wrapped


def wrap_error_handlers(app: Flask) -> None:
    """Make each registered error handler (app and blueprints) note the error it handles."""
    for by_code in app.error_handler_spec.values():
        for by_class in by_code.values():
            for kind, handler in list(by_class.items()):
                by_class[kind] = _remember_handled(handler)
