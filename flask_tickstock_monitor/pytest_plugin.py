"""A pytest plugin for applications' own test suites (registered through ``pytest11``).

``tickstock_events`` records what the monitor published, from the signals, so it works the same
with a real Redis and with ``memory://``. ``tickstock_memory_url`` is an embedded server of the
test's own.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from . import signals


class PublishedEvents:
    """What the monitor published while the fixture was active, in order."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []
        self.health: list[dict[str, Any]] = []
        self.invalidations: list[dict[str, Any]] = []
        self.dropped: list[tuple[str, int]] = []
        self._changed = threading.Condition()

    def _record(self, bucket: list[Any], value: Any) -> None:
        with self._changed:
            bucket.append(value)
            self._changed.notify_all()

    def on_error(self, sender: Any, event: dict[str, Any], **_: Any) -> None:
        self._record(self.errors, event)

    def on_health(self, sender: Any, event: dict[str, Any], **_: Any) -> None:
        self._record(self.health, event)

    def on_invalidation(self, sender: Any, message: dict[str, Any], **_: Any) -> None:
        self._record(self.invalidations, message)

    def on_drop(self, sender: Any, reason: str, count: int, **_: Any) -> None:
        self._record(self.dropped, (reason, count))

    def wait_for(self, predicate: Callable[[PublishedEvents], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate(self)`` holds; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def wait_for_errors(self, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        if not self.wait_for(lambda e: len(e.errors) >= count, timeout):
            raise AssertionError(f"expected {count} error event(s), got {len(self.errors)}")
        return list(self.errors)


@pytest.fixture
def tickstock_events() -> Iterator[PublishedEvents]:
    recorder = PublishedEvents()
    connections: list[tuple[Any, Callable[..., None]]] = [
        (signals.error_published, recorder.on_error),
        (signals.health_published, recorder.on_health),
        (signals.cache_invalidated, recorder.on_invalidation),
        (signals.event_dropped, recorder.on_drop),
    ]
    for signal, receiver in connections:
        signal.connect(receiver, weak=False)
    try:
        yield recorder
    finally:
        for signal, receiver in connections:
            signal.disconnect(receiver)


@pytest.fixture
def tickstock_memory_url() -> str:
    """A ``memory://`` URL of an embedded Redis that no other test shares."""
    return f"memory://test-{uuid.uuid4().hex}"
