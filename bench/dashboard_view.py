"""What the dashboard's JSON API costs with 200 instances and 50 error groups.

Run from the repository root: ``python -m bench.dashboard_view [--instances N] [--count N]``,
or ``python -m bench --only dashboard``. Starts its own redis-server, takes one real heartbeat
from a real monitor (bench/metrics_scrape.py's), hands the dashboard's subscriber N instances'
beats and 200 error events in 50 groups (each with a real traceback), and times whole requests
through Flask's test client (routing, the auth guard, building the body, JSON): ``api/view``
(plain and filtered), ``api/groups`` from the subscriber's memory and from the durable log
(SQLite), and one page of ``api/errors`` from the durable log.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from typing import Any

from flask import Flask

from flask_tickstock_monitor import TickStockMonitor, errordb, events
from flask_tickstock_monitor.errorgroups import insert_with_groups

from .common import median, percentile, redis_server, scale_arguments
from .metrics_scrape import real_beat

GROUPS = 50
EVENTS_PER_GROUP = 4


def error_events(now: float, groups: int = GROUPS) -> list[dict[str, Any]]:
    """``EVENTS_PER_GROUP`` events in each of ``groups`` groups, newest last."""
    out = []
    for n in range(groups * EVENTS_PER_GROUP):
        group = n % groups
        try:
            {}[f"symbol_{group}"]
        except KeyError:
            text = traceback.format_exc()
        event = events.error_event(
            "bench", f"component-{group % 4}", "critical" if group % 10 == 0 else "error",
            f"KeyError in handler {['alpha', 'beta', 'gamma', 'delta', 'eps'][group % 5]}"
            f" {chr(65 + group // 5)}{chr(65 + group % 5)}",
            now - (groups * EVENTS_PER_GROUP - n), error_type="KeyError", traceback_text=text,
            context={"request": {"path": f"/api/symbols/{group}", "method": "GET"}, "n": n},
        )  # fmt: skip
        event.update(instance_id=f"web-{n % 200}", release="v1.4.2", environment="production")
        out.append(event)
    return out


def make_app(url: str, database: str | None = None) -> tuple[Flask, TickStockMonitor]:
    app = Flask("bench_dashboard")
    app.config.update(
        TICKSTOCK_MONITOR_REDIS_URL=url,
        TICKSTOCK_MONITOR_HEALTH_ENABLED=False,
        TICKSTOCK_MONITOR_DASHBOARD=True,
    )
    if database is not None:
        app.config["TICKSTOCK_MONITOR_DATABASE_URI"] = database
    return app, TickStockMonitor(app)


def feed(app: Flask, beat: dict[str, Any], instances: int, errors: list[dict[str, Any]]) -> None:
    """The beats and errors, handed to the dashboard's subscriber as received messages."""
    subscriber = app.extensions["tickstock_monitor"].dashboard.subscriber
    now = time.time()
    for i in range(instances):
        one = {**beat, "timestamp": now, "instance": {**beat["instance"], "id": f"web-{i}"}}
        one["component"] = f"component-{i % 4}"
        subscriber.handle_message(subscriber.monitoring_channel, json.dumps(one))
    for event in errors:
        subscriber.handle_message(subscriber.errors_channel, json.dumps(event))


def store(app: Flask, errors: list[dict[str, Any]]) -> None:
    """The same errors written to the durable log, as its writer would."""
    engine = app.extensions["tickstock_monitor"].errorlog.engine
    errordb.create_table(engine)
    with engine.begin() as conn:
        rows = [errordb.row_for(event, "bench") for event in errors]
        insert_with_groups(conn, engine.dialect.name, rows, errors)


def timed(client: Any, path: str, count: int, warmup: int) -> dict[str, Any]:
    """Wall-clock times of whole requests, and the CPU time of the thread serving them (the
    request runs on this thread: what it costs, whatever else the machine is doing)."""
    times: list[float] = []
    cpu: list[float] = []
    size = 0
    for i in range(warmup + count):
        started, cpu_started = time.perf_counter(), time.thread_time()
        response = client.get(path)
        body = response.get_data()
        elapsed = (time.perf_counter() - started) * 1000
        cpu_ms = (time.thread_time() - cpu_started) * 1000
        assert response.status_code == 200, body[:200]
        size = len(body)
        if i >= warmup:
            times.append(elapsed)
            cpu.append(cpu_ms)
    return {
        "p50_ms": round(median(times), 3),
        "p95_ms": round(percentile(times, 95), 3),
        "max_ms": round(max(times), 3),
        "cpu_p50_ms": round(median(cpu), 3),
        "cpu_p95_ms": round(percentile(cpu, 95), 3),
        "bytes": size,
    }


def run(instances: int = 200, count: int = 200, warmup: int = 20) -> dict[str, Any]:
    out: dict[str, Any] = {"instances": instances, "groups": GROUPS, "requests": count}
    with redis_server() as server, tempfile.TemporaryDirectory() as tmp:
        beat = real_beat(server.url)
        errors = error_events(time.time())
        memory_app, memory_monitor = make_app(server.url)
        database_app, database_monitor = make_app(server.url, f"sqlite:///{tmp}/errors.db")
        try:
            feed(memory_app, beat, instances, errors)
            store(database_app, errors)
            client = memory_app.test_client()
            out["view"] = timed(client, "/monitor/api/view", count, warmup)
            out["view_filtered"] = timed(
                client, "/monitor/api/view?severity=critical&q=handler", count, warmup
            )
            out["groups_memory"] = timed(client, "/monitor/api/groups", count, warmup)
            client = database_app.test_client()
            out["groups_database"] = timed(client, "/monitor/api/groups", count, warmup)
            out["errors_database"] = timed(client, "/monitor/api/errors", count, warmup)
        finally:
            memory_monitor.shutdown(app=memory_app)
            database_monitor.shutdown(app=database_app)
    return out


LABELS = {
    "view": ("api/view", "<= 25 ms p95"),
    "view_filtered": ("api/view?severity=critical&q=handler", "-"),
    "groups_memory": ("api/groups (subscriber's memory)", "-"),
    "groups_database": ("api/groups (durable log, SQLite)", "-"),
    "errors_database": ("api/errors, 100 (durable log, SQLite)", "-"),
}


def rows(result: dict[str, Any]) -> list[list[str]]:
    scale = f"{result['instances']} instances + {result['groups']} groups"
    return [
        [
            f"dashboard {label}, {scale}, p50 / p95 (CPU p50 / p95)",
            f"{r['p50_ms']:.2f} / {r['p95_ms']:.2f} ms"
            f" ({r['cpu_p50_ms']:.2f} / {r['cpu_p95_ms']:.2f} ms)",
            target,
            f"{r['bytes'] // 1024} KiB",
        ]
        for key, (label, target) in LABELS.items()
        for r in [result[key]]
    ]


def main() -> None:
    args = scale_arguments(__doc__)
    result = run(args.instances, args.count)
    print(f"{result['requests']} requests each, {result['instances']} instances, 50 groups:")
    for key, (label, target) in LABELS.items():
        r = result[key]
        print(
            f"{label}: p50 {r['p50_ms']:.3f} ms, p95 {r['p95_ms']:.3f} ms,"
            f" max {r['max_ms']:.3f} ms; CPU p50 {r['cpu_p50_ms']:.3f} ms,"
            f" p95 {r['cpu_p95_ms']:.3f} ms; {r['bytes']} bytes"
            + (f" (target {target})" if target != "-" else "")
        )
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
