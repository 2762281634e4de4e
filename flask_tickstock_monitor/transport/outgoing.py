"""What the planes hand the publisher: an :class:`Outgoing` item, and :class:`Dropped`, which a
builder raises to drop one on purpose (counted by its reason)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class Dropped(Exception):
    """Raised by a formatter to drop an item on purpose; ``reason`` is counted."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Outgoing:
    """One queued item: a channel and either a ready payload or a builder run on the thread
    as ``build(*args)`` (a tuple, not a closure: fewer objects for the GC while queued)."""

    channel: str
    payload: dict[str, Any] | None = None
    build: Callable[..., dict[str, Any]] | None = None
    kind: str = "event"
    args: tuple[Any, ...] = ()
    #: An error's severity, known before it is built, so a sink can filter without building.
    severity: str | None = None
    #: also keep the message under this key (with ``ttl`` seconds) for late subscribers
    store_key: str | None = None
    ttl: float = 0.0
    #: send without lingering for company (a status change, a cache invalidation)
    urgent: bool = False

    def resolve(self) -> dict[str, Any]:
        """The message, built once: another consumer (the error log) reuses what was built.
        The two may build it at the same time, which is harmless: a build is deterministic
        (the same ``error_id``). Once built, ``args`` are let go (an error's context and
        traceback data, while the item waits in a batch or the error log's buffer); they are
        read before ``payload``, which is set before they are cleared, so a concurrent resolve
        sees either the arguments or the message."""
        args = self.args
        payload = self.payload
        if payload is None:
            assert self.build is not None
            payload = self.payload = self.build(*args)
            self.args = ()
        return payload
