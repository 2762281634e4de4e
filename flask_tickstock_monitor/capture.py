"""The errors plane: errors of one app, from Flask's request hooks, logging, blinker signals and
explicit calls, turned into queued events.

What runs on the thread that had the error (:meth:`ErrorCapture.capture` and the hooks) only
captures (a copy of the traceback's frames and a small request snapshot), throttles and
enqueues. :meth:`ErrorCapture._build`, which formats, truncates and scrubs, runs later on the
thread that consumes the item: the publisher's, or the durable error log's writer.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, got_request_exception

from . import categories, events, fingerprint, requestlog, signalcapture
from ._compat import CLOSES_REQUEST, current_request
from ._util import Throttle
from .chains import ChainMemo
from .echo import RecentIds
from .finish import OTEL, Finisher, trace_ids
from .flaskhooks import (
    CAPTURED,
    REQ_CAPTURED,
    REQ_HANDLED,
    exception_filter,
    exception_key,
    is_unhandled,
    needs_exception_signal,
    request_snapshot,
    wrap_error_handlers,
)
from .logcapture import MonitorLogHandler
from .tracebacks import ExceptionData, extract_exception
from .transport import Outgoing

if TYPE_CHECKING:
    from .state import MonitorState

_SEVERITIES = frozenset(events.SEVERITIES)


class ErrorCapture:
    """Turns errors of one app into queued events on ``state.publisher``."""

    def __init__(self, state: MonitorState):
        self.state = state
        config = state.config
        self.throttle = Throttle(config.throttle_limit, config.throttle_window)
        #: what this app published lately: a record naming one is an echo (see echo.py)
        self.recent_ids = RecentIds()
        self.log_handler: MonitorLogHandler | None = None
        self._set_up = False
        self._signal_connected = False
        self._setup_lock = threading.Lock()
        self._app_ref: weakref.ref[Flask] | None = None
        self.signal_receivers: list[tuple[Any, Callable[..., None]]] = []
        #: Called with each queued error item besides the publisher (the durable error log),
        #: so that they do not depend on Redis. A sink must not block.
        self.sinks: list[Callable[[Outgoing], None]] = []
        self.finisher = Finisher(state)
        self.chains = ChainMemo(config.max_traceback_chars)
        self.ignore = exception_filter(config.ignore_exceptions)
        # Bound once: ``self._build`` would make a new method object (one more object for the
        # garbage collector to track while the item waits in the queue) for every event.
        self._builder = self._build
        state.publisher.compact("error", config.channel_errors, self._builder)

        # The request hooks as plain functions, not bound methods: Flask and blinker check
        # every hook with ``inspect.iscoroutinefunction``, which takes a method apart first,
        # and blinker holds a method weakly through a Python-level ``WeakMethod``; a function
        # it holds through a plain weak reference. They live as long as this capture.
        def on_request_exception(sender: Flask, exception: BaseException, **_: Any) -> None:
            self.capture_unhandled(exception)

        def after_request(response: Any) -> Any:
            if response.status_code >= 500:
                self._on_error_response(response)
            return response

        def teardown(exc: BaseException | None) -> None:
            req = current_request()
            if req is not None:
                flags = req.__dict__
                if requestlog.REQ_PENDING in flags or requestlog.REQ_HELD in flags:
                    self.end_request(flags)

        self._on_request_exception = on_request_exception
        self._after_request = after_request
        self._teardown = teardown

    # the one entry point -------------------------------------------------------------------------

    def capture_unhandled(self, exc: BaseException, req: Any = None) -> None:
        """Queue an exception no error handler of the app took (see :func:`is_unhandled`)."""
        # positional: a keyword call costs the request more than this whole hook
        self.capture(None, exc, "error", None, None, None, None, "unhandled", None, False, req)

    def capture(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        severity: str = "error",
        component: str | None = None,
        context: Mapping[str, Any] | None = None,
        key: Any = None,
        category: str | None = None,
        origin: str = "explicit",
        http: tuple[str, str | None] | None = None,
        want_id: bool = True,
        req: Any = None,
        fingerprint: tuple[str, ...] | None = None,
        echo_of: str | None = None,
    ) -> str | None:
        """Queue an error event; returns its ``error_id``, or ``None`` when it was not queued.

        Positional on the hot paths (the monitor's ``publish_error`` and ``capture_exception``,
        the request hooks): a keyword call costs more than a quarter of the rest. ``req``: the
        request, when the caller has it (default: the current one, if any). ``want_id=False``
        (the automatic hooks, which never read it): the id is made on the publisher thread
        instead, a couple of microseconds off the request. ``fingerprint``: the parts of a
        fingerprint the caller chose (checked by the caller). ``echo_of``: the id of the
        received message whose handling logged this (see echo.py).

        The automatic events of a request (an exception no handler took, a 5xx) are sent at
        its end, with the log records about them attached (see requestlog.py)."""
        if severity not in _SEVERITIES:  # the check inline: a call less on every publish
            events.check_severity(severity)
        if category is not None:
            categories.check(category)
        if req is None:
            req = current_request()
        state = self.state
        if not state.active or not state.config.errors_enabled:
            return None
        if exc is not None:
            if getattr(exc, CAPTURED, False):
                return None
            if self.ignore is not None and self.ignore(type(exc)):
                state.publisher.count_drop("ignored")
                return None
            try:
                setattr(exc, CAPTURED, True)
            except (AttributeError, TypeError):  # cannot be marked: the request flag tells
                if req is not None and req.__dict__.get(REQ_CAPTURED) is exc:
                    return None
        if req is not None:
            req.__dict__[REQ_CAPTURED] = exc if exc is not None else True
        suppressed = 0
        if self.throttle.limit > 0:
            if key is None:
                key = exception_key(exc) if exc is not None else (component, message)
            allowed, suppressed = self.throttle.admit(key)
            if not allowed:
                state.publisher.count_drop("throttled")
                return None
        if not self.sinks and state.publisher.full:
            # Redis is down or slow and the queue is full: the event would be dropped at the
            # queue, so it is dropped here, before the capture's work (counted the same).
            state.publisher.count_drop("queue_full")
            return None
        # a hook never reads the id: take a number now, make its text on the publisher thread
        error_id: str | int = events.new_id() if want_id else events.id_number()
        if req is not None:
            fields = request_snapshot(state.config, state.scrubber, req)
            if context:
                fields.update(context)
        else:
            fields = dict(context) if context else {}
        # Only plain data goes into the queue: the exception would keep the request's frames alive.
        exc_data = extract_exception(exc) if exc is not None else None
        timestamp = time.time()
        extra: dict[str, Any] | None = trace_ids() if OTEL else None  # this thread's span
        if fingerprint is not None:
            extra = {**(extra or {}), "fingerprint": fingerprint}
        if echo_of is not None:
            extra = {**(extra or {}), "echo_of": echo_of}
        # The builder's arguments, queued as they are (see Publisher.compact: one object for
        # the collector, not two), unless a sink shares the build.
        args = (
            error_id,
            exc_data,
            message,
            http,
            severity,
            component,
            fields,
            timestamp,
            suppressed,
            category,
            origin,
            extra,
        )
        if req is not None and (origin == "unhandled" or origin == "handled_5xx"):
            previous = req.__dict__.get(requestlog.REQ_PENDING)
            if previous is not None:  # a second error in one request: the first goes now
                self._submit(previous)
            req.__dict__[requestlog.REQ_PENDING] = args  # sent by end_request
            requestlog.watch_end(req, self.end_request)
            return None
        accepted = self._submit(args)
        return error_id if accepted and want_id else None  # type: ignore[return-value]

    def _submit(self, args: tuple[Any, ...]) -> bool:
        publisher = self.state.publisher
        if not self.sinks:
            return publisher.submit(args)
        # positional (channel, payload, build, kind, args, severity): 4x cheaper than keywords
        item = Outgoing(
            self.state.config.channel_errors, None, self._builder, "error", args, args[4]
        )
        for sink in self.sinks:
            sink(item)
        return publisher.submit(item)

    def end_request(self, flags: dict[str, Any]) -> None:
        """At a request's teardown: send its event with the records that belong to it; records
        held for it, when no event was made, are published as they would have been."""
        held = requestlog.take_held(flags)
        args = flags.pop(requestlog.REQ_PENDING, None)
        if args is None:
            if self.log_handler is not None:
                for record in held:
                    self.log_handler.publish(record)
            return
        for record in held:
            requestlog.attach(flags, record)
        requestlog.breadcrumbs(flags, args[6])
        self._submit(args)

    def _build(
        self,
        error_id: str | int,
        exc_data: ExceptionData | None,
        message: str | None,
        http: tuple[str, str | None] | None,
        severity: str,
        component: str | None,
        context: dict[str, Any],
        timestamp: float,
        suppressed: int,
        category: str | None,
        origin: str,
        extra: dict[str, Any] | None,
    ) -> dict[str, Any]:
        state = self.state
        config = state.config
        if exc_data:  # what the chain gives, made once per chain (see chains.py)
            error_type, described, traceback, default, type_category = self.chains.facts(exc_data)
        else:
            error_type = described = traceback = default = type_category = None
        if message is None:
            if http is not None:
                message = f"HTTP {http[0]} from {http[1]}" + (f": {described}" if described else "")
            else:
                message = described or "error"
        if type(message) is not str:
            message = str(message)
        if not isinstance(error_id, str):
            error_id = events.id_text(error_id)
        event = events.error_event(
            config.source,
            component or config.component,
            severity,
            message
            if len(message) <= config.max_message_chars
            else events.truncate(message, config.max_message_chars),
            timestamp,
            error_id,
            error_type,
            traceback,
            state.scrubber.scrub(context),
        )
        event["origin"] = origin
        event["instance_id"] = state.instance_id
        if suppressed:
            event["suppressed"] = suppressed
        event["category"] = category or type_category or categories.derive((), component)
        # What we publish, remembered before it is sent so that its echo (a re-log of the
        # received message) can never beat it back: see echo.py.
        self.recent_ids.add(error_id)
        if default is None:
            default = fingerprint.message_fingerprint(event["component"], event["message"])
        return self.finisher.finish(event, default, extra)

    # Flask ------------------------------------------------------------------------------------

    def attach_to_app(self, app: Flask) -> None:
        # One request hook sees every error response: an exception no handler took reaches it
        # as Flask's 500 (see _on_error_response), a handled one as the handler's response.
        # Flask's got_request_exception is connected only where it sees what the hook cannot
        # (needs_exception_signal): blinker's dispatch of a receiver costs an erroring request
        # about as much as the capture itself.
        self._app_ref = weakref.ref(app)
        app.before_request(self._before_request)
        app.after_request(self._after_request)
        if not CLOSES_REQUEST:
            app.teardown_request(self._teardown)
        self._connect_signal_if_needed(app)

    def _connect_signal_if_needed(self, app: Flask) -> None:
        wanted = needs_exception_signal(app)
        with self._setup_lock:  # first requests may arrive on several threads at once
            if wanted == self._signal_connected:
                return
            if wanted:
                # Weakly: the app holds this capture (app.extensions), and a strong reference
                # from Flask's module-level signal would keep every app that ever had a
                # monitor alive.
                got_request_exception.connect(self._on_request_exception, app)
            else:
                got_request_exception.disconnect(self._on_request_exception, app)
            self._signal_connected = wanted

    def _before_request(self) -> None:
        # Once, as setup ends at the first request: testing, debug (``app.run(debug=True)``),
        # PROPAGATE_EXCEPTIONS and other extensions are set up by then. And the app's own
        # error handlers swallow exceptions before any hook sees them: wrap them, every one
        # registered by now, so that a 5xx they return can say what the exception was.
        # Wrapping the handlers, not handle_user_exception, keeps our frame out of every
        # traceback the app formats.
        if self._set_up:
            return
        self._set_up = True
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        self._connect_signal_if_needed(app)
        wrap_error_handlers(app)  # to know what they handle, and what they log while at it
        # Needed once only: later requests need not call it. A new list, not a removal from
        # the one Flask may be iterating on another thread right now.
        funcs = app.before_request_funcs
        funcs[None] = [f for f in funcs.get(None, ()) if f != self._before_request]

    def _on_error_response(self, response: Any) -> None:
        req = current_request()  # an after-request hook: always inside a request
        flags = req.__dict__
        if flags.get(REQ_CAPTURED):
            return
        unhandled = sys.exc_info()[1]
        if unhandled is not None and is_unhandled(unhandled):
            # Flask's handle_exception is making this 500 of an exception no handler took
            # (an app's errorhandler(500) included, which gets Flask's InternalServerError).
            self.capture_unhandled(unhandled, req)
            return
        if not self.state.config.capture_5xx:
            return
        exc = flags.get(REQ_HANDLED)
        if exc is not None and getattr(exc, CAPTURED, False):
            return
        endpoint = req.endpoint
        status = response.status_code
        self.capture(
            None,
            exc,
            "error",
            None,
            {"status": status},
            ("5xx", endpoint, status, type(exc)),
            None,
            "handled_5xx",
            (response.status, endpoint),
            False,
            req,
        )

    # logging ----------------------------------------------------------------------------------

    def attach_logging(self) -> None:
        config = self.state.config
        if not config.capture_logging:
            return
        self.log_handler = MonitorLogHandler(self, config.log_level, config.ignore_loggers)
        self.log_handler.install()

    def detach(self) -> None:
        app = self._app_ref() if self._app_ref is not None else None
        if app is not None and self._signal_connected:
            got_request_exception.disconnect(self._on_request_exception, app)
            self._signal_connected = False
        if self.log_handler is not None:
            self.log_handler.uninstall()
            self.log_handler = None
        for signal, receiver in self.signal_receivers:
            signal.disconnect(receiver)
        self.signal_receivers.clear()

    # blinker ----------------------------------------------------------------------------------

    def track_signal(self, signal: Any, **options: Any) -> Callable[..., None]:
        return signalcapture.track_signal(self, signal, **options)
