"""``flask tickstock init-db | errors | prune``: output text and exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, insert, inspect

from flask_tickstock_monitor import TickStockMonitor
from flask_tickstock_monitor.cli import tickstock
from flask_tickstock_monitor.errordb import error_logs

MakeApp = Callable[..., tuple[Flask, TickStockMonitor]]
NOW = datetime.now(timezone.utc).replace(microsecond=0)  # set again by `filled`: ages are relative


def invoke(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(tickstock, list(args))


def add_rows(url: str, *rows: tuple[str, str, str, timedelta, dict[str, Any] | None]) -> None:
    """Rows (error_id, severity, message, age, context) logged ``age`` ago."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            insert(error_logs),
            [
                {
                    "error_id": error_id,
                    "source": "TickStockAppV2",
                    "severity": severity,
                    "message": message,
                    "component": "svc",
                    "context": context,
                    "timestamp": NOW - age,
                    "created_at": NOW - age,
                }
                for error_id, severity, message, age, context in rows
            ],
        )
    engine.dispose()


@pytest.fixture
def app(database_url: str, make_app: MakeApp) -> Flask:
    app, _ = make_app("memory://errorlog-cli", TICKSTOCK_MONITOR_DATABASE_URI=database_url)
    return app


@pytest.fixture
def filled(app: Flask, database_url: str) -> Flask:
    global NOW
    # the rows' ages count from now, not from when the module was imported: the prune
    # thresholds below would otherwise drift with how long the suite ran before this test
    NOW = datetime.now(timezone.utc).replace(microsecond=0)
    assert invoke(app, "init-db").exit_code == 0
    add_rows(
        database_url,
        ("e1", "warning", "disk almost full", timedelta(minutes=1), None),
        ("e2", "error", "quote feed down", timedelta(minutes=2), {"symbol": "AAPL"}),
        ("e3", "critical", "database gone", timedelta(hours=3), None),
        ("e4", "error", "old one", timedelta(days=40), None),
    )
    return app


def stamp(age: timedelta) -> str:
    return (NOW - age).isoformat()


def test_init_db_creates_the_table_once(app: Flask, database_url: str) -> None:
    where = database_url
    result = invoke(app, "init-db")
    assert (result.exit_code, result.output) == (0, f"Created table error_logs in {where}.\n")
    engine = create_engine(database_url)
    indexes = {index["name"] for index in inspect(engine).get_indexes("error_logs")}
    engine.dispose()
    assert {"idx_error_logs_timestamp", "idx_error_logs_severity"} <= indexes
    result = invoke(app, "init-db")
    assert (result.exit_code, result.output) == (0, f"Found table error_logs in {where}.\n")


def test_errors_newest_first(filled: Flask) -> None:
    result = invoke(filled, "errors")
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        f"{stamp(timedelta(minutes=1))}  warning   svc: disk almost full",
        f'{stamp(timedelta(minutes=2))}  error     svc: quote feed down  {{"symbol": "AAPL"}}',
        f"{stamp(timedelta(hours=3))}  critical  svc: database gone",
        f"{stamp(timedelta(days=40))}  error     svc: old one",
    ]


def test_errors_filters_and_limits(filled: Flask) -> None:
    result = invoke(filled, "errors", "--since", "5m", "--severity", "error")
    assert (result.exit_code, result.output) == (
        0,
        f'{stamp(timedelta(minutes=2))}  error     svc: quote feed down  {{"symbol": "AAPL"}}\n',
    )
    result = invoke(filled, "errors", "--severity", "critical", "--limit", "1")
    assert result.output == f"{stamp(timedelta(hours=3))}  critical  svc: database gone\n"
    result = invoke(filled, "errors", "--since", "30s")
    assert (result.exit_code, result.output) == (0, "No errors found.\n")


def test_errors_as_json(filled: Flask) -> None:
    result = invoke(filled, "errors", "--json", "--since", "2h")
    assert result.exit_code == 0
    assert [json.loads(line) for line in result.output.splitlines()] == [
        {
            "error_id": "e1",
            "severity": "warning",
            "component": "svc",
            "message": "disk almost full",
            "error_context": None,
            "created_at": stamp(timedelta(minutes=1)),
        },
        {
            "error_id": "e2",
            "severity": "error",
            "component": "svc",
            "message": "quote feed down",
            "error_context": {"symbol": "AAPL"},
            "created_at": stamp(timedelta(minutes=2)),
        },
    ]
    assert invoke(filled, "errors", "--json", "--since", "1s").output == ""


def test_prune_deletes_old_rows(filled: Flask) -> None:
    result = invoke(filled, "prune", "--older-than", "30d")
    assert (result.exit_code, result.output) == (0, "Deleted 1 error from error_logs.\n")
    result = invoke(filled, "prune", "--older-than", "90s")
    assert (result.exit_code, result.output) == (0, "Deleted 2 errors from error_logs.\n")
    assert invoke(filled, "errors").output == (
        f"{stamp(timedelta(minutes=1))}  warning   svc: disk almost full\n"
    )


@pytest.mark.parametrize("value", ["30x", "d", "-5m", "0s", "five minutes"])
def test_bad_durations_are_usage_errors(app: Flask, value: str) -> None:
    result = invoke(app, "prune", "--older-than", value)
    assert result.exit_code == 2
    assert (
        f"Invalid value for '--older-than': {value!r} is not a duration: use a positive number"
        " followed by s, m, h, d or w (e.g. 30s, 5m, 2h, 30d)"
    ) in " ".join(result.output.split())


def test_prune_needs_older_than(app: Flask) -> None:
    result = invoke(app, "prune")
    assert result.exit_code == 2
    assert "Missing option '--older-than'" in result.output


def test_not_configured(make_app: MakeApp) -> None:
    app, _ = make_app("memory://errorlog-cli-off")
    for command in (["init-db"], ["errors"], ["prune", "--older-than", "1d"]):
        result = invoke(app, *command)
        assert (result.exit_code, result.output) == (
            1,
            "Error: The durable error log is not configured: set TICKSTOCK_MONITOR_DATABASE_URI.\n",
        )


def test_unreachable_database(make_app: MakeApp) -> None:
    from servers import free_port

    port = free_port()
    app, _ = make_app(
        "memory://errorlog-cli-down",
        TICKSTOCK_MONITOR_DATABASE_URI=f"postgresql://postgres:pw@127.0.0.1:{port}/none",
    )
    for command in (["init-db"], ["errors"], ["prune", "--older-than", "1d"]):
        result = invoke(app, *command)
        assert result.exit_code == 1
        assert result.output.startswith(
            f"Error: The error log database postgresql+psycopg://postgres:***@127.0.0.1:{port}/none"
            " failed: "
        ), result.output
        assert "Connection refused" in result.output
