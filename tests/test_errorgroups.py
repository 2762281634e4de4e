"""Error groups in the durable log, on SQLite and PostgreSQL: exact across processes."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from groupshape import SHAPE_KEYS
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from flask_tickstock_monitor import errordb, errorgroups
from flask_tickstock_monitor.errorgroups import (
    error_group_counts,
    error_groups,
    get_group,
    insert_with_groups,
    list_groups,
    prune_groups,
    recent_events,
    set_status,
    upsert_groups,
)
from flask_tickstock_monitor.events import new_id

FP_A, FP_B, FP_C = "a" * 16, "b" * 16, "c" * 16


def error(fingerprint: str = FP_A, ago: float = 0.0, **fields: Any) -> dict[str, Any]:
    """An error event as the publisher sends it, ``ago`` seconds old."""
    event = {
        "type": "application_error",
        "error_id": new_id(),
        "source": "TickStockAppV2",
        "severity": "error",
        "component": "app",
        "message": "ZeroDivisionError: division by zero",
        "error_type": "ZeroDivisionError",
        "timestamp": time.time() - ago,
        "fingerprint": fingerprint,
        "instance_id": "host:1",
        "environment": "production",
        **fields,
    }
    event["context"] = {"fingerprint": event["fingerprint"]}  # as the error log will keep it
    return {key: value for key, value in event.items() if value is not None}


def engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"timeout": 30})
    return create_engine(url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    if database_url.startswith("sqlite"):
        from pathlib import Path

        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = engine_for(database_url)
    errordb.create_table(engine)
    errorgroups.create_group_tables(engine)
    yield engine
    engine.dispose()


def store(engine: Engine, events: list[dict[str, Any]]) -> int:
    """What the error log's writer does with a batch: rows and groups in one transaction."""
    rows = [errordb.row_for(event, "TickStockAppV2") for event in events]
    with engine.begin() as conn:
        return insert_with_groups(conn, engine.dialect.name, rows, events)


def group_row(engine: Engine, fingerprint: str) -> dict[str, Any]:
    with engine.connect() as conn:
        query = select(error_groups).where(error_groups.c.fingerprint == fingerprint)
        return dict(conn.execute(query).one()._mapping)


# --- counting ------------------------------------------------------------------------------------


def test_a_batch_becomes_one_row_per_fingerprint(engine: Engine) -> None:
    batch = [
        error(FP_A, ago=120, release="1.2.0", message="first"),
        error(FP_A, ago=10, release="1.2.0", severity="critical", message="last"),
        error(FP_A, ago=60, component="jobs", message="middle"),
        error(FP_B, ago=5, release="1.3.0"),
    ]
    assert store(engine, batch) == 4
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(error_groups)).scalar() == 2
    group = get_group(engine, FP_A)
    assert group is not None and set(group) == SHAPE_KEYS
    assert group["count"] == 3
    assert group["first_seen"] == pytest.approx(batch[0]["timestamp"], abs=1e-3)
    assert group["last_seen"] == pytest.approx(batch[1]["timestamp"], abs=1e-3)
    assert group["message"] == "last" and group["error_type"] == "ZeroDivisionError"
    assert group["severities"] == {"error": 2, "critical": 1}
    assert group["components"] == {"app": 2, "jobs": 1}
    assert group["releases"] == {"1.2.0": 2}
    assert group["environments"] == {"production": 3}
    assert group["instances"] == {"host:1": 3}
    assert group["status"] == "open" and group["new"] and not group["regression"]
    assert group["last_event"]["error_id"] == batch[1]["error_id"]
    assert group["last_event"]["severity"] == "critical"
    # the three events in their minutes of the last hour
    assert sum(group["series"]) == 3 and len(group["series"]) == 60
    assert group["series_start"] % 60 == 0
    row = group_row(engine, FP_A)
    assert (row["first_release"], row["last_release"]) == ("1.2.0", "1.2.0")
    assert row["last_severity"] == "critical" and row["last_error_id"] == batch[1]["error_id"]


def test_batches_add_up_and_older_events_do_not_replace_the_last(engine: Engine) -> None:
    store(engine, [error(ago=30, message="newer", release="2.0")])
    store(engine, [error(ago=300, message="older", release="1.0")])
    group = get_group(engine, FP_A)
    assert group is not None and group["count"] == 2
    assert group["message"] == "newer"
    row = group_row(engine, FP_A)
    assert (row["first_release"], row["last_release"]) == ("1.0", "2.0")
    assert group["first_seen"] < group["last_seen"]


