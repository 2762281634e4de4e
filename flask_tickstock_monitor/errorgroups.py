"""Error groups in the durable log: one ``error_groups`` row per fingerprint, exact across
every process that writes to the database.

The error log keeps each event; what an operator asks first ("new since the deploy? how
often?") needs them counted by error. Counting is done by the database, in the writer's own
transaction: a batch of events becomes one ``INSERT … ON CONFLICT DO UPDATE`` per
fingerprint that adds its count and widens first/last seen, so writers in several processes
never lose an update, whatever their order. ``error_group_counts`` breaks each group down by
severity, component, instance, release and environment, the same way; it is also how a
release the group was never seen in is told apart (its row is new), which marks a regression.
``error_logs`` (TickStockAppV2's schema) is not changed: an event's fingerprint is kept in its
``context``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from .errordb import LIMITS, error_group_counts, error_groups, error_logs, metadata
from .events import truncate
from .fingerprint import event_fingerprint
from .groups import NEW_FOR, SORTS, STATUSES
from .tallies import DIMENSIONS, MINUTES, SERIES_BY, keys_of, top_counts

#: ``error_group_counts.dimension`` values, in the order of :data:`groups.DIMENSIONS`.
COUNTED_BY = SERIES_BY
MAX_MESSAGE_CHARS = 4_096
#: Entries shown per breakdown (the rest folded into ``"_other"``), as the GroupBook's default.
TOP = 20


def create_group_tables(engine: Engine) -> None:
    """Create ``error_groups`` and ``error_group_counts`` where missing (``error_logs``, too,
    is made by :func:`errordb.create_table`)."""
    with engine.begin() as conn:
        metadata.create_all(conn, tables=[error_groups, error_group_counts], checkfirst=True)


# --- writing -------------------------------------------------------------------------------------


def _clip(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    return truncate(value if type(value) is str else str(value), limit)


def _when(event: Mapping[str, Any]) -> datetime:
    try:
        stamp = float(event["timestamp"])
    except (KeyError, TypeError, ValueError):
        stamp = math.nan
    if not math.isfinite(stamp) or stamp < 0:
        return datetime.now(timezone.utc)  # validated events have one; a bad one is "now"
    return datetime.fromtimestamp(stamp, timezone.utc)


def fold(events: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A batch as one ``error_groups`` row per fingerprint and one ``error_group_counts`` row
    per (fingerprint, dimension, key), each sorted by its key: every writer takes the rows'
    locks in one order, so concurrent writers wait for each other but never deadlock."""
    groups: dict[str, dict[str, Any]] = {}
    counts: dict[tuple[str, str, str], dict[str, Any]] = {}
    for event in events:
        fingerprint = event_fingerprint(event)
        seen = _when(event)
        keys = keys_of(event)
        last = {
            "message": _clip(event.get("message") or "", MAX_MESSAGE_CHARS),
            "error_type": _clip(event.get("error_type"), 255),
            "last_release": keys[3],
            "last_environment": keys[4],
            "last_severity": _clip(event.get("severity"), LIMITS["severity"]),
            "last_component": _clip(event.get("component"), LIMITS["component"]),
            "last_error_id": _clip(event.get("error_id"), LIMITS["error_id"]),
        }
        group = groups.setdefault(
            fingerprint,
            {"fingerprint": fingerprint, "count": 0, "first_seen": seen, "first_release": keys[3]},
        )
        if not group["count"] or seen >= group["last_seen"]:
            group.update(last, last_seen=seen)
        if seen < group["first_seen"]:
            group.update(first_seen=seen, first_release=keys[3] or group["first_release"])
        group["count"] += 1
        for dimension, key in zip(COUNTED_BY, keys, strict=True):
            if key is None:
                continue
            row = counts.setdefault(
                (fingerprint, dimension, key),
                {"fingerprint": fingerprint, "dimension": dimension, "key": key, "count": 0},
            )
            row["count"] += 1
            row["last_seen"] = max(row.get("last_seen", seen), seen)
    return [groups[k] for k in sorted(groups)], [counts[k] for k in sorted(counts)]


