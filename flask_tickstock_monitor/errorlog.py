"""The durable error log: errors written to an ``error_logs`` table, independent of Redis.

Redis pub/sub is best-effort; this is where nothing is lost. The capturing thread only appends
the queued error item to a bounded buffer (:meth:`ErrorLog.accept`, a sink the extension adds to
``ErrorCapture.sinks``); one background
thread builds the rows and inserts them in batches. While the database is down the rows wait
in the buffer and are retried with backoff; what does not fit is counted, never silently lost.
The table and its queries are in :mod:`.errordb`.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from ._util import CircuitBreaker, Slicer, mark_monitoring_thread, thread_report
from .config import ErrorLogConfig
from .errordb import SEVERITY_ORDER, create_table, row_for
from .errorgroups import insert_with_groups, list_groups, set_status
from .state import Plane
from .transport import Dropped, Outgoing

if TYPE_CHECKING:
    from .state import MonitorState

log = logging.getLogger("flask_tickstock_monitor.errorlog")
T = TypeVar("T")


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
        self._tables_checked = False  # by a reader (query): the writer has _table_ready
        self._reset()
        _LIVE_LOGS.add(self)

    def _reset(self) -> None:
        self._pid = os.getpid()
        #: entries are ``[item, row]``: the row is built once, on the writer thread
        self._buffer: deque[list[Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.loop_at = time.monotonic()
        self._stopping = False
        self._start_lock = threading.Lock()
        self._table_ready = False
        self.breaker = CircuitBreaker(base=0.05, cap=self.config.retry_max_delay)
        self.slicer = Slicer()

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
                self._buffer.append([item, None, None])
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

    def groups(self, **query: Any) -> list[dict[str, Any]]:
        """The error groups in the database (``errorgroups.list_groups``'s ``since``,
        ``status``, ``limit``, ``sort``): what a dashboard opened late or after a restart shows."""
        return list_groups(self.engine, **query)

    def set_group_status(self, fingerprint: str, status: str) -> bool:
        """Resolve, ignore or reopen a group; ``False`` when there is none."""
        return bool(self.query(lambda engine: set_status(engine, fingerprint, status)))

    def query(self, read: Callable[[Engine], T]) -> T:
        """``read(engine)`` where it cannot stall an eventlet hub (a dashboard's request),
        the tables made first if this process has not written yet."""

        def run() -> T:
            if not (self._table_ready or self._tables_checked):
                create_table(self.engine)
                self._tables_checked = True
            return read(self.engine)

        return cast(T, _offload(run))

    def liveness(self, stall_after: float) -> dict[str, Any]:
        # a write waits up to the database timeout; a backoff up to its cap
        wait = stall_after + self.config.timeout + self.config.retry_max_delay
        return thread_report(None if self._stopping else self._thread, self.loop_at, wait)

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
        mark_monitoring_thread()  # what this thread logs is never captured again
        while not self._stopping:
            self.loop_at = time.monotonic()
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
        rows = []
        slicer = self.slicer  # the rows are built in slices (see Slicer); the insert is offloaded
        slicer.start()
        for entry in batch:
            slicer.tick()
            if self._row(entry):
                rows.append((entry[1], entry[2]))
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
        """The entry's row (and its event, kept as ``entry[2]`` for the groups), built once;
        ``None`` for an item that cannot become one."""
        if entry[1] is None:
            item: Outgoing = entry[0]
            try:
                event = entry[2] = item.resolve()
                entry[1] = row_for(event, self.source) if self._wanted(event["severity"]) else {}
            except Dropped as drop:
                self.count_drop(drop.reason)
                entry[1] = {}
            except Exception:
                log.warning("could not build an error_logs row", exc_info=True)
                self.count_drop("format_error")
                entry[1] = {}
        return entry[1] or None

    def _insert(self, rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        """Insert the rows and count their events into the groups, in one transaction."""
        if not self._table_ready:
            create_table(self.engine)
            self._table_ready = True
        with self.engine.begin() as conn:
            insert_with_groups(
                conn, self.engine.dialect.name, [r for r, _ in rows], [e for _, e in rows]
            )

    def _insert_each(self, rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> bool:
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
                log.warning("the error log refused error %s: %s", row[0]["error_id"], exc)
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
