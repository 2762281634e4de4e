"""The durable error log's table and queries: ``error_logs``, TickStockAppV2's own schema
(``scripts/database/create_error_logs_table.sql``), so both can share it. ``error_id`` is
unique; inserts ignore a row already there."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.types import TypeDecorator

from . import events
from .tallies import MAX_KEY_CHARS

SEVERITY_ORDER = {severity: rank for rank, severity in enumerate(events.SEVERITIES)}
#: Column widths of TickStockAppV2's schema; longer values are truncated to fit.
LIMITS = {"error_id": 255, "source": 50, "severity": 20, "category": 50, "component": 100}
#: Event fields that have no column of their own and are kept in ``context``.
EXTRA_FIELDS = (
    "error_type",
    "origin",
    "instance_id",
    "suppressed",
    "fingerprint",
    "release",
    "environment",
    "trace_id",
    "span_id",
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes everywhere; SQLite, which has no time zones, stores naive UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)  # whatever the session's time zone


metadata = MetaData()
error_logs = Table(
    "error_logs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("error_id", String(LIMITS["error_id"]), nullable=False, unique=True),
    Column("source", String(LIMITS["source"]), nullable=False),
    Column("severity", String(LIMITS["severity"]), nullable=False),
    Column("category", String(LIMITS["category"])),
    Column("message", Text, nullable=False),
    Column("component", String(LIMITS["component"])),
    Column("traceback", Text),
    Column("context", JSON().with_variant(postgresql.JSONB(), "postgresql")),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, server_default=func.now()),
)
Index("idx_error_logs_timestamp", error_logs.c.timestamp.desc())
Index("idx_error_logs_severity", error_logs.c.severity)
Index("idx_error_logs_created_at", error_logs.c.created_at.desc())


def _clip(value: Any, column: str) -> str | None:
    if value is None:
        return None
    return events.truncate(str(value), LIMITS[column])


def row_for(event: Mapping[str, Any], default_source: str) -> dict[str, Any]:
    """The ``error_logs`` row of an error event, every value cut to its column's width."""
    context = dict(event.get("context") or {})
    for name in EXTRA_FIELDS:
        if event.get(name) is not None:
            context.setdefault(name, event[name])
    return {
        "error_id": _clip(event["error_id"], "error_id"),
        "source": _clip(event.get("source") or default_source, "source"),
        "severity": _clip(event.get("severity") or "error", "severity"),
        "category": _clip(event.get("category"), "category"),
        "message": str(event.get("message") or ""),
        "component": _clip(event.get("component"), "component"),
        "traceback": event.get("traceback"),
        # a JSON round trip: whatever the scrubber left becomes plain JSON values
        "context": json.loads(json.dumps(context, default=str)) if context else None,
        "timestamp": datetime.fromtimestamp(float(event["timestamp"]), timezone.utc),
    }


def create_table(engine: Engine) -> bool:
    """Create ``error_logs`` and its indexes when missing, and the groups' tables beside it
    (also next to an ``error_logs`` that TickStockAppV2 made); ``True`` when ``error_logs`` was
    created."""
    with engine.begin() as conn:
        exists = engine.dialect.has_table(conn, error_logs.name)
        metadata.create_all(conn, checkfirst=True)
    return not exists


def severities_from(minimum: str) -> list[str]:
    return [s for s, rank in SEVERITY_ORDER.items() if rank >= SEVERITY_ORDER[minimum]]


def recent_errors(
    engine: Engine, *, since: timedelta | None, min_severity: str, limit: int
) -> list[dict[str, Any]]:
    """Newest first: the seed card's validation query (``context`` as ``error_context``)."""
    query = (
        select(
            error_logs.c.error_id,
            error_logs.c.severity,
            error_logs.c.component,
            error_logs.c.message,
            error_logs.c.context.label("error_context"),
            error_logs.c.created_at,
        )
        .where(error_logs.c.severity.in_(severities_from(min_severity)))
        .order_by(error_logs.c.created_at.desc(), error_logs.c.id.desc())
        .limit(limit)
    )
    if since is not None:
        query = query.where(error_logs.c.created_at >= datetime.now(timezone.utc) - since)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def prune(engine: Engine, older_than: timedelta) -> int:
    """Delete rows logged more than ``older_than`` ago; returns how many."""
    cutoff = datetime.now(timezone.utc) - older_than
    with engine.begin() as conn:
        result = conn.execute(delete(error_logs).where(error_logs.c.created_at < cutoff))
        return int(result.rowcount)


# --- error groups (errorgroups.py counts into them) -----------------------------------------------

error_groups = sa.Table(
    "error_groups",
    metadata,
    sa.Column("fingerprint", sa.String(32), primary_key=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("error_type", sa.String(255)),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.Column("first_release", sa.String(MAX_KEY_CHARS)),
    sa.Column("last_release", sa.String(MAX_KEY_CHARS)),
    sa.Column("last_environment", sa.String(MAX_KEY_CHARS)),
    sa.Column("last_severity", sa.String(LIMITS["severity"])),
    sa.Column("last_component", sa.String(LIMITS["component"])),
    sa.Column("last_error_id", sa.String(LIMITS["error_id"])),
    sa.Column("status", sa.String(16), nullable=False, server_default="open"),
    sa.Column("regression", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("resolved_at", UTCDateTime),
    sa.Column("regressed_at", UTCDateTime),
)
sa.Index("idx_error_groups_last_seen", error_groups.c.last_seen.desc())

error_group_counts = sa.Table(
    "error_group_counts",
    metadata,
    sa.Column("fingerprint", sa.String(32), primary_key=True),
    sa.Column("dimension", sa.String(16), primary_key=True),
    sa.Column("key", sa.String(MAX_KEY_CHARS), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
)
