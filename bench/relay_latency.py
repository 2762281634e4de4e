"""Invalidation latency: PUBLISH on Redis → key gone from the local cache → Socket.IO event.

Run from the repository root: ``python -m bench.relay_latency [--count N]``. Starts its own
redis-server on a free loopback port and serves the app on another (Flask-SocketIO, threading
mode); a python-socketio client on the websocket transport plays the browser.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
import uuid
from typing import Any

import socketio
from flask import Flask
from flask_socketio import SocketIO
from werkzeug.serving import make_server

from flask_tickstock_monitor import TickStockMonitor, signals

from .common import median, percentile, redis_server

CHANNEL = "tickstock:cache:invalidation"


def run(count: int = 2000, warmup: int = 200) -> dict[str, float]:
    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)  # access lines, websocket close
    with redis_server() as server:
        return measure(server, count, warmup)


def measure(server: Any, count: int, warmup: int) -> dict[str, float]:
    app = Flask("bench")
    app.config["TICKSTOCK_MONITOR_REDIS_URL"] = server.url
    SocketIO(app, async_mode="threading")
    monitor = TickStockMonitor(app)
    cache: dict[str, int] = {}
    monitor.register_cache("relationship", cache, app=app)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    http.daemon_threads = True
    threading.Thread(target=http.serve_forever, daemon=True).start()
    relay = app.extensions["tickstock_monitor"].planes["relay"]
    assert relay.wait_connected(5)

    arrived = threading.Event()
    state: dict[str, float | str] = {}
    client = socketio.Client(reconnection=False)

    @client.on("cache_invalidated")
    def on_invalidated(message: dict) -> None:
        if message.get("invalidation_id") == state.get("id"):
            state["browser"] = time.perf_counter()
            arrived.set()

    def on_applied(sender: Flask, message: dict, **_: object) -> None:
        state["applied"] = time.perf_counter()

    signals.cache_invalidated.connect(on_applied, app, weak=False)
    client.connect(f"http://127.0.0.1:{http.server_port}", transports=["websocket"])
    publisher = server.client()
    applied: list[float] = []
    browser: list[float] = []
    try:
        for i in range(warmup + count):
            key = f"universe:{i}"
            cache[key] = i
            arrived.clear()
            state["id"] = str(uuid.uuid4())
            payload = json.dumps(
                {
                    "type": "cache_invalidation",
                    "cache": "relationship",
                    "action": "invalidate",
                    "keys": [key],
                    "timestamp": time.time(),
                    "invalidation_id": state["id"],
                    "origin": "bench",
                }
            )
            started = time.perf_counter()
            publisher.publish(CHANNEL, payload)
            if not arrived.wait(5):
                raise RuntimeError(f"invalidation {i} never reached the Socket.IO client")
            if key in cache:
                raise RuntimeError(f"{key} is still cached after the event arrived")
            if i >= warmup:
                applied.append((float(state["applied"]) - started) * 1000)
                browser.append((float(state["browser"]) - started) * 1000)
    finally:
        client.disconnect()
        monitor.shutdown(app=app)
        http.shutdown()
    return {
        "count": count,
        "applied_p50_ms": median(applied),
        "applied_p99_ms": percentile(applied, 99),
        "browser_p50_ms": median(browser),
        "browser_p99_ms": percentile(browser, 99),
        "browser_max_ms": max(browser),
    }


def rows(result: dict[str, Any]) -> list[list[str]]:
    return [
        [
            "invalidation published -> key gone, p50 / p99",
            f"{result['applied_p50_ms']:.2f} / {result['applied_p99_ms']:.2f} ms",
            "-",
            "-",
        ],
        [
            "invalidation published -> Socket.IO client has it, p50 / p99",
            f"{result['browser_p50_ms']:.2f} / {result['browser_p99_ms']:.2f} ms",
            "p99 <= 5 ms",
            f"max {result['browser_max_ms']:.2f} ms",
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    result = run(args.count, args.warmup)
    print(f"invalidations: {args.count} (after {args.warmup} warm-up), loopback, threading mode")
    print(
        f"published -> key gone from the local cache: p50 {result['applied_p50_ms']:.3f} ms, "
        f"p99 {result['applied_p99_ms']:.3f} ms"
    )
    print(
        f"published -> Socket.IO client has the event: p50 {result['browser_p50_ms']:.3f} ms, "
        f"p99 {result['browser_p99_ms']:.3f} ms (max {result['browser_max_ms']:.3f} ms)"
    )
    target = "met" if result["browser_p99_ms"] <= 5.0 else "MISSED"
    print(f"target p99 <= 5 ms: {target}")


if __name__ == "__main__":
    main()
