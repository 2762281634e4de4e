"""Scrape cost of the cluster view: 200 instances' latest beats in Redis -> the text format.

Run from the repository root: ``python -m bench.metrics_scrape [--instances N] [--count N]``,
or ``python -m bench --only metrics``. Starts its own redis-server on a free loopback port,
takes one real heartbeat from a real monitor (with two checks and four metrics), stores it
under N instance ids the way the health plane does (SET PX), plus 50 error groups, and times
what one scrape of the endpoint costs: SCAN + MGET, validation, the families, the rendering.
"""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

from flask import Flask

from flask_tickstock_monitor import TickStockMonitor
from flask_tickstock_monitor.cluster_metrics import ClusterCollector
from flask_tickstock_monitor.constants import latest_key
from flask_tickstock_monitor.metrics import new_registry, render

from .common import median, percentile, redis_server, scale_arguments

CHANNEL = "tickstock:monitoring"


def real_beat(url: str) -> dict[str, Any]:
    app = Flask("bench_metrics")
    app.config.update(TICKSTOCK_MONITOR_REDIS_URL=url, TICKSTOCK_MONITOR_HEALTH_ENABLED=False)
    monitor = TickStockMonitor(app)
    monitor.health_check("database")(lambda: {"status": "healthy", "latency_ms": 3.2})
    for name, value in [("symbols_tracked", 70), ("db_latency_ms", 4.1), ("queue_depth", 3)]:
        monitor.health_metric(name)(lambda value=value: value)
    beat = monitor.publish_health(app=app)
    monitor.shutdown(app=app)
    assert beat is not None
    return beat


def groups(now: float, count: int = 50) -> list[dict[str, Any]]:
    return [
        {"fingerprint": f"{i:016x}", "error_type": "ZeroDivisionError", "count": 40 + i,
         "severities": {"error": 38 + i, "critical": 2}, "series": [0] * 57 + [1, 0, 2],
         "series_start": now // 60 * 60 - 59 * 60, "first_seen": now - 3600, "last_seen": now - i,
         "status": "open", "new": False, "regression": i == 0}
        for i in range(count)
    ]  # fmt: skip


def run(instances: int = 200, count: int = 200, warmup: int = 20) -> dict[str, Any]:
    with redis_server() as server:
        beat = real_beat(server.url)
        client = server.client()
        now = time.time()
        with client.pipeline(transaction=False) as pipe:
            for i in range(instances):
                one = {**beat, "timestamp": now, "instance": {**beat["instance"], "id": f"web-{i}"}}
                one["component"] = f"component-{i % 4}"
                pipe.set(latest_key(CHANNEL, f"web-{i}"), json.dumps(one), px=600_000)
            pipe.execute()
        the_groups = groups(now)
        collector = ClusterCollector(lambda: client, CHANNEL, groups=lambda: the_groups)
        registry = new_registry(collector)
        times: list[float] = []
        body = b""
        for i in range(warmup + count):
            started = time.perf_counter()
            body, _ = render(registry)
            if i >= warmup:
                times.append((time.perf_counter() - started) * 1000)
        gzip_ms = {}
        for level in (1, 9):
            started = time.perf_counter()
            for _ in range(20):
                gzip.compress(body, compresslevel=level)
            gzip_ms[level] = (time.perf_counter() - started) * 1000 / 20
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return {
        "instances": instances,
        "scrapes": count,
        "samples": samples,
        "bytes": len(body),
        "p50_ms": round(median(times), 3),
        "p95_ms": round(percentile(times, 95), 3),
        "max_ms": round(max(times), 3),
        "gzip_level1_ms": round(gzip_ms[1], 3),
        "gzip_level9_ms": round(gzip_ms[9], 3),
    }


def rows(result: dict[str, Any]) -> list[list[str]]:
    return [
        [
            f"cluster scrape of {result['instances']} instances + 50 groups, p50 / p95",
            f"{result['p50_ms']:.2f} / {result['p95_ms']:.2f} ms",
            "<= 20 ms",
            f"{result['samples']} samples, {result['bytes'] // 1024} KiB",
        ],
        [
            "gzip of that scrape, level 1 (the endpoint's) / level 9",
            f"{result['gzip_level1_ms']:.2f} / {result['gzip_level9_ms']:.2f} ms",
            "-",
            "-",
        ],
    ]


def main() -> None:
    args = scale_arguments(__doc__)
    result = run(args.instances, args.count)
    print(
        f"{result['scrapes']} scrapes of {result['instances']} instances + 50 error groups:"
        f" {result['samples']} samples, {result['bytes']} bytes"
    )
    print(
        f"collect + render: p50 {result['p50_ms']:.3f} ms, p95 {result['p95_ms']:.3f} ms,"
        f" max {result['max_ms']:.3f} ms (target <= 20 ms)"
    )
    level1, level9 = result["gzip_level1_ms"], result["gzip_level9_ms"]
    print(f"gzip: level 1 {level1:.3f} ms, level 9 {level9:.3f} ms")


if __name__ == "__main__":
    main()
