"""The dashboard API's query parameters: the filters shared by its views (severity, component,
instance, release, environment, text search), limits and choices, read strictly (a bad value is
an :class:`ApiError` naming it, a 400), and how a filter matches what the subscriber keeps.

The filters read an event the way error groups count it (:func:`tallies.keys_of`), so a group,
its events and the durable log's rows all match the same filter alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .tallies import DIMENSIONS, MAX_KEY_CHARS, SERIES_BY, keys_of

#: At most this many values per filter, each at most MAX_KEY_CHARS characters.
MAX_VALUES = 50
#: The instance states, worst first: the order of the dashboard's instances table.
STATE_ORDER = {
    state: rank
    for rank, state in enumerate(("unhealthy", "offline", "stale", "degraded", "unknown"))
}


class ApiError(Exception):
    """A request the API refuses: ``status`` and a message for ``{"error": …}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Filters:
    """Exact values per dimension of :data:`tallies.SERIES_BY` (``None``: any) and ``q``, a
    lower-case substring of message, error type or fingerprint."""

    values: tuple[frozenset[str] | None, ...] = (None,) * len(SERIES_BY)
    q: str | None = None

    def __bool__(self) -> bool:
        return self.q is not None or any(v is not None for v in self.values)

    def get(self, name: str) -> frozenset[str] | None:
        return self.values[SERIES_BY.index(name)]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: sorted(values)
            for name, values in zip(SERIES_BY, self.values, strict=True)
            if values is not None
        }
        if self.q is not None:
            out["q"] = self.q
        return out

    def _text_matches(self, *texts: Any) -> bool:
        q = self.q
        return q is None or any(isinstance(t, str) and q in t.lower() for t in texts)

    def match_event(self, event: Mapping[str, Any]) -> bool:
        for key, values in zip(keys_of(event), self.values, strict=True):
            if values is not None and key not in values:
                return False
        return self._text_matches(
            event.get("message"), event.get("error_type"), event.get("fingerprint")
        )

    def match_group(self, group: Mapping[str, Any]) -> bool:
        for name, values in zip(DIMENSIONS, self.values, strict=True):
            if values is not None and values.isdisjoint(group.get(name) or ()):
                return False
        return self._text_matches(
            group.get("message"), group.get("error_type"), group.get("fingerprint")
        )

    def match_instance(self, instance: Mapping[str, Any]) -> bool:
        components, ids = self.get("component"), self.get("instance")
        return (components is None or instance.get("component") in components) and (
            ids is None or instance.get("id") in ids
        )


def parse_filters(args: Any) -> Filters:
    """The filters of a request's ``args`` (a MultiDict): repeated or comma-separated."""
    values: list[frozenset[str] | None] = []
    for name in SERIES_BY:
        given = [part.strip() for raw in args.getlist(name) for part in raw.split(",")]
        given = [part for part in given if part]
        if not given:
            values.append(None)
            continue
        if len(given) > MAX_VALUES:
            raise ApiError(400, f"{name}: at most {MAX_VALUES} values")
        if any(len(part) > MAX_KEY_CHARS for part in given):
            raise ApiError(400, f"{name}: a value longer than {MAX_KEY_CHARS} characters")
        values.append(frozenset(given))
    q = args.get("q", "").strip()
    if len(q) > MAX_KEY_CHARS:
        raise ApiError(400, f"q: longer than {MAX_KEY_CHARS} characters")
    return Filters(tuple(values), q.lower() or None)


def parse_limit(args: Any, default: int = 100, maximum: int = 500) -> int:
    raw = args.get("limit")
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, f"limit: not a whole number: {raw[:40]!r}") from None
    if not 1 <= limit <= maximum:
        raise ApiError(400, f"limit: must be between 1 and {maximum}")
    return limit


def parse_choice(args: Any, name: str, choices: tuple[str, ...], default: str | None) -> Any:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise ApiError(400, f"{name}: must be one of {', '.join(choices)}")
    return raw


def parse_cursor(args: Any, prefix: str) -> int | None:
    """The number of the ``before`` cursor (``<prefix><n>``); ``None`` when not given."""
    raw = args.get("before")
    if raw is None or raw == "":
        return None
    if not raw.startswith(prefix):
        raise ApiError(400, f"before: not a cursor of this source (they start with {prefix!r})")
    digits = raw[len(prefix) :]
    if not digits.isdigit() or len(digits) > 18:
        raise ApiError(400, f"before: a bad cursor: {raw[:40]!r}")
    return int(digits)


def instance_order(instance: Mapping[str, Any]) -> tuple[int, str]:
    return STATE_ORDER.get(str(instance.get("state")), len(STATE_ORDER)), str(instance.get("id"))


def annotate(
    event: Mapping[str, Any], whereabouts: Mapping[str, tuple[Any, Any]], skew_s: float = 300.0
) -> dict[str, Any]:
    """A copy of a kept event for a response: ``skewed`` when its timestamp and the time it was
    received differ by more than ``skew_s``; its instance's ``host``/``pid`` when known."""
    out = dict(event)
    received = out.get("received_at")
    stamp = out.get("timestamp")
    out["skewed"] = (
        isinstance(received, (int, float))
        and isinstance(stamp, (int, float))
        and abs(stamp - received) > skew_s
    )
    where = whereabouts.get(str(out.get("instance_id") or ""))
    if where is not None:
        out.setdefault("host", where[0])
        out.setdefault("pid", where[1])
    return out


def for_list(group: Mapping[str, Any]) -> dict[str, Any]:
    """A group dict as the API lists it: its latest event's ``severity`` instead of the event."""
    out = dict(group)
    last = out.pop("last_event", None) or {}
    severity = last.get("severity")
    if severity is None:
        severity = next(iter(out.get("severities") or {}), None)
    out["severity"] = severity
    return out