def _insert(dialect_name: str, table: sa.Table) -> Any:
    return (postgresql if dialect_name == "postgresql" else sqlite).insert(table)


def _greatest(dialect_name: str, a: Any, b: Any, least: bool = False) -> Any:
    if dialect_name == "postgresql":
        return sa.func.least(a, b) if least else sa.func.greatest(a, b)
    return sa.func.min(a, b) if least else sa.func.max(a, b)  # SQLite's scalar min and max


def upsert_groups(conn: Connection, dialect_name: str, events: Iterable[Mapping[str, Any]]) -> int:
    """Count a batch of error events into their groups, in ``conn``'s transaction; returns how
    many groups were touched. Call it in the transaction that inserts the events' rows (see
    :func:`insert_with_groups`), so that a batch is counted exactly when it is stored.

    A resolved group seen again (by an event newer than its resolution) is open again and a
    regression; an open group seen in a release it was never seen in, having been seen in
    another, is a regression; an ignored group stays ignored and only counts.
    """
    group_rows, count_rows = fold(events)
    if not group_rows:
        return 0
    counts = error_group_counts
    stmt = _insert(dialect_name, counts)
    stmt = stmt.on_conflict_do_update(
        index_elements=[counts.c.fingerprint, counts.c.dimension, counts.c.key],
        set_={
            "count": counts.c["count"] + stmt.excluded["count"],
            "last_seen": _greatest(dialect_name, counts.c.last_seen, stmt.excluded.last_seen),
        },
    ).returning(counts.c.fingerprint, counts.c.dimension, counts.c.key, counts.c["count"])
    batch = {(r["fingerprint"], r["dimension"], r["key"]): r["count"] for r in count_rows}
    # A row whose count is this batch's alone was inserted by it: a key never seen before.
    new_releases = {
        fingerprint
        for fingerprint, dimension, key, total in (
            conn.execute(stmt, count_rows) if count_rows else ()
        )
        if dimension == "release" and total == batch[fingerprint, dimension, key]
    }
    for row in group_rows:  # one statement each, in fingerprint order (see fold)
        conn.execute(_group_upsert(dialect_name, row["fingerprint"] in new_releases), row)
    return len(group_rows)


#: Columns that take the newest event's value (unless it has none).
_LATEST: tuple[str, ...] = ("error_type", "last_release", "last_environment", "last_severity")
_LATEST += ("last_component", "last_error_id")


def _group_upsert(dialect_name: str, new_release: bool) -> Any:
    groups = error_groups
    stmt = _insert(dialect_name, groups)
    new = stmt.excluded
    newer = new.last_seen >= groups.c.last_seen
    reopened = sa.and_(
        groups.c.status == "resolved",
        sa.or_(groups.c.resolved_at.is_(None), new.last_seen > groups.c.resolved_at),
    )
    regressed = [(reopened, sa.true())]
    regressed_at = [(reopened, new.last_seen)]
    if new_release:
        in_new_release = sa.and_(groups.c.status == "open", groups.c.last_release.is_not(None))
        regressed.append((in_new_release, sa.true()))
        regressed_at.append((in_new_release, new.last_seen))

    def latest(column: str) -> Any:
        current = groups.c[column]
        return sa.case((newer, sa.func.coalesce(new[column], current)), else_=current)

    return stmt.on_conflict_do_update(
        index_elements=[groups.c.fingerprint],
        set_={
            "count": groups.c["count"] + new["count"],
            "first_seen": _greatest(dialect_name, groups.c.first_seen, new.first_seen, least=True),
            "last_seen": _greatest(dialect_name, groups.c.last_seen, new.last_seen),
            "first_release": sa.case(
                (new.first_seen < groups.c.first_seen, new.first_release),
                else_=sa.func.coalesce(groups.c.first_release, new.first_release),
            ),
            "message": sa.case((newer, new.message), else_=groups.c.message),
            **{column: latest(column) for column in _LATEST},
            "status": sa.case((reopened, "open"), else_=groups.c.status),
            "resolved_at": sa.case((reopened, sa.null()), else_=groups.c.resolved_at),
            "regression": sa.case(*regressed, else_=groups.c.regression),
            "regressed_at": sa.case(*regressed_at, else_=groups.c.regressed_at),
        },
    )


