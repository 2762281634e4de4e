"""The last steps of an error event, on the thread that builds it (the publisher's, or the
durable error log's writer; never a request thread): its fingerprint, release and
environment, the trace it happened in, and the app's ``before_send``.

``before_send(event) -> event | None`` may edit the event or drop it (``None``: counted as
``dropped["before_send"]``). One that raises, or returns something that breaks the error
contract, is logged (rate-limited) and the event goes out as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import events, fingerprint
from ._util import RateLimitedLog
from .transport import Dropped

if TYPE_CHECKING:
    from .state import MonitorState

log = logging.getLogger("flask_tickstock_monitor.errors")

BeforeSend = Callable[[dict[str, Any]], "dict[str, Any] | None"]


class Finisher:
    """Finishes the error events of one app."""

    def __init__(self, state: MonitorState):
        self.state = state
        config = state.config
        self.release = config.release
        self.environment = config.environment
        self._log = RateLimitedLog(log)

    def before_send(self) -> BeforeSend | None:
        return self.state.config.before_send or self.state.monitor.before_send_hook

    def finish(
        self,
        event: dict[str, Any],
        default: str,
        extra: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """``event`` with its fingerprint (``default``, unless the caller chose its parts) and
        the rest; raises :class:`Dropped` when the app's ``before_send`` drops it."""
        parts = extra.get("fingerprint") if extra else None
        event["fingerprint"] = fingerprint.custom_fingerprint(parts, default) if parts else default
        if self.release is not None:
            event["release"] = self.release
        event["environment"] = self.environment
        if extra:
            for key in ("trace_id", "span_id", "echo_of"):
                if key in extra:
                    event[key] = extra[key]
        hook = self.before_send()
        return event if hook is None else self._run(hook, event)

    def _run(self, hook: BeforeSend, event: dict[str, Any]) -> dict[str, Any]:
        kept = {**event, "context": dict(event.get("context") or {})}  # what goes out on failure
        try:
            edited = hook(event)
        except Exception as exc:
            self._log.warning(
                ("raised", type(exc)), "before_send raised; the event is sent unedited",
                exc_info=True,
            )  # fmt: skip
            return kept
        if edited is None:
            raise Dropped("before_send")
        try:
            if not isinstance(edited, dict):
                raise events.InvalidMessage("not_object", type(edited).__name__)
            events.validate_error(edited)
        except events.InvalidMessage as exc:
            self._log.warning(
                ("invalid", exc.reason),
                "before_send returned an event that breaks the contract (%s); sent unedited",
                exc,
            )
            return kept
        edited["context"] = self.state.scrubber.scrub(edited.get("context") or {})
        return edited


def trace_ids() -> dict[str, str] | None:
    """The ids of the OpenTelemetry span active on this thread, if ``opentelemetry-api`` is
    installed and a span is recording or was propagated here; else ``None``."""
    if _otel_trace is None:
        return None
    context = _otel_trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


try:  # the "otel" extra: the API only, never an SDK
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - depends on the install
    _otel_trace = None  # type: ignore[assignment]

#: Whether :func:`trace_ids` can find anything (checked once, not on every error).
OTEL = _otel_trace is not None
