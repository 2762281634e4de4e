"""The durable error log: rows in error_logs on SQLite and PostgreSQL, whatever Redis does."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from databases import TcpProxy, read_rows
from flask import Flask
from sqlalchemy import create_engine, make_url, text

from flask_tickstock_monitor import TickStockMonitor
from flask_tickstock_monitor.config import ConfigurationError
from flask_tickstock_monitor.errorlog import ErrorLog
from flask_tickstock_monitor.signals import error_published
from flask_tickstock_monitor.transport import Outgoing

ROOT = Path(__file__).resolve().parents[1]
FAST = {  # no throttling, quick retries, a short wait on a locked SQLite file
    "TICKSTOCK_MONITOR_THROTTLE_LIMIT": 0,
    "TICKSTOCK_MONITOR_DATABASE_RETRY_MAX_DELAY": 0.1,
    "TICKSTOCK_MONITOR_DATABASE_TIMEOUT": 0.1,
}

MakeApp = Callable[..., tuple[Flask, TickStockMonitor]]


def errorlog_of(app: Flask) -> ErrorLog:
    plane = app.extensions["tickstock_monitor"].planes["errorlog"]
    assert isinstance(plane, ErrorLog)
    return plane


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


class SqliteLock:
    """Holds an exclusive lock on a SQLite file: to the error log, the database is down."""

    def __init__(self, url: str):
        Path(sqlite_path(url)).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(sqlite_path(url), isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()


# --- what is written ---------------------------------------------------------------------------


def test_rows_have_the_event_values(database_url: str, make_app: MakeApp) -> None:
    app, monitor = make_app("memory://errorlog-values", TICKSTOCK_MONITOR_DATABASE_URI=database_url)
    published: list[dict[str, Any]] = []

    def receiver(sender: Flask, event: dict[str, Any], **_: Any) -> None:
        published.append(event)

    with error_published.connected_to(receiver, app), app.app_context():
        first = monitor.publish_error(
            "Failed to calculate threshold bars",
            component="threshold_bar_service",
            category="performance",
            context={"universe_key": "nasdaq100", "symbol_count": 102},
        )
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            second = monitor.capture_exception(severity="critical")
        assert monitor.flush(2.0)
        assert errorlog_of(app).flush(5.0)

    events = {event["error_id"]: event for event in published}
    instance_id = monitor.state(app).instance_id
    rows = read_rows(database_url)
    assert [row["error_id"] for row in rows] == [first, second]
    one, two = rows
    assert {k: v for k, v in one.items() if k not in ("id", "created_at")} == {
        "error_id": first,
        "source": "TickStockAppV2",
        "severity": "error",
        "category": "performance",
        "message": "Failed to calculate threshold bars",
        "component": "threshold_bar_service",
        "traceback": None,
        "context": {
            "universe_key": "nasdaq100",
            "symbol_count": 102,
            "origin": "explicit",
            "instance_id": instance_id,
            "fingerprint": events[first]["fingerprint"],
            "environment": "production",
        },
        "timestamp": datetime.fromtimestamp(events[first]["timestamp"], timezone.utc),
    }
    assert two["severity"] == "critical"
    assert two["message"] == "ZeroDivisionError: division by zero"
    assert two["component"] == "test_component"
    assert two["category"] == "system"  # derived: nothing says more of a ZeroDivisionError
    assert two["traceback"] == events[second]["traceback"]
    assert two["traceback"].startswith("Traceback (most recent call last)")
    assert two["context"] == {
        "error_type": "ZeroDivisionError",
        "origin": "explicit",
        "instance_id": instance_id,
        "fingerprint": events[second]["fingerprint"],
        "environment": "production",
    }
    assert events[first]["fingerprint"] != events[second]["fingerprint"]
    for row in rows:
        assert row["created_at"] is not None
        assert abs((row["created_at"] - row["timestamp"]).total_seconds()) < 60
    stats = monitor.stats(app)["errorlog"]
    assert stats["written"] == 2
    assert stats["buffered"] == 0
    assert stats["dropped"] == {}
    assert stats["connected"] is True


def test_values_are_truncated_to_the_column_widths(database_url: str, make_app: MakeApp) -> None:
    app, monitor = make_app(
        "memory://errorlog-widths",
        TICKSTOCK_MONITOR_DATABASE_URI=database_url,
        TICKSTOCK_MONITOR_SOURCE="S" * 80,
    )
    with app.app_context():
        monitor.publish_error("long", component="c" * 150, category="k" * 70)
    assert errorlog_of(app).flush(5.0)
    (row,) = read_rows(database_url)
    assert row["source"] == "S" * 38 + "…[truncated]"
    assert len(row["source"]) == 50
    assert row["component"] == "c" * 88 + "…[truncated]"
    assert len(row["category"]) == 50


@pytest.mark.parametrize(
    ("minimum", "stored"),
    [
        (None, ["error", "critical"]),
        ("warning", ["warning", "error", "critical"]),
        ("CRITICAL", ["critical"]),
    ],
)
def test_only_errors_at_or_above_the_minimum_severity(
    tmp_path: Path, make_app: MakeApp, minimum: str | None, stored: list[str]
) -> None:
    url = f"sqlite:///{tmp_path}/errors.db"
    config: dict[str, Any] = {"TICKSTOCK_MONITOR_DATABASE_URI": url, **FAST}
    if minimum is not None:
        config["TICKSTOCK_MONITOR_DATABASE_MIN_SEVERITY"] = minimum
    app, monitor = make_app("memory://errorlog-severity", **config)
    with app.app_context():
        for severity in ("warning", "error", "critical"):
            monitor.publish_error(f"a {severity}", severity=severity)
    assert errorlog_of(app).flush(5.0)
    assert [row["severity"] for row in read_rows(url)] == stored


def test_the_same_error_id_is_stored_once(database_url: str, make_app: MakeApp) -> None:
    app, monitor = make_app("memory://errorlog-dupes", TICKSTOCK_MONITOR_DATABASE_URI=database_url)
    event = {
        "type": "application_error",
        "error_id": "3f1c0000-0000-4000-8000-000000000001",
        "source": "TickStockAppV2",
        "severity": "error",
        "component": "svc",
        "message": "once",
        "timestamp": 1697385600.123,
        "context": {},
    }
    errorlog = errorlog_of(app)
    for _ in range(2):  # in one batch, then again in a later one
        errorlog.accept(Outgoing("tickstock:errors", payload=dict(event), kind="error"))
    assert errorlog.flush(5.0)
    errorlog.accept(Outgoing("tickstock:errors", payload=dict(event), kind="error"))
    assert errorlog.flush(5.0)
    rows = read_rows(database_url)
    assert [(row["error_id"], row["message"]) for row in rows] == [(event["error_id"], "once")]
    assert rows[0]["timestamp"] == datetime.fromtimestamp(1697385600.123, timezone.utc)
    assert rows[0]["context"] is None


def test_a_table_dropped_underneath_is_created_again(database_url: str, make_app: MakeApp) -> None:
    app, monitor = make_app(
        "memory://errorlog-dropped", TICKSTOCK_MONITOR_DATABASE_URI=database_url, **FAST
    )
    with app.app_context():
        monitor.publish_error("before")
    errorlog = errorlog_of(app)
    assert errorlog.flush(5.0)
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE error_logs"))
    engine.dispose()
    with app.app_context():
        monitor.publish_error("after")
    assert errorlog.flush(5.0)
    assert [row["message"] for row in read_rows(database_url)] == ["after"]
    assert errorlog.stats()["dropped"] == {}


def test_writes_into_a_table_tickstockappv2_created(postgres_url: str, make_app: MakeApp) -> None:
    engine = create_engine(postgres_url)
    with engine.begin() as conn:  # the columns of TickStockAppV2's error_logs, made by hand
        conn.execute(
            text(
                "CREATE TABLE error_logs (id SERIAL PRIMARY KEY,"
                " error_id VARCHAR(255) UNIQUE NOT NULL, source VARCHAR(50) NOT NULL,"
                " severity VARCHAR(20) NOT NULL, category VARCHAR(50), message TEXT NOT NULL,"
                " component VARCHAR(100), traceback TEXT, context JSONB,"
                " timestamp TIMESTAMPTZ NOT NULL, created_at TIMESTAMPTZ DEFAULT NOW())"
            )
        )
    engine.dispose()
    app, monitor = make_app("memory://errorlog-v2", TICKSTOCK_MONITOR_DATABASE_URI=postgres_url)
    with app.app_context():
        error_id = monitor.publish_error("into their table", context={"symbol": "AAPL"})
    assert errorlog_of(app).flush(5.0)
    (row,) = read_rows(postgres_url)
    assert (row["error_id"], row["context"]["symbol"]) == (error_id, "AAPL")


# --- independent of Redis, patient with the database ------------------------------------------


def test_errors_are_stored_while_redis_is_down(
    database_url: str, make_app: MakeApp, redis_server: Any
) -> None:
    redis_server.kill()
    app, monitor = make_app(
        redis_server.url,
        TICKSTOCK_MONITOR_DATABASE_URI=database_url,
        PROPAGATE_EXCEPTIONS=False,
        **FAST,
    )

    @app.route("/fail")
    def fail() -> str:
        raise RuntimeError("quote feed returned no prices")

    assert app.test_client().get("/fail").status_code == 500
    assert errorlog_of(app).flush(5.0)
    (row,) = read_rows(database_url)
    assert row["message"] == "RuntimeError: quote feed returned no prices"
    assert row["context"]["path"] == "/fail"
    assert monitor.flush(5.0, app=app)
    stats = monitor.stats(app)
    assert stats["published"] == 0
    assert stats["dropped"] == {"publish_failed": 1}
    assert stats["errorlog"]["written"] == 1


def test_sqlite_locked_then_released(tmp_path: Path, make_app: MakeApp) -> None:
    url = f"sqlite:///{tmp_path}/errors.db"
    app, monitor = make_app("memory://errorlog-locked", TICKSTOCK_MONITOR_DATABASE_URI=url, **FAST)
    errorlog = errorlog_of(app)
    lock = SqliteLock(url)
    with app.app_context():
        ids = [monitor.publish_error(f"while locked {n}") for n in range(3)]
    assert wait_for(lambda: errorlog.stats()["last_error"] is not None)
    stats = errorlog.stats()
    assert "database is locked" in stats["last_error"]
    assert (stats["buffered"], stats["written"], stats["connected"]) == (3, 0, False)
    lock.release()
    assert errorlog.flush(5.0)
    assert [row["error_id"] for row in read_rows(url)] == ids
    assert errorlog.stats()["written"] == 3


def test_postgresql_down_then_back(postgres_url: str, make_app: MakeApp) -> None:
    server = make_url(postgres_url)
    proxy = TcpProxy((server.host or "127.0.0.1", server.port or 5432)).open()
    through_proxy = server.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    try:
        app, monitor = make_app(
            "memory://errorlog-pg-down", TICKSTOCK_MONITOR_DATABASE_URI=through_proxy, **FAST
        )
        errorlog = errorlog_of(app)
        with app.app_context():
            monitor.publish_error("before the outage")
        assert errorlog.flush(5.0)
        proxy.close()
        with app.app_context():
            monitor.publish_error("during the outage 1")
            monitor.publish_error("during the outage 2")
        assert wait_for(lambda: errorlog.stats()["last_error"] is not None)
        assert errorlog.stats()["buffered"] == 2
        assert not errorlog.flush(0.3)
        proxy.open()
        assert errorlog.flush(10.0)
    finally:
        proxy.close()
    assert [row["message"] for row in read_rows(postgres_url)] == [
        "before the outage",
        "during the outage 1",
        "during the outage 2",
    ]
    stats = errorlog.stats()
    assert (stats["written"], stats["buffered"], stats["dropped"]) == (3, 0, {})


def test_buffer_overflow_is_counted_exactly(tmp_path: Path, make_app: MakeApp) -> None:
    url = f"sqlite:///{tmp_path}/errors.db"
    app, monitor = make_app(
        "memory://errorlog-overflow",
        TICKSTOCK_MONITOR_DATABASE_URI=url,
        TICKSTOCK_MONITOR_DATABASE_BUFFER_SIZE=3,
        TICKSTOCK_MONITOR_DATABASE_BATCH_SIZE=2,
        **FAST,
    )
    errorlog = errorlog_of(app)
    lock = SqliteLock(url)
    with app.app_context():
        ids = [monitor.publish_error(f"error {n}") for n in range(7)]
    assert all(ids)  # the Redis side queued them all: the overflow is the error log's alone
    stats = errorlog.stats()
    assert (stats["buffered"], stats["dropped"], stats["dropped_total"]) == (
        3,
        {"buffer_full": 4},
        4,
    )
    lock.release()
    assert errorlog.flush(5.0)
    assert [row["error_id"] for row in read_rows(url)] == ids[:3]
    assert errorlog.stats()["written"] == 3


@pytest.mark.parametrize(
    ("flush_timeout", "unlock_after", "stored", "dropped"),
    [(5.0, 0.3, ["waiting 1", "waiting 2"], {}), (0.2, None, [], {"shutdown": 2})],
    ids=["flushed", "counted"],
)
def test_shutdown_flushes_what_waits_or_counts_it(
    tmp_path: Path,
    make_app: MakeApp,
    flush_timeout: float,
    unlock_after: float | None,
    stored: list[str],
    dropped: dict[str, int],
) -> None:
    url = f"sqlite:///{tmp_path}/errors.db"
    app, monitor = make_app(
        "memory://errorlog-shutdown",
        TICKSTOCK_MONITOR_DATABASE_URI=url,
        TICKSTOCK_MONITOR_EXIT_FLUSH_TIMEOUT=flush_timeout,
        **FAST,
    )
    errorlog = errorlog_of(app)
    lock = SqliteLock(url)
    with app.app_context():
        monitor.publish_error("waiting 1")
        monitor.publish_error("waiting 2")
    if unlock_after is not None:
        threading.Timer(unlock_after, lock.release).start()
    monitor.shutdown(app=app)
    if unlock_after is None:
        lock.release()
    assert [row["message"] for row in read_rows(url)] == stored
    stats = errorlog.stats()
    assert (stats["dropped"], stats["buffered"], stats["written"]) == (dropped, 0, len(stored))


# --- processes ------------------------------------------------------------------------------


def run_script(source: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    for name in ("REDIS_URL", "REDIS_HOST", "MONITORING_ENABLED"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


APP_SCRIPT = """
    import json, sys
    from flask import Flask
    from flask_tickstock_monitor import TickStockMonitor
    app = Flask("script")
    app.config.update(TICKSTOCK_MONITOR_REDIS_URL="memory://script",
                      TICKSTOCK_MONITOR_DATABASE_URI=sys.argv[1])
    monitor = TickStockMonitor(app)
