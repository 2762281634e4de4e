"""Blinker signals as error events: ``monitor.track_signal(signal)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import events

if TYPE_CHECKING:
    from .capture import ErrorCapture


def track_signal(
    capture: ErrorCapture,
    signal: Any,
    *,
    severity: str = "error",
    message: str | None = None,
    component: str | None = None,
) -> Callable[..., None]:
    """Queue an error event on ``capture`` each time ``signal`` is sent, its kwargs as context."""
    events.check_severity(severity)
    name = getattr(signal, "name", repr(signal))

    def receiver(sender: Any, **kwargs: Any) -> None:
        exc = next((v for v in kwargs.values() if isinstance(v, BaseException)), None)
        context = {k: v for k, v in kwargs.items() if v is not exc}
        context["signal"] = name
        if sender is not None:
            context["sender"] = getattr(sender, "name", None) or repr(sender)[:200]
        capture.capture(
            message=message or (f"{name}: {exc}" if exc is not None else f"signal {name}"),
            exc=exc,
            severity=severity,
            component=component,
            context=context,
            key=("signal", name, type(exc)),
            origin="signal",
            want_id=False,
        )

    signal.connect(receiver, weak=False)
    capture.signal_receivers.append((signal, receiver))
    return receiver
