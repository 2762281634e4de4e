"""What we read of Flask's private parts, in one place, with a fallback where a release
dropped it."""

from __future__ import annotations

from typing import Any

from flask import Flask, has_request_context, request
from flask.globals import _cv_app as cv_app

__all__ = [
    "CLOSES_REQUEST",
    "WSGI_APP_CODE",
    "current_request",
    "cv_app",
    "public_current_request",
]

# Where Flask catches what no error handler took: the first frame of such an exception's
# traceback, while ``handle_exception`` turns it into a 500 (or re-raises it, when the app
# propagates exceptions).
WSGI_APP_CODE = Flask.wsgi_app.__code__


def public_current_request() -> Any:
    """The request being handled on this thread, or ``None``, through Flask's public API."""
    if has_request_context():  # not a try: raising costs more than asking, outside one
        return request._get_current_object()  # type: ignore[attr-defined]
    return None


# Flask 2.2 to 3.1 keep the active request context in this context variable: read directly,
# it costs a capture a Python call less than the public functions do (counted with callgrind:
# this and the monitor's ``state`` reading the app context so cut 3k of the 17k instructions
# of an explicit publish_error). Flask 3.2 merges the request context into the app context
# and drops the variable: there, the public functions.
try:
    from flask.globals import _cv_request
except ImportError:  # pragma: no cover - depends on the Flask version
    current_request = public_current_request
else:

    def current_request() -> Any:
        """The request being handled on this thread, or ``None`` outside one."""
        ctx = _cv_request.get(None)
        return None if ctx is None else ctx.request


#: Flask 2.2 to 3.1 call the request's ``close()`` as its context ends, after the teardown
#: functions, still inside it: a hook there costs only the requests that set it, where a
#: teardown function would cost every request (Flask checks each for a coroutine). Elsewhere
#: the capture registers a teardown function instead.
CLOSES_REQUEST = current_request is not public_current_request