def insert_with_groups(
    conn: Connection,
    dialect_name: str,
    rows: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
) -> int:
    """Insert ``error_logs`` rows (:func:`errordb.row_for` of ``events``, in order) and count
    into the groups only the events whose row was not already there: a batch written again
    after a lost commit acknowledgement is not counted twice. Returns the rows inserted."""
    if not rows:
        return 0
    stmt = (
        _insert(dialect_name, error_logs)
        .on_conflict_do_nothing(index_elements=["error_id"])
        .returning(error_logs.c.error_id)
    )
    inserted = {error_id for (error_id,) in conn.execute(stmt, list(rows))}
    fresh = []
    for event, row in zip(events, rows, strict=True):
        if row["error_id"] in inserted:
            inserted.discard(row["error_id"])  # an id twice in the batch: one row, one count
            fresh.append(event)
    upsert_groups(conn, dialect_name, fresh)
    return len(fresh)


# --- status --------------------------------------------------------------------------------------


def set_status(engine: Engine, fingerprint: str, status: str) -> bool:
    """Resolve, ignore or reopen a group; ``False`` when there is no such group. Resolving or
    reopening clears the regression mark; an event newer than the resolution reopens it."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    values: dict[str, Any] = {"status": status}
    if status == "resolved":
        values.update(resolved_at=datetime.now(timezone.utc), regression=False)
    elif status == "open":
        values.update(resolved_at=None, regression=False)
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(error_groups).where(error_groups.c.fingerprint == fingerprint).values(values)
        )
        return bool(result.rowcount)


def prune_groups(engine: Engine, older_than: timedelta) -> int:
    """Delete the groups (and their breakdowns) not seen for ``older_than``; returns how many."""
    cutoff = datetime.now(timezone.utc) - older_than
    stale = sa.select(error_groups.c.fingerprint).where(error_groups.c.last_seen < cutoff)
    with engine.begin() as conn:
        conn.execute(
            sa.delete(error_group_counts).where(error_group_counts.c.fingerprint.in_(stale))
        )
        result = conn.execute(sa.delete(error_groups).where(error_groups.c.last_seen < cutoff))
        return int(result.rowcount)


# --- reading -------------------------------------------------------------------------------------


def list_groups(
    engine: Engine,
    *,
    since: timedelta | None = None,
    status: str | None = None,
    limit: int = 100,
    sort: str = "last_seen",
    where: Iterable[Any] = (),
) -> list[dict[str, Any]]:
    """Groups as dicts (the shape of :meth:`groups.GroupBook.groups`), most recently seen (or
    most counted) first; ``since``: seen within it; ``where``: more conditions on the row."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    now = datetime.now(timezone.utc)
    query = sa.select(error_groups).limit(max(0, limit))
    if sort == "count":
        query = query.order_by(error_groups.c["count"].desc(), error_groups.c.last_seen.desc())
    else:
        query = query.order_by(error_groups.c.last_seen.desc())
    if since is not None:
        query = query.where(error_groups.c.last_seen >= now - since)
    if status is not None:
        query = query.where(error_groups.c.status == status)
    for condition in where:
        query = query.where(condition)
    return _read(engine, query, now)


def get_group(engine: Engine, fingerprint: str) -> dict[str, Any] | None:
    query = sa.select(error_groups).where(error_groups.c.fingerprint == fingerprint)
    found = _read(engine, query, datetime.now(timezone.utc))
    return found[0] if found else None


