"""The errors a subscriber received last, newest first, bounded in count and in bytes: what
the dashboard's feed shows and pages back through when there is no durable error log.

Each kept event is trimmed to ``max_event_bytes`` and carries ``received_at``, its
``fingerprint`` and a ``cursor`` (``m:<n>``, ``n`` growing with every error received), so a
page that starts below a cursor never repeats or skips an error, whatever arrives meanwhile.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any

from .tallies import bounded_event

CURSOR_PREFIX = "m:"


class RecentErrors:
    """At most ``max_events`` errors holding at most about ``max_bytes`` together."""

    def __init__(
        self,
        max_events: int = 2_000,
        *,
        max_bytes: int = 16 * 1024 * 1024,
        max_event_bytes: int = 16_384,
    ):
        if max_events < 1 or max_event_bytes < 1024 or max_bytes < max_event_bytes:
            raise ValueError("max_events >= 1, max_event_bytes >= 1024, max_bytes >= that")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_event_bytes = max_event_bytes
        self._items: deque[tuple[int, int, dict[str, Any]]] = deque()  # (n, bytes, event)
        self._bytes = 0
        self._next = 1
        self._lock = threading.Lock()

    def add(
        self, event: Mapping[str, Any], received_at: float, fingerprint: str, size: int
    ) -> dict[str, Any]:
        """Keep ``event`` (``size``: its bytes as received); returns the event kept."""
        kept = (
            bounded_event(event, self.max_event_bytes) if size > self.max_event_bytes else {**event}
        )
        kept["received_at"] = received_at
        kept["fingerprint"] = fingerprint
        size = min(size, self.max_event_bytes) + 128
        with self._lock:
            n = self._next
            self._next += 1
            kept["cursor"] = f"{CURSOR_PREFIX}{n}"
            self._items.appendleft((n, size, kept))
            self._bytes += size
            while len(self._items) > self.max_events or self._bytes > self.max_bytes:
                self._bytes -= self._items.pop()[1]
        return kept

    def __len__(self) -> int:
        return len(self._items)

    def newest(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` newest errors, newest first (the kept dicts: do not change them)."""
        with self._lock:
            return [event for _, _, event in islice(self._items, max(0, limit))]

    def page(
        self,
        before: int | None,
        limit: int,
        match: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``limit`` errors older than cursor number ``before`` (``None``: from the
        newest) that ``match``, newest first; and the cursor number of the next page (``None``
        when nothing older is kept)."""
        with self._lock:
            items = list(self._items)
        out: list[dict[str, Any]] = []
        last: int | None = None
        for n, _, event in items:
            if before is not None and n >= before:
                continue
            if match is not None and not match(event):
                continue
            if len(out) == limit:
                return out, last
            out.append(event)
            last = n
        return out, None

    def filtered(
        self, match: Callable[[Mapping[str, Any]], bool], limit: int
    ) -> list[dict[str, Any]]:
        return self.page(None, limit, match)[0]

    def stats(self) -> dict[str, Any]:
        return {"kept": len(self._items), "bytes": self._bytes, "max_events": self.max_events}


def parse_cursor(text: str) -> int:
    """The number in a memory cursor (``m:<n>``); ``ValueError`` for anything else."""
    if not text.startswith(CURSOR_PREFIX):
        raise ValueError("not a cursor of the subscriber's memory")
    number = int(text[len(CURSOR_PREFIX) :])
    if number < 0:
        raise ValueError("a negative cursor")
    return number
