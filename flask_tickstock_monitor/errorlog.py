"""The durable error log: errors written to an ``error_logs`` table, independent of Redis.

Redis pub/sub is best-effort; this is where nothing is lost. The capturing thread only appends
the queued error item to a bounded buffer (a sink on ``ErrorCapture.sinks``); one background
thread builds the rows and inserts them in batches. While the database is down the rows wait
in the buffer and are retried with backoff; what does not fit is counted, never silently lost.
The table is TickStockAppV2's (``scripts/database/create_error_logs_table.sql``), so both can
share it; ``error_id`` is unique and inserts ignore a row already there.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    create_engine,
    delete,
    func,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.types import TypeDecorator

from . import events
from .config import ConfigReader, ConfigurationError, as_bool, as_number, as_str
from .extension import Plane
from .transport import CircuitBreaker, Dropped, Outgoing, _local

if TYPE_CHECKING:
    from .extension import MonitorState

log = logging.getLogger("flask_tickstock_monitor.errorlog")

SEVERITY_ORDER = {"warning": 0, "error": 1, "critical": 2}
DIALECTS = ("postgresql", "sqlite")
#: Column widths of TickStockAppV2's schema; longer values are truncated to fit.
LIMITS = {"error_id": 255, "source": 50, "severity": 20, "category": 50, "component": 100}
#: Event fields that have no column of their own and are kept in ``context``.
EXTRA_FIELDS = ("error_type", "origin", "instance_id", "suppressed")


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


# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorLogConfig:
    url: URL
    min_severity: str = "error"
    buffer_size: int = 10_000
    batch_size: int = 100
    timeout: float = 2.0
    retry_max_delay: float = 30.0


def database_url(key: str, value: Any) -> URL:
    """Parse a SQLAlchemy URL we can write to; ``postgresql://`` uses psycopg 3 when it is the
    driver installed (SQLAlchemy's default, psycopg2, usually is not)."""
    try:
        url = make_url(as_str(key, value))
    except sa_exc.ArgumentError:
        raise ConfigurationError(f"{key} is not a database URL: {value!r}") from None
    backend = url.get_backend_name()
    if backend == "postgres":
        url = url.set(drivername="postgresql")
        backend = "postgresql"
    if backend not in DIALECTS:
        raise ConfigurationError(
            f"{key} must be a postgresql:// or sqlite:// URL, got {backend!r} in {value!r}"
        )
    if url.drivername == "postgresql":
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            url = url.set(drivername="postgresql+psycopg")
    try:
        url.get_dialect().import_dbapi()
    except (sa_exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigurationError(
            f"{key}: no driver for {url.drivername!r} ({exc}); install the 'db' extra"
        ) from None
    return url


def as_severity(key: str, value: Any) -> str:
    severity = str(value).strip().lower()
    if severity not in SEVERITY_ORDER:
        raise ConfigurationError(f"{key} must be one of {', '.join(SEVERITY_ORDER)}, got {value!r}")
    return severity


def load_errorlog_config(reader: ConfigReader) -> ErrorLogConfig | None:
    """The error log's settings, or ``None`` when it is off (no database URI set)."""
    url = reader.get("DATABASE_URI", None, database_url)
    if url is None or not reader.get("DATABASE_ENABLED", True, as_bool):
        return None

    def positive(kind: type) -> Any:
        return lambda key, value: as_number(key, value, kind, minimum=0, allow_zero=False)

    return ErrorLogConfig(
        url=url,
        min_severity=reader.get("DATABASE_MIN_SEVERITY", "error", as_severity),
        buffer_size=reader.get("DATABASE_BUFFER_SIZE", 10_000, positive(int)),
        batch_size=reader.get("DATABASE_BATCH_SIZE", 100, positive(int)),
        timeout=reader.get("DATABASE_TIMEOUT", 2.0, positive(float)),
        retry_max_delay=reader.get("DATABASE_RETRY_MAX_DELAY", 30.0, positive(float)),
    )


# --- rows ----------------------------------------------------------------------------------------


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


def insert_ignoring_duplicates(dialect_name: str) -> Any:
    module = postgresql if dialect_name == "postgresql" else sqlite
    return module.insert(error_logs).on_conflict_do_nothing(index_elements=["error_id"])


def create_table(engine: Engine) -> bool:
    """Create ``error_logs`` and its indexes when missing; ``True`` when it was created."""
    with engine.begin() as conn:
        exists = engine.dialect.has_table(conn, error_logs.name)
        if not exists:
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


def _is_outage(exc: Exception) -> bool:
    """The database cannot be reached or used now (retry later), as opposed to a bad row."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, OSError))


def _offload(fn: Any) -> Any:
    """Run blocking database I/O where it cannot stall an eventlet hub: psycopg's C wait and
    sqlite3 are not green, so under eventlet they run in a real OS thread."""
    eventlet = sys.modules.get("eventlet")  # never imported here: an app not on it is not patched
    if eventlet is not None:
        from eventlet import patcher, tpool

        if patcher.is_monkey_patched("thread"):
            return tpool.execute(fn)
    return fn()


# --- the plane -----------------------------------------------------------------------------------

_LIVE_LOGS: weakref.WeakSet[ErrorLog] = weakref.WeakSet()


class ErrorLog(Plane):
    """Writes the app's errors at or above a severity to ``error_logs`` from one thread."""

    def __init__(self, state: MonitorState, config: ErrorLogConfig):
        self.state = state
        self.config = config
        self.source = state.config.source
        self.exit_flush_timeout = state.config.exit_flush_timeout
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self.written = 0
        self.dropped: dict[str, int] = {}
        self.last_error: str | None = None
        self._reset()
        state.capture.sinks.append(self.accept)
        _LIVE_LOGS.add(self)

    def _reset(self) -> None:
        self._pid = os.getpid()
        #: entries are ``[item, row]``: the row is built once, on the writer thread
        self._buffer: deque[list[Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._start_lock = threading.Lock()
        self._table_ready = False
        self.breaker = CircuitBreaker(base=0.05, cap=self.config.retry_max_delay)

    @property
    def engine(self) -> Engine:
        """This process's engine, made on first use."""
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = self._create_engine()
        return self._engine

    def _create_engine(self) -> Engine:
        url = self.config.url
        connect_args: dict[str, Any]
        if url.get_backend_name() == "sqlite":
            connect_args = {"timeout": self.config.timeout}
            if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            connect_args = {"connect_timeout": max(1, round(self.config.timeout))}
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)

    # the sink (capturing thread) ----------------------------------------------------------------

    def accept(self, item: Outgoing) -> None:
        """Buffer ``item`` if it is an error to keep; never blocks, never raises."""
        if item.kind != "error" or not self._wanted(item.severity):
            return
        if self._pid != os.getpid():
            self._after_fork()
        if self._stopping:
            self.count_drop("shutdown")
            return
        with self._lock:
            if len(self._buffer) >= self.config.buffer_size:
                full = True
            else:
                full = False
                self._buffer.append([item, None])
        if full:
            self.count_drop("buffer_full")
            return
        if self._thread is None or not self._thread.is_alive():
            self.start()
        self._wake.set()

    def _wanted(self, severity: str | None) -> bool:
        rank = SEVERITY_ORDER.get(severity or "error", SEVERITY_ORDER["error"])
        return rank >= SEVERITY_ORDER[self.config.min_severity]

    def count_drop(self, reason: str, count: int = 1) -> None:
        with self._counter_lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    # Plane --------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name="tickstock-monitor-errorlog", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self.close(self.exit_flush_timeout)

    def after_fork_in_child(self) -> None:
        self._after_fork()
        self.start()

    def _after_fork(self) -> None:
        # The parent writes what it had buffered, on its own connections: the child leaves
        # them open for the parent and makes its own.
        if self._engine is not None:
            self._engine.dispose(close=False)
        self._reset()

    def stats(self) -> dict[str, Any]:
        with self._counter_lock:
            dropped = dict(self.dropped)
        return {
            "database": self.config.url.render_as_string(hide_password=True),
            "min_severity": self.config.min_severity,
            "written": self.written,
            "buffered": len(self._buffer),
            "dropped": dropped,
            "dropped_total": sum(dropped.values()),
            "connected": self._table_ready and not self.breaker.is_open,
            "last_error": self.last_error,
        }

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until every buffered row was written or dropped; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        self.breaker.retry_at = 0.0  # whoever waits wants a try now, not after the backoff
        while self._buffer:
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                if self._pid != os.getpid() or self._stopping:
                    return False
                self.start()
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 2.0) -> bool:
        """Flush within ``timeout``, stop the thread; what is left is counted as dropped."""
        flushed = self.flush(timeout) if self._pid == os.getpid() else False
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(1.0, self.config.timeout + 0.5))
        with self._lock:
            left = len(self._buffer)
            self._buffer.clear()
        if left:
            self.count_drop("shutdown", left)
        engine, self._engine = self._engine, None
        if engine is not None and self._pid == os.getpid():
            engine.dispose()  # close our connections now, not whenever the engine is collected
        return flushed

    # the writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        _local.monitoring = True  # what this thread logs is never captured again
        while not self._stopping:
            with self._lock:
                batch = list(islice(self._buffer, self.config.batch_size))
            if not batch:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            if not self.breaker.ready():
                self._wake.wait(max(0.0, self.breaker.retry_at - time.monotonic()))
                self._wake.clear()
                continue
            try:
                self._write_batch(batch)
            except Exception as exc:  # never let the writer die: back off and try again
                log.exception("the error log writer failed")
                self._failed(exc)

    def _write_batch(self, batch: list[list[Any]]) -> None:
        rows = [row for row in (self._row(entry) for entry in batch) if row]
        try:
            if rows:
                _offload(lambda: self._insert(rows))
        except Exception as exc:
            if _is_outage(exc) or not self._insert_each(rows):
                self._failed(exc)
                return
        else:
            with self._counter_lock:
                self.written += len(rows)
        with self._lock:  # only this thread removes entries, so the batch is still in front
            for _ in batch:
                self._buffer.popleft()
        if self.breaker.is_open:
            log.info("the error log database is reachable again; writing buffered errors")
        self.breaker.succeeded()

    def _row(self, entry: list[Any]) -> dict[str, Any] | None:
        """The entry's row, built once; ``None`` for an item that cannot become one."""
        if entry[1] is None:
            item: Outgoing = entry[0]
            try:
                event = item.resolve()
                entry[1] = row_for(event, self.source) if self._wanted(event["severity"]) else {}
            except Dropped as drop:
                self.count_drop(drop.reason)
                entry[1] = {}
            except Exception:
                log.warning("could not build an error_logs row", exc_info=True)
                self.count_drop("format_error")
                entry[1] = {}
        return entry[1] or None

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        if not self._table_ready:
            create_table(self.engine)
            self._table_ready = True
        with self.engine.begin() as conn:
            conn.execute(insert_ignoring_duplicates(self.engine.dialect.name), rows)

    def _insert_each(self, rows: list[dict[str, Any]]) -> bool:
        """After a batch was refused: write row by row and drop only the rows refused.
        ``False`` when the database became unreachable meanwhile (the batch waits)."""
        self._table_ready = False  # e.g. the table was dropped under us
        written = 0
        for row in rows:
            try:
                _offload(lambda row=row: self._insert([row]))
                written += 1
            except Exception as exc:
                if _is_outage(exc):
                    return False  # the whole batch is retried; the rows written are ignored
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("the error log refused error %s: %s", row["error_id"], exc)
                self.count_drop("rejected")
        with self._counter_lock:
            self.written += written
        return True

    def _failed(self, exc: Exception) -> None:
        self._table_ready = False
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        delay = self.breaker.failed()
        if self.breaker.failures == 1:
            log.warning(
                "writing to the error log failed (%s); %d errors wait, retrying in %.2fs",
                self.last_error.splitlines()[0],
                len(self._buffer),
                delay,
            )


def _flush_all_at_exit() -> None:
    logs = [e for e in list(_LIVE_LOGS) if e._pid == os.getpid() and not e._stopping]
    deadline = time.monotonic() + max((e.exit_flush_timeout for e in logs), default=0)
    for errorlog in logs:
        errorlog.close(max(0.0, deadline - time.monotonic()))


if "eventlet" in sys.modules:
    # tpool registers its killall at import, and atexit runs last-in first-out: imported after
    # our exit flush, it would kill the OS thread of a write in flight, hanging the flush.
    import eventlet.tpool  # noqa: F401
atexit.register(_flush_all_at_exit)


def init_errorlog(state: MonitorState) -> ErrorLog | None:
    """Called by ``init_app``: the error log plane when a database URI is configured."""
    config = load_errorlog_config(state.reader)
    return ErrorLog(state, config) if config is not None else None
