"""The dashboard's reads of the durable error log: groups with the API's filters, a group's
recent events and the errors paged back, newest written first. What the database keeps is
there after a restart, so a page opened late shows what happened before it.

Imported only when a database is configured (it needs SQLAlchemy). Each function takes an
engine: the error log runs it (``ErrorLog.query``) where it cannot stall an eventlet hub.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .dashboard_query import Filters
from .errordb import EXTRA_FIELDS, error_group_counts, error_groups, error_logs
from .errorgroups import get_group, list_groups, set_status
from .fingerprint import event_fingerprint
from .tallies import DEFAULT_ENVIRONMENT, SERIES_BY, bounded_event

__all__ = ["CURSOR_PREFIX", "errors", "group", "groups", "set_status"]

CURSOR_PREFIX = "d:"
#: An event read back is trimmed to this, as the subscriber trims the ones it keeps.
MAX_EVENT_BYTES = 16_384


def _context(name: str) -> Any:
    return error_logs.c.context[name].as_string()


def _contains(column: Any, q: str) -> Any:
    return sa.func.lower(sa.func.coalesce(column, "")).contains(q, autoescape=True)


def _row_keys() -> tuple[Any, ...]:
    """Each filter dimension's value of an ``error_logs`` row, as ``tallies.keys_of`` reads
    the event it was made from."""
    c = error_logs.c
    return (
        c.severity,
        c.component,
        sa.func.coalesce(_context("instance_id"), c.source),
        _context("release"),
        sa.func.coalesce(_context("environment"), DEFAULT_ENVIRONMENT),
    )


def row_conditions(filters: Filters) -> list[Any]:
    conditions = [
        column.in_(sorted(values))
        for column, values in zip(_row_keys(), filters.values, strict=True)
        if values is not None
    ]
    if filters.q is not None:
        conditions.append(
            sa.or_(
                _contains(error_logs.c.message, filters.q),
                _contains(_context("error_type"), filters.q),
                _contains(_context("fingerprint"), filters.q),
            )
        )
    return conditions


def group_conditions(filters: Filters) -> list[Any]:
    """``error_groups`` rows counted under every filtered value (any of each filter's values)."""
    counts, groups = error_group_counts, error_groups
    conditions: list[Any] = [
        sa.exists().where(
            counts.c.fingerprint == groups.c.fingerprint,
            counts.c.dimension == dimension,
            counts.c.key.in_(sorted(values)),
        )
        for dimension, values in zip(SERIES_BY, filters.values, strict=True)
        if values is not None
    ]
    if filters.q is not None:
        conditions.append(
            sa.or_(
                _contains(groups.c.message, filters.q),
                _contains(groups.c.error_type, filters.q),
                _contains(groups.c.fingerprint, filters.q),
            )
        )
    return conditions


def groups(
    engine: Engine, filters: Filters, status: str | None, sort: str, limit: int
) -> list[dict[str, Any]]:
    return list_groups(
        engine, status=status, sort=sort, limit=limit, where=group_conditions(filters)
    )


def group(engine: Engine, fingerprint: str, limit: int = 20) -> tuple[Any, list[dict[str, Any]]]:
    """A group (``None``: no such group) and its ``limit`` newest events."""
    found = get_group(engine, fingerprint)
    if found is None:
        return None, []
    query = (
        sa.select(error_logs)
        .where(_context("fingerprint") == fingerprint)
        .order_by(error_logs.c.id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return found, [event_of_row(row._mapping) for row in conn.execute(query)]


def errors(
    engine: Engine, filters: Filters, before: int | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` rows written before row ``before`` that match, newest first, as
    events; and the cursor of the next page (``None``: no more)."""
    query = (
        sa.select(error_logs)
        .where(*row_conditions(filters))
        .order_by(error_logs.c.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        query = query.where(error_logs.c.id < before)
    with engine.connect() as conn:
        rows = [row._mapping for row in conn.execute(query)]
    found = [event_of_row(row) for row in rows[:limit]]
    more = len(rows) > limit and found
    return found, found[-1]["cursor"] if more else None


def event_of_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    """An ``error_logs`` row as the error event it was made from: the fields kept in its
    ``context`` lifted back out, ``received_at`` the time it was written, a ``cursor``."""
    context = dict(row["context"] or {})
    lifted = {name: context.pop(name) for name in EXTRA_FIELDS if name in context}
    event: dict[str, Any] = {
        "type": "application_error",
        **{
            key: row[key]
            for key in ("error_id", "source", "severity", "category", "component", "message")
        },
        "traceback": row["traceback"],
        **lifted,
        "context": context,
        "timestamp": row["timestamp"].timestamp(),
        "received_at": (row["created_at"] or row["timestamp"]).timestamp(),
        "cursor": f"{CURSOR_PREFIX}{row['id']}",
    }
    event = {key: value for key, value in event.items() if value is not None}
    if not isinstance(event.get("fingerprint"), str):
        event["fingerprint"] = event_fingerprint(event)  # a row TickStockAppV2 wrote itself
    return bounded_event(event, MAX_EVENT_BYTES)