def test_a_batch_stored_twice_is_counted_once(engine: Engine) -> None:
    batch = [error() for _ in range(5)]
    assert store(engine, batch) == 5
    assert store(engine, batch) == 0  # a retry after a lost acknowledgement
    assert store(engine, [batch[0], error(), error()]) == 2
    twice = error()
    assert store(engine, [twice, twice]) == 1  # one id twice in a batch: one row
    assert get_group(engine, FP_A)["count"] == 8  # type: ignore[index]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(errordb.error_logs)).scalar() == 8


def test_an_event_without_a_fingerprint_gets_its_message_one(engine: Engine) -> None:
    old = [error(message=f"User {n} failed: 'x{n}'") for n in range(3)]
    for event in old:
        del event["fingerprint"]
    with engine.begin() as conn:
        assert upsert_groups(conn, engine.dialect.name, old) == 1
    [group] = list_groups(engine)
    assert group["count"] == 3 and group["message"] == "User 2 failed: 'x2'"


def test_long_values_fit_their_columns(engine: Engine) -> None:
    store(
        engine,
        [
            error(
                component="c" * 10_000,
                release="r" * 10_000,
                environment="e" * 10_000,
                error_type="T" * 10_000,
                message="m" * 100_000,
                instance_id="i" * 10_000,
            )
        ],
    )
    group = get_group(engine, FP_A)
    assert group is not None and group["count"] == 1
    assert len(group["message"]) <= errorgroups.MAX_MESSAGE_CHARS
    assert list(group["releases"]) == ["r" * 200]


# --- writers in several processes ----------------------------------------------------------------


def write_from_a_process(url: str, worker: int, events: int, batch: int) -> None:
    engine = engine_for(url)
    try:
        for start in range(0, events, batch):
            store(
                engine,
                [
                    error(
                        (FP_A, FP_B, FP_C)[n % 3],
                        severity=("error", "critical")[n % 2],
                        instance_id=f"worker-{worker}",
                        release=f"1.{n % 4}",
                    )
                    for n in range(start, min(events, start + batch))
                ],
            )
    finally:
        engine.dispose()


def test_writers_in_four_processes_are_counted_exactly(engine: Engine, database_url: str) -> None:
    per_process, batch = 500, 25
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=write_from_a_process, args=(database_url, w, per_process, batch))
        for w in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    groups = {g["fingerprint"]: g for g in list_groups(engine)}
    expected = {FP_A: 167, FP_B: 167, FP_C: 166}  # n % 3 over 0..499, per process
    assert {fp: g["count"] for fp, g in groups.items()} == {k: 4 * v for k, v in expected.items()}
    for fp, group in groups.items():
        assert group["instances"] == {f"worker-{w}": expected[fp] for w in range(4)}
        assert sum(group["severities"].values()) == group["count"]
        assert sum(group["releases"].values()) == group["count"]
        assert sum(group["series"]) == group["count"]  # all stored within the hour
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(errordb.error_logs)).scalar() == 2000


# --- status and regressions ----------------------------------------------------------------------


def test_resolved_then_seen_again_is_open_and_a_regression(engine: Engine) -> None:
    store(engine, [error(ago=60)])
    assert set_status(engine, FP_A, "resolved")
    row = group_row(engine, FP_A)
    assert row["status"] == "resolved" and row["resolved_at"] is not None
    store(engine, [error(ago=600)])  # older than the resolution (it waited in a buffer)
    assert group_row(engine, FP_A)["status"] == "resolved"
    store(engine, [error()])
    row = group_row(engine, FP_A)
    assert row["status"] == "open" and row["regression"] is True
    assert row["resolved_at"] is None and row["regressed_at"] is not None
    assert row["count"] == 3
    group = get_group(engine, FP_A)
    assert group is not None and group["regression"] and group["status"] == "open"
    assert set_status(engine, FP_A, "open")  # reopening by hand clears the mark
    assert group_row(engine, FP_A)["regression"] is False


def test_ignored_stays_ignored_but_counts(engine: Engine) -> None:
    store(engine, [error(release="1.0")])
    assert set_status(engine, FP_A, "ignored")
    store(engine, [error(release="2.0"), error(release="2.0")])
    row = group_row(engine, FP_A)
    assert row["status"] == "ignored" and row["regression"] is False and row["count"] == 3


