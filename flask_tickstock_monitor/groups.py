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

from .fingerprint import event_fingerprint
from .tallies import (
    DIMENSIONS,
    MINUTES,
    OTHER,
    SERIES_BY,
    BoundedCounter,
    MinuteSeries,
    bounded_event,
    count_minute,
    keys_of,
)

STATUSES = ("open", "resolved", "ignored")
SORTS = ("last_seen", "count")
#: A group is ``new`` this long after it was first seen.
NEW_FOR = 3600.0


class Added(NamedTuple):
    """What :meth:`GroupBook.add` did: ``new`` — the book had no such group; ``regression`` —
    this event made the group a regression (it had been resolved, or it is seen in a release
    it was never seen in before)."""

    fingerprint: str
    new: bool
    regression: bool
    status: str
    times_seen: int  # the group's count with this event


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
        "cached",
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
        self.cached: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    def to_dict(self, now: float, top: int) -> dict[str, Any]:
        """The group as a dict; made again only when it changed (a dashboard asks every
        second for groups that mostly did not)."""
        minute = int(now // 60)
        new = now - self.first_seen < NEW_FOR
        key = (self.count, self.status, self.regression, minute, new, top)
        cached = self.cached
        if cached is not None and cached[0] == key:
            return dict(cached[1])
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
            new=new,
            regression=self.regression,
            last_event=dict(event),
        )
        self.cached = (key, group)
        return dict(group)


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
            count_minute(group.series, minute)
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
        count_minute(self._total, minute)
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
            count_minute(line, minute)

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
        self,
        sort: str = "last_seen",
        status: str | None = None,
        limit: int | None = 100,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Groups as dicts (see docs/error-groups.md), most recent (or most counted) first;
        ``where``: only the groups (as dicts) it accepts."""
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
            if where is None:
                if limit is not None:
                    ordered = ordered[: max(0, limit)]
                return [group.to_dict(now, self.top) for group in ordered]
            out: list[dict[str, Any]] = []
            for group in ordered:
                if limit is not None and len(out) >= limit:
                    break
                as_dict = group.to_dict(now, self.top)
                if where(as_dict):
                    out.append(as_dict)
            return out

    def keys(self, limit: int = 200) -> dict[str, list[str]]:
        """Per dimension (of ``SERIES_BY``), the keys the groups were counted under, sorted,
        at most ``limit`` of them (what a filter can choose from)."""
        found: list[set[str]] = [set() for _ in SERIES_BY]
        with self._lock:
            for group in self._groups.values():
                for keys, counter in zip(found, group.breakdown, strict=True):
                    if len(keys) < limit:
                        keys.update(counter.counts)
        return {by: sorted(keys)[:limit] for by, keys in zip(SERIES_BY, found, strict=True)}

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
