"""An error storm: a million raises through ``capture_exception`` and 100k erroring requests.

Measured: RSS growth after a warm-up (psutil), the time taken, and the accounting: every
event produced is published or dropped with a reason, exactly, once flushed.
``python -m bench.storm`` prints one line; ``run()`` returns the figures.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from typing import Any

import psutil
from flask import Flask
from flask.logging import default_handler

from flask_tickstock_monitor import TickStockMonitor
from flask_tickstock_monitor.signals import error_published

from .common import redis_server

#: Distinct raise sites in the storm: each is one throttle key.
KINDS = (
    ValueError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OSError,
    RuntimeError,
    LookupError,
    ArithmeticError,
    AttributeError,
    IndexError,
)


def storm_app(url: str, **config: Any) -> tuple[Flask, TickStockMonitor]:
    app = Flask("storm")
    app.logger.removeHandler(default_handler)
    app.config.update(
        PROPAGATE_EXCEPTIONS=False,
        TICKSTOCK_MONITOR_REDIS_URL=url,
        TICKSTOCK_MONITOR_HEALTH_ENABLED=False,  # only errors on this publisher: exact sums
        **config,
    )
    monitor = TickStockMonitor(app)

    @app.route("/fail/<int:n>")
    def fail(n: int) -> Any:
        raise KINDS[n % len(KINDS)](f"request {n}")

    return app, monitor


def raise_and_capture(monitor: TickStockMonitor, app: Flask, count: int) -> None:
    capture = monitor.capture_exception
    with app.app_context():
        for i in range(count):
            try:
                raise KINDS[i % len(KINDS)](i)
            except Exception as exc:
                capture(exc)


def request_storm(app: Flask, count: int) -> None:
    client = app.test_client()
    for i in range(count):
        client.get(f"/fail/{i}")


def accounted(stats: dict[str, Any]) -> int:
    return int(stats["published"] + stats["dropped_total"] + stats["queued"])


def run(raises: int = 1_000_000, requests: int = 100_000, url: str | None = None) -> dict[str, Any]:
    """Both storms on one app; ``url`` defaults to a redis-server of its own."""
    if url is None:
        with redis_server() as server:
            return run(raises, requests, server.url)
    logging.getLogger().setLevel(logging.CRITICAL + 1)  # the storm's log lines are not the point
    process = psutil.Process()
    # The throttle on (10 per key per window) for raises, with a 1 s window so that it rolls
    # over during the storm; off for requests, so that the queue, the publisher and the
    # pipeline carry every one of them.
    app, monitor = storm_app(url, TICKSTOCK_MONITOR_THROTTLE_WINDOW=1.0)
    suppressed: list[int] = []

    def on_error(sender: Flask, event: dict[str, Any], **_: Any) -> None:
        suppressed.append(event.get("suppressed", 0))

    error_published.connect(on_error, app, weak=False)
    raise_and_capture(monitor, app, 10_000)  # warm-up: every code path, caches, allocator
    assert monitor.flush(10, app=app)
    warm = monitor.stats(app)
    time.sleep(1.0)  # the storm starts with fresh throttle windows
    suppressed.clear()
    gc.collect()
    rss_before = process.memory_info().rss
    started = time.perf_counter()
    raise_and_capture(monitor, app, raises)
    raise_seconds = time.perf_counter() - started
    assert monitor.flush(30, app=app)
    after_raises = monitor.stats(app)
    error_published.disconnect(on_error, app)
    windows = monitor.state(app).capture.throttle._windows
    outstanding = sum(entry[2] for entry in windows.values())  # not yet reported by an event

    req_app, req_monitor = storm_app(url, TICKSTOCK_MONITOR_THROTTLE_LIMIT=0)
    request_storm(req_app, 2_000)
    assert req_monitor.flush(10, app=req_app)
    req_warm = req_monitor.stats(req_app)
    gc.collect()
    rss_before_requests = process.memory_info().rss
    started = time.perf_counter()
    request_storm(req_app, requests)
    request_seconds = time.perf_counter() - started
    assert req_monitor.flush(30, app=req_app)
    after_requests = req_monitor.stats(req_app)
    gc.collect()
    rss_after = process.memory_info().rss
    monitor.shutdown(app=app)
    req_monitor.shutdown(app=req_app)
    return {
        "raises": raises,
        "raises_per_s": raises / raise_seconds,
        "raise_published": after_raises["published"] - warm["published"],
        "raise_dropped": _minus(after_raises["dropped"], warm["dropped"]),
        "raise_accounted": accounted(after_raises) - accounted(warm),
        # what the published events say was suppressed before them (the throttle's report)
        "raise_reported_suppressed": sum(suppressed),
        "raise_outstanding_suppressed": outstanding,
        "warmup_throttled": warm["dropped"].get("throttled", 0),
        "requests": requests,
        "requests_per_s": requests / request_seconds,
        "request_published": after_requests["published"] - req_warm["published"],
        "request_dropped": _minus(after_requests["dropped"], req_warm["dropped"]),
        "request_accounted": accounted(after_requests) - accounted(req_warm),
        "queued_after_flush": after_raises["queued"] + after_requests["queued"],
        "rss_growth_raises_mb": (rss_before_requests - rss_before) / 2**20,
        "rss_growth_mb": (rss_after - rss_before) / 2**20,
    }


def _minus(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def rows(result: dict[str, Any]) -> list[list[str]]:
    """The storm's rows of ``python -m bench``'s table."""
    return [
        [
            "RSS growth, 1M raises + 100k erroring requests",
            f"{result['rss_growth_mb']:.1f} MB",
            "<= 20 MB",
            "published + dropped = produced: "
            f"{result['raise_accounted'] + result['request_accounted']:,}",
        ]
    ]


def line(result: dict[str, Any]) -> str:
    return (
        f"storm: {result['raises']:,} raises ({result['raises_per_s']:,.0f}/s) + "
        f"{result['requests']:,} erroring requests ({result['requests_per_s']:,.0f}/s): "
        f"RSS +{result['rss_growth_mb']:.1f} MB; raises published {result['raise_published']}, "
        f"dropped {result['raise_dropped']}; requests published {result['request_published']}, "
        f"dropped {result['request_dropped']}"
    )


if __name__ == "__main__":
    figures = run()
    print(line(figures))
    print(json.dumps(figures))