"""


def test_errors_are_written_at_exit(database_url: str) -> None:
    out = run_script(
        APP_SCRIPT
        + """
    with app.app_context():
        error_id = monitor.publish_error("raised just before exit")
    print(json.dumps({"error_id": error_id}))
    """,
        database_url,
    )
    assert [row["error_id"] for row in read_rows(database_url)] == [out["error_id"]]


def test_works_under_eventlet(database_url: str) -> None:
    out = run_script(
        """
    import eventlet
    eventlet.monkey_patch()
    import warnings
    """
        + textwrap.dedent(APP_SCRIPT).replace("\n", "\n    ")
        + """
    ticks = []
    def ticker():  # runs only if the database I/O leaves the hub free
        while True:
            ticks.append(1)
            eventlet.sleep(0.001)
    eventlet.spawn(ticker)
    with app.app_context():
        ids = [monitor.publish_error(f"green {n}") for n in range(3)]
    errorlog = monitor.state(app).planes["errorlog"]
    print(json.dumps({"ids": ids, "flushed": errorlog.flush(10), "ticks": len(ticks),
                      "stats": errorlog.stats()}))
    """,
        database_url,
    )
    assert out["flushed"] is True
    assert out["ticks"] > 0
    assert out["stats"]["written"] == 3
    assert [row["error_id"] for row in read_rows(database_url)] == out["ids"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_writes_with_its_own_engine(database_url: str, make_app: MakeApp) -> None:
    app, monitor = make_app("memory://errorlog-fork", TICKSTOCK_MONITOR_DATABASE_URI=database_url)
    errorlog = errorlog_of(app)
    with app.app_context():
        monitor.publish_error("parent before fork")
    assert errorlog.flush(5.0)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            with app.app_context():
                monitor.publish_error("child")
            # the counters are inherited, as the publisher's are: 1 from the parent, 1 here
            if errorlog.flush(5.0) and errorlog.stats()["written"] == 2:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with app.app_context():  # the child did not close the parent's connections
        monitor.publish_error("parent after fork")
    assert errorlog.flush(5.0)
    assert [row["message"] for row in read_rows(database_url)] == [
        "parent before fork",
        "child",
        "parent after fork",
    ]


# --- configuration ----------------------------------------------------------------------------


def test_off_unless_a_database_uri_is_set(make_app: MakeApp) -> None:
    app, _ = make_app("memory://errorlog-off")
    assert "errorlog" not in app.extensions["tickstock_monitor"].planes
    app, _ = make_app(
        "memory://errorlog-disabled",
        TICKSTOCK_MONITOR_DATABASE_URI="sqlite://",
        TICKSTOCK_MONITOR_DATABASE_ENABLED=False,
    )
    assert "errorlog" not in app.extensions["tickstock_monitor"].planes


def test_postgresql_urls_use_psycopg(make_app: MakeApp) -> None:
    app, _ = make_app(
        "memory://errorlog-url",
        TICKSTOCK_MONITOR_DATABASE_URI="postgres://app:secret@db.example/tickstock",
    )
    stats = errorlog_of(app).stats()
    assert stats["database"] == "postgresql+psycopg://app:***@db.example/tickstock"
    assert stats["min_severity"] == "error"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"TICKSTOCK_MONITOR_DATABASE_URI": "not a url"},
            "TICKSTOCK_MONITOR_DATABASE_URI is not a database URL: 'not a url'",
        ),
        (
            {"TICKSTOCK_MONITOR_DATABASE_URI": "mysql://localhost/db"},
            "TICKSTOCK_MONITOR_DATABASE_URI must be a postgresql:// or sqlite:// URL, got 'mysql'",
        ),
        (
            {"TICKSTOCK_MONITOR_DATABASE_URI": "postgresql+nosuchdriver://localhost/db"},
            "TICKSTOCK_MONITOR_DATABASE_URI: no driver for 'postgresql+nosuchdriver'",
        ),
        (
            {
                "TICKSTOCK_MONITOR_DATABASE_URI": "sqlite://",
                "TICKSTOCK_MONITOR_DATABASE_MIN_SEVERITY": "fatal",
            },
            "TICKSTOCK_MONITOR_DATABASE_MIN_SEVERITY must be one of warning, error, critical,"
            " got 'fatal'",
        ),
        (
            {
                "TICKSTOCK_MONITOR_DATABASE_URI": "sqlite://",
                "TICKSTOCK_MONITOR_DATABASE_BUFFER_SIZE": 0,
            },
            "TICKSTOCK_MONITOR_DATABASE_BUFFER_SIZE must be greater than 0, got 0",
        ),
        (
            {
                "TICKSTOCK_MONITOR_DATABASE_URI": "sqlite://",
                "TICKSTOCK_MONITOR_DATABASE_BATCH_SIZE": "many",
            },
            "TICKSTOCK_MONITOR_DATABASE_BATCH_SIZE must be a number, got 'many'",
        ),
    ],
)
def test_bad_configuration_names_the_key(config: dict[str, Any], message: str) -> None:
    app = Flask("bad")
    app.config.update(TICKSTOCK_MONITOR_REDIS_URL="memory://errorlog-bad", **config)
    with pytest.raises(ConfigurationError) as info:
        TickStockMonitor(app)
    assert str(info.value).startswith(message)


def test_the_stored_row_and_the_published_event_share_one_error_id(
    redis_server, make_app, record_channels, tmp_path
):
    """Hook paths make their id on a background thread: both consumers must see the same one."""
    url = f"sqlite:///{tmp_path / 'errors.db'}"
    app, monitor = make_app(redis_server.url, TICKSTOCK_MONITOR_DATABASE_URI=url)
    recorder = record_channels(redis_server.client(), "tickstock:errors")
    for i in range(50):
        logging.getLogger(f"app.part{i}").error("failure %d", i)
    assert monitor.flush(5.0, app=app)
    published = {e["message"]: e["error_id"] for e in recorder.wait_count("tickstock:errors", 50)}
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT message, error_id FROM error_logs")).all())
    engine.dispose()
    assert len(published) == 50
    assert stored == published
