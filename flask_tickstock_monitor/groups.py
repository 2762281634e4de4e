"""Error groups on the subscriber side: every event of one error counted under its fingerprint.

An event alone cannot say "new since the deploy" or "how often"; its group can: an exact
count, when it was first and last seen, a per-minute series over the last hour, in which
releases, environments and instances, and whether it is new or came back (a regression). The
book is bounded whatever arrives: at most ``max_groups`` groups (the least recently seen one
goes first, counted), each breakdown at most ``top`` entries shown (the rest folded into
``"_other"``, totals exact), each kept event trimmed to ``max_event_bytes``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from . import events
from .fingerprint import event_fingerprint

STATUSES = ("open", "resolved", "ignored")
SORTS = ("last_seen", "count")
#: Dimensions an event is counted by, per group: the name in a group dict -> how to read it.
DIMENSIONS = ("severities", "components", "instances", "releases", "environments")
#: What ``errors_per_minute(by=…)`` can break the series down by (one to one with DIMENSIONS).
SERIES_BY = ("severity", "component", "instance", "release", "environment")
OTHER = "_other"
MINUTES = 60
#: A group is ``new`` this long after it was first seen.
NEW_FOR = 3600.0
DEFAULT_ENVIRONMENT = "production"
#: Breakdown keys (release names, components…) longer than this are cut.
MAX_KEY_CHARS = 200


class Added(NamedTuple):
    """What :meth:`GroupBook.add` did: ``new`` — the book had no such group; ``regression`` —
    this event made the group a regression (it had been resolved, or it is seen in a release
    it was never seen in before)."""

    fingerprint: str
    new: bool
    regression: bool
    status: str
    times_seen: int  # the group's count with this event


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


def _count(series: MinuteSeries, minute: int) -> None:
    if series.head == minute:
        series.buckets[minute % MINUTES] += 1
    else:
        series.add(minute)


class _Group:
    __slots__ = (
        "fingerprint",
        "count",
        "first_seen",
        "last_seen",
        "last_event",
        "breakdown",
        "series",
        "status",
        "regression",
    )

    def __init__(self, fingerprint: str, seen: float, capacity: int):
        self.fingerprint = fingerprint
        self.count = 0
        self.first_seen = self.last_seen = seen
        self.last_event: dict[str, Any] = {}
        self.breakdown = tuple(BoundedCounter(capacity) for _ in DIMENSIONS)
        self.series = MinuteSeries()
        self.status = "open"
        self.regression = False

    def to_dict(self, now: float, top: int) -> dict[str, Any]:
        minute = int(now // 60)
        event = self.last_event
        group: dict[str, Any] = {
            "fingerprint": self.fingerprint,
            "message": event.get("message"),
            "error_type": event.get("error_type"),
            "count": self.count,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }
        for name, counter in zip(DIMENSIONS, self.breakdown, strict=True):
            group[name] = counter.top(top)
        group.update(
            series=self.series.values(minute),
            series_start=float((minute - MINUTES + 1) * 60),
            status=self.status,
            new=now - self.first_seen < NEW_FOR,
            regression=self.regression,
            last_event=dict(event),
        )
        return group


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
                value = events.Scrubber(max_bytes=max(256, budget // 2)).scrub(value)
                size = len(events.dumps(value))
            budget -= size + len(key)
        elif not (kind is int or kind is float or kind is bool or value is None):
            value = events.truncate(str(value), 256)
            budget -= len(value)
        else:
            budget -= 24
        out[key[:MAX_KEY_CHARS]] = value
    return out


class GroupBook:
    """The error groups a subscriber has seen, by fingerprint. Thread-safe (one lock).

    ``clock`` (epoch seconds) decides the series' minutes and what is ``new``; pass one in
    tests. ``top``: entries shown per breakdown (twice as many are counted exactly).
    """

    def __init__(
        self,
        *,
        max_groups: int = 1_000,
        top: int = 20,
        max_event_bytes: int = 65_536,
        clock: Callable[[], float] = time.time,
    ):
        if max_groups < 1 or top < 1 or max_event_bytes < 1024:
            raise ValueError("max_groups and top must be positive, max_event_bytes >= 1024")
        self.max_groups = max_groups
        self.top = top
        self.max_event_bytes = max_event_bytes
        self.clock = clock
        self._groups: OrderedDict[str, _Group] = OrderedDict()  # least recently seen first
        self._lock = threading.Lock()
        # the errors-per-minute charts: per SERIES_BY dimension, a series per key
        self._by_key: dict[str, dict[str, MinuteSeries]] = {by: {} for by in SERIES_BY}
        self._total = MinuteSeries()
        self.events = 0
        self.evicted = 0
        self.computed_fingerprints = 0

    # adding -------------------------------------------------------------------------------

    def add(self, event: Mapping[str, Any], received_at: float | None = None) -> Added:
        """Count ``event`` (a validated error event) in its group."""
        seen = self.clock() if received_at is None else float(received_at)
        given = event.get("fingerprint")
        fingerprint = event_fingerprint(event)  # ``given`` itself when it is one
        keys = keys_of(event)
        kept = bounded_event(event, self.max_event_bytes)
        minute = int(seen // 60)
        with self._lock:
            self.events += 1
            if fingerprint is not given:
                self.computed_fingerprints += 1
            group = self._groups.get(fingerprint)
            new = group is None
            if group is None:
                if len(self._groups) >= self.max_groups:
                    self._groups.popitem(last=False)
                    self.evicted += 1
                group = self._groups[fingerprint] = _Group(fingerprint, seen, 2 * self.top)
            else:
                self._groups.move_to_end(fingerprint)
            regression = self._regresses(group, keys[3])
            group.count += 1
            group.first_seen = min(group.first_seen, seen)
            group.last_seen = max(group.last_seen, seen)
            group.last_event = kept
            # inline, the usual case first: a key already counted, a minute already begun
            for counter, key in zip(group.breakdown, keys, strict=True):
                if key is not None:
                    if key in counter.counts:
                        counter.counts[key] += 1
                    else:
                        counter.add(key)
            _count(group.series, minute)
            self._chart(minute, keys)
            return Added(fingerprint, new, regression, group.status, group.count)

    def _regresses(self, group: _Group, release: str | None) -> bool:
        """Apply the regression rules before ``group`` counts the event; whether it regressed.
        An ignored group stays ignored and is never marked."""
        if group.status == "resolved":
            group.status = "open"
            group.regression = True
            return True
        if group.status == "open" and release is not None:
            releases = group.breakdown[3]
            if release not in releases.counts and releases.total() > 0:
                was = group.regression
                group.regression = True
                return not was
        return False

    def _chart(self, minute: int, keys: tuple[str | None, ...]) -> None:
        _count(self._total, minute)
        for lines, key in zip(self._by_key.values(), keys, strict=True):
            if key is None:
                continue
            line = lines.get(key)
            if line is None:
                if len(lines) >= self.top:
                    key = OTHER  # the charts keep the first keys seen; the rest are one line
                    line = lines.get(key)
                if line is None:
                    line = lines[key] = MinuteSeries()
            _count(line, minute)

    # status -------------------------------------------------------------------------------

    def set_status(self, fingerprint: str, status: str) -> bool:
        """Resolve, ignore or reopen a group; ``False`` when there is no such group. Resolving
        or reopening clears its regression mark."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        with self._lock:
            group = self._groups.get(fingerprint)
            if group is None:
                return False
            group.status = status
            if status != "ignored":
                group.regression = False
            return True

    def resolve(self, fingerprint: str) -> bool:
        return self.set_status(fingerprint, "resolved")

    def ignore(self, fingerprint: str) -> bool:
        return self.set_status(fingerprint, "ignored")

    def reopen(self, fingerprint: str) -> bool:
        return self.set_status(fingerprint, "open")

    # reading ------------------------------------------------------------------------------

    def groups(
        self, sort: str = "last_seen", status: str | None = None, limit: int | None = 100
    ) -> list[dict[str, Any]]:
        """Groups as dicts (see SHAPES.md), most recent (or most counted) first."""
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        now = self.clock()
        with self._lock:
            chosen: Iterable[_Group] = self._groups.values()
            if status is not None:
                chosen = [g for g in chosen if g.status == status]
            if sort == "count":
                ordered = sorted(chosen, key=lambda g: (-g.count, -g.last_seen))
            else:
                ordered = sorted(chosen, key=lambda g: -g.last_seen)
            if limit is not None:
                ordered = ordered[: max(0, limit)]
            return [group.to_dict(now, self.top) for group in ordered]

    def get(self, fingerprint: str) -> dict[str, Any] | None:
        now = self.clock()
        with self._lock:
            group = self._groups.get(fingerprint)
            return None if group is None else group.to_dict(now, self.top)

    def errors_per_minute(self, by: str = "severity") -> dict[str, Any]:
        """Events per minute over the last hour, all groups together, a series per value of
        ``by`` (the first ``top`` values seen; later ones under ``"_other"``) and the total."""
        if by not in SERIES_BY:
            raise ValueError(f"by must be one of {', '.join(SERIES_BY)}, got {by!r}")
        minute = int(self.clock() // 60)
        with self._lock:
            return {
                "by": by,
                "bucket_s": 60,
                "series_start": float((minute - MINUTES + 1) * 60),
                "series": {
                    key: line.values(minute) for key, line in sorted(self._by_key[by].items())
                },
                "total": self._total.values(minute),
            }

    def __len__(self) -> int:
        return len(self._groups)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_status = dict.fromkeys(STATUSES, 0)
            for group in self._groups.values():
                by_status[group.status] += 1
            return {
                "groups": len(self._groups),
                "max_groups": self.max_groups,
                "events": self.events,
                "evicted": self.evicted,
                "computed_fingerprints": self.computed_fingerprints,
                "by_status": by_status,
            }