def recent_events(engine: Engine, fingerprint: str, limit: int = 20) -> list[dict[str, Any]]:
    """The group's newest ``error_logs`` rows, newest first, as events."""
    query = (
        sa.select(error_logs)
        .where(_fingerprint_of_row() == fingerprint)
        .order_by(error_logs.c.timestamp.desc(), error_logs.c.id.desc())
        .limit(max(0, limit))
    )
    with engine.connect() as conn:
        return [_as_event(row._mapping) for row in conn.execute(query)]


def _fingerprint_of_row() -> Any:
    return error_logs.c.context["fingerprint"].as_string()


def _as_event(row: Mapping[Any, Any]) -> dict[str, Any]:
    event = {
        key: row[key]
        for key in ("error_id", "source", "severity", "category", "component", "message")
    }
    event.update(
        timestamp=row["timestamp"].timestamp(),
        traceback=row["traceback"],
        context=row["context"] or {},
    )
    return {key: value for key, value in event.items() if value is not None}


def _read(engine: Engine, query: Any, now: datetime) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
        if not rows:
            return []
        fingerprints = [row["fingerprint"] for row in rows]
        breakdowns: dict[str, dict[str, dict[str, int]]] = {fp: {} for fp in fingerprints}
        counts = error_group_counts
        columns = (counts.c.fingerprint, counts.c.dimension, counts.c.key, counts.c["count"])
        query = sa.select(*columns).where(counts.c.fingerprint.in_(fingerprints))
        for fp, dimension, key, count in conn.execute(query):
            breakdowns[fp].setdefault(dimension, {})[key] = count
        series, series_start = _series(conn, fingerprints, now)
        ids = [row["last_error_id"] for row in rows if row["last_error_id"]]
        last_events = {
            row.error_id: _as_event(row._mapping)
            for row in conn.execute(sa.select(error_logs).where(error_logs.c.error_id.in_(ids)))
        }
    out = []
    for row in rows:
        fp = row["fingerprint"]
        group: dict[str, Any] = {
            "fingerprint": fp,
            "message": row["message"],
            "error_type": row["error_type"],
            "count": row["count"],
            "first_seen": row["first_seen"].timestamp(),
            "last_seen": row["last_seen"].timestamp(),
        }
        for name, dimension in zip(DIMENSIONS, COUNTED_BY, strict=True):
            group[name] = top_counts(breakdowns[fp].get(dimension, {}), TOP)
        group.update(
            series=series.get(fp, [0] * MINUTES),
            series_start=series_start,
            status=row["status"],
            new=(now - row["first_seen"]).total_seconds() < NEW_FOR,
            regression=bool(row["regression"]),
            last_event=last_events.get(row["last_error_id"]),
        )
        out.append(group)
    return out


def _series(
    conn: Connection, fingerprints: list[str], now: datetime
) -> tuple[dict[str, list[int]], float]:
    """Per-minute counts of the last hour from ``error_logs``, per fingerprint."""
    now_minute = int(now.timestamp() // 60)
    first_minute = now_minute - MINUTES + 1
    timestamp = error_logs.c.timestamp
    if conn.dialect.name == "postgresql":
        seconds = sa.cast(sa.func.floor(sa.func.extract("epoch", timestamp)), sa.BigInteger)
    else:
        seconds = sa.cast(sa.func.strftime("%s", timestamp), sa.BigInteger)
    minute = (seconds // 60).label("minute")
    fp = _fingerprint_of_row()
    query = (
        sa.select(fp.label("fp"), minute, sa.func.count())
        .where(timestamp >= datetime.fromtimestamp(first_minute * 60, timezone.utc))
        .where(fp.in_(fingerprints))
        .group_by(fp, minute)
    )
    out: dict[str, list[int]] = {}
    for fingerprint, at, count in conn.execute(query):
        index = int(at) - first_minute
        if 0 <= index < MINUTES:
            out.setdefault(fingerprint, [0] * MINUTES)[index] += int(count)
    return out, float(first_minute * 60)