def test_a_release_it_was_never_seen_in_is_a_regression(engine: Engine) -> None:
    store(engine, [error(release="1.0"), error(release="1.1")])  # a new group: no regression
    assert group_row(engine, FP_A)["regression"] is False
    store(engine, [error(release="1.0")])
    assert group_row(engine, FP_A)["regression"] is False
    store(engine, [error()])  # no release named
    assert group_row(engine, FP_A)["regression"] is False
    store(engine, [error(release="1.2")])
    row = group_row(engine, FP_A)
    assert row["regression"] is True and row["status"] == "open"
    # a group first seen without a release is not a regression in its first one
    store(engine, [error(FP_B)])
    store(engine, [error(FP_B, release="1.0")])
    assert group_row(engine, FP_B)["regression"] is False


def test_status_of_an_unknown_group_and_a_bad_status(engine: Engine) -> None:
    assert not set_status(engine, FP_C, "resolved")
    with pytest.raises(ValueError, match="status must be one of open, resolved, ignored"):
        set_status(engine, FP_A, "closed")


# --- reading -------------------------------------------------------------------------------------


def test_list_groups_sorts_filters_and_limits(engine: Engine) -> None:
    store(engine, [error(FP_A, ago=3 * 3600)] * 1 + [error(FP_B, ago=30) for _ in range(3)])
    store(engine, [error(FP_C, ago=5), error(FP_C, ago=4)])
    assert [g["fingerprint"] for g in list_groups(engine)] == [FP_C, FP_B, FP_A]
    assert [g["fingerprint"] for g in list_groups(engine, sort="count")] == [FP_B, FP_C, FP_A]
    assert [g["fingerprint"] for g in list_groups(engine, limit=1)] == [FP_C]
    assert [g["fingerprint"] for g in list_groups(engine, since=timedelta(hours=1))] == [
        FP_C,
        FP_B,
    ]
    set_status(engine, FP_B, "resolved")
    assert [g["fingerprint"] for g in list_groups(engine, status="resolved")] == [FP_B]
    old = get_group(engine, FP_A)
    assert old is not None and not old["new"] and old["series"] == [0] * 60
    assert get_group(engine, "f" * 16) is None
    with pytest.raises(ValueError, match="sort must be one of"):
        list_groups(engine, sort="age")
    with pytest.raises(ValueError, match="status must be one of"):
        list_groups(engine, status="closed")


def test_the_series_counts_each_minute_of_the_last_hour(engine: Engine) -> None:
    now = time.time()
    ages = [5, 5, 125, 30 * 60, 58 * 60, 2 * 3600]
    store(engine, [error(ago=age) for age in ages])
    group = get_group(engine, FP_A)
    assert group is not None
    start = group["series_start"]
    assert start == (int(now // 60) - 59) * 60 or start == (int(now // 60) - 58) * 60
    expected = [0] * 60
    for age in ages:
        index = int((now - age) // 60 - start // 60)
        if 0 <= index < 60:
            expected[index] += 1
    assert group["series"] == expected
    assert sum(group["series"]) == 5 and group["count"] == 6


def test_recent_events_of_a_group(engine: Engine) -> None:
    store(engine, [error(FP_A, ago=n, message=f"a{n}") for n in range(5)] + [error(FP_B)])
    recent = recent_events(engine, FP_A, limit=3)
    assert [event["message"] for event in recent] == ["a0", "a1", "a2"]
    assert all(event["context"]["fingerprint"] == FP_A for event in recent)
    assert recent_events(engine, "f" * 16) == []


def test_prune_groups(engine: Engine) -> None:
    store(engine, [error(FP_A, ago=10 * 86400), error(FP_B)])
    assert prune_groups(engine, timedelta(days=7)) == 1
    assert [g["fingerprint"] for g in list_groups(engine)] == [FP_B]
    with engine.connect() as conn:
        left = conn.execute(select(error_group_counts.c.fingerprint).distinct()).scalars().all()
    assert left == [FP_B]


def test_the_error_logs_table_is_unchanged() -> None:
    # TickStockAppV2 shares it: the groups live in tables of their own
    assert [c.name for c in errordb.error_logs.columns] == [
        "id",
        "error_id",
        "source",
        "severity",
        "category",
        "message",
        "component",
        "traceback",
        "context",
        "timestamp",
        "created_at",
    ]
    assert error_groups.metadata is errordb.metadata
