"""What error groups count with, bounded whatever arrives: counters that keep the most
counted keys and fold the rest into ``"_other"`` (totals stay exact), per-minute series of the
last hour, an event's keys cut to size, and an event trimmed to a size before it is kept.

Shared by the subscriber's :class:`groups.GroupBook` and the durable log's
:mod:`errorgroups`, so that both read an event the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import events
from .scrub import Scrubber

#: Dimensions an event is counted by, per group: the name in a group dict -> how to read it.
DIMENSIONS = ("severities", "components", "instances", "releases", "environments")
#: What ``errors_per_minute(by=…)`` can break the series down by (one to one with DIMENSIONS).
SERIES_BY = ("severity", "component", "instance", "release", "environment")
OTHER = "_other"
MINUTES = 60
DEFAULT_ENVIRONMENT = "production"
#: Breakdown keys (release names, components…) longer than this are cut.
MAX_KEY_CHARS = 200


class BoundedCounter:
    """Counts by key with at most ``capacity`` keys: a new key past that folds the least
    counted one into :attr:`other`, so the total is always exact and frequent keys stay."""

    __slots__ = ("counts", "other", "capacity")

    def __init__(self, capacity: int):
        self.counts: dict[str, int] = {}
        self.other = 0
        self.capacity = capacity

    def add(self, key: str, n: int = 1) -> bool:
        """Count ``key``; ``True`` when it was not among the keys kept."""
        counts = self.counts
        if key in counts:
            counts[key] += n
            return False
        if len(counts) >= self.capacity:
            least = min(counts, key=counts.__getitem__)
            self.other += counts.pop(least)
        counts[key] = n
        return True

    def total(self) -> int:
        return sum(self.counts.values()) + self.other

    def top(self, n: int) -> dict[str, int]:
        """The ``n`` most counted keys, most first; the rest under ``"_other"``."""
        return top_counts(self.counts, n, self.other)


def top_counts(counts: Mapping[str, int], n: int, other: int = 0) -> dict[str, int]:
    """The ``n`` largest of ``counts``, largest first, the rest (and ``other``) summed under
    ``"_other"``: a breakdown bounded for display, its total exact."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    out = dict(ordered[:n])
    rest = other + sum(count for _, count in ordered[n:])
    if rest:
        out[OTHER] = out.get(OTHER, 0) + rest
    return out


class MinuteSeries:
    """Counts per minute over the last :data:`MINUTES` minutes, in a ring that turns as time
    passes (minutes are epoch minutes: ``int(t // 60)``)."""

    __slots__ = ("buckets", "head")

    def __init__(self) -> None:
        self.buckets = [0] * MINUTES
        self.head: int | None = None  # the newest minute counted

    def add(self, minute: int, n: int = 1) -> None:
        head = self.head
        if head is None or minute - head >= MINUTES:
            self.buckets = [0] * MINUTES
            self.head = minute
        elif minute > head:
            for passed in range(head + 1, minute + 1):
                self.buckets[passed % MINUTES] = 0
            self.head = minute
        elif head - minute >= MINUTES:
            return  # older than the hour kept (a clock gone back): counted, not charted
        self.buckets[minute % MINUTES] += n

    def values(self, now_minute: int) -> list[int]:
        """The counts of the hour ending with ``now_minute``, oldest first."""
        head = self.head
        if head is None:
            return [0] * MINUTES
        buckets = self.buckets
        return [
            buckets[m % MINUTES] if head - MINUTES < m <= head else 0
            for m in range(now_minute - MINUTES + 1, now_minute + 1)
        ]


def count_minute(series: MinuteSeries, minute: int) -> None:
    """``series.add(minute)``, the usual case (a minute already begun) inline."""
    if series.head == minute:
        series.buckets[minute % MINUTES] += 1
    else:
        series.add(minute)


def _key(value: Any) -> str | None:
    if value is None:
        return None
    text = value if type(value) is str else str(value)
    return text if len(text) <= MAX_KEY_CHARS else text[:MAX_KEY_CHARS]


def keys_of(event: Mapping[str, Any]) -> tuple[str | None, ...]:
    """The event's key in each of :data:`DIMENSIONS` (``None``: not counted there). An event
    of an older publisher has no ``instance_id``: its ``source`` stands in."""
    get = event.get
    keys = (
        get("severity"),
        get("component"),
        get("instance_id") or get("source"),
        get("release"),
        get("environment") or DEFAULT_ENVIRONMENT,
    )
    for key in keys:
        if key is not None and (type(key) is not str or len(key) > MAX_KEY_CHARS):
            return tuple(map(_key, keys))
    return keys


def bounded_event(event: Mapping[str, Any], max_bytes: int) -> dict[str, Any]:
    """A copy of ``event`` that holds at most about ``max_bytes``: long strings cut (a
    traceback keeps its end, where the error is), large nested values cleaned to fit."""
    try:
        if len(events.dumps(event)) <= max_bytes:  # the usual event: one measure, no walk
            return dict(event)
    except Exception:  # e.g. a key JSON cannot hold: the walk below copes
        pass
    budget = max_bytes
    out: dict[str, Any] = {}
    for name, value in event.items():
        key = name if type(name) is str else str(name)
        if budget <= 0:
            out["_truncated_fields"] = len(event) - len(out)
            break
        kind = type(value)
        if kind is str:
            cap = max(64, min(budget, max_bytes // 2 if key == "traceback" else max_bytes // 8))
            if len(value) > cap:
                value = (
                    events.TRUNCATED + value[-(cap - len(events.TRUNCATED)) :]
                    if key == "traceback"
                    else events.truncate(value, cap)
                )
            budget -= len(value) + len(key)
        elif kind is dict or kind is list:
            size = len(events.dumps(value))
            if size > budget // 2:
                value = Scrubber(max_bytes=max(256, budget // 2)).scrub(value)
                size = len(events.dumps(value))
            budget -= size + len(key)
        elif not (kind is int or kind is float or kind is bool or value is None):
            value = events.truncate(str(value), 256)
            budget -= len(value)
        else:
            budget -= 24
        out[key[:MAX_KEY_CHARS]] = value
    return out
