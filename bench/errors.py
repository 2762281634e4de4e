"""The error plane: request-path cost, caller-side cost, sustained events per second.

Baselines measured in the same run: a bare erroring request (no monitor) and a synchronous
PUBLISH per error, which is what the seed card's ``MonitoringPublisher`` does (redis-py client
with the seed card's ``socket_timeout: 5``); for the request path, also the least an in-process
capture can do (:func:`floor_capture`). For the sustained rate, two ceilings:
``redis-benchmark``'s pipelined PUBLISH (the server) and a bare Python pipeline (a deque and a
thread that sends what it takes), which is the most one interpreter can do per event.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any

import orjson
import redis
from flask import Flask
from flask.logging import default_handler

from flask_tickstock_monitor import TickStockMonitor, _compat, events, flaskhooks
from flask_tickstock_monitor.transport import wire

from .common import median, percentile, redis_server

ROUNDS = 25
ROUND_SECONDS = 0.2  # ten times the publisher's default linger
SUSTAINED_RUNS = 3  # the median is reported, with the range


def seed_card_error(message: str, context: dict[str, Any]) -> str:
    """What the seed card's MonitoringPublisher.publish_error sends, serialised as it does."""
    return json.dumps(
        {
            "type": "application_error",
            "severity": "error",
            "component": "bench",
            "message": message,
            "timestamp": time.time(),
            "context": context,
        }
    )


def erroring_app(variant: str, url: str, flask_logging: bool = False) -> tuple[Flask, Any]:
    """``flask_logging``: as Flask ships, the traceback is logged (to a null stream here);
    otherwise logging is silenced in every variant, which leaves the bare request cheapest."""
    app = Flask(f"bench_{variant}_{flask_logging}")
    if not flask_logging:
        app.logger.disabled = True
    app.logger.removeHandler(default_handler)
    app.logger.addHandler(logging.StreamHandler(open(os.devnull, "w")))  # noqa: SIM115
    app.config["PROPAGATE_EXCEPTIONS"] = False
    monitor = None
    if variant in ("monitor", "hooks"):
        app.config.update(
            TICKSTOCK_MONITOR_REDIS_URL=url,
            TICKSTOCK_MONITOR_THROTTLE_LIMIT=0,  # every error is really published
            TICKSTOCK_MONITOR_HEALTH_INTERVAL=3600,
        )
        monitor = TickStockMonitor(app)
        if variant == "hooks":
            # Flask calling the monitor's after-request hook (and blinker its signal receiver,
            # where that is connected), which then capture nothing: the part of the cost that
            # is the framework's dispatch, not our work. The request is still marked as
            # captured, as a capture marks it, so that a later hook or log record returns at
            # once, as it does behind a real capture.
            def mark_only(*args: Any, **kwargs: Any) -> None:
                req = args[10] if len(args) > 10 else kwargs.get("req")
                if req is None:
                    req = _compat.current_request()
                if req is not None:
                    req.__dict__[flaskhooks.REQ_CAPTURED] = True

            monitor.state(app).capture.capture = mark_only  # type: ignore[method-assign]
    elif variant == "floor":
        floor_capture(app)
    elif variant == "sync":
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)

        @app.errorhandler(500)
        def publish_synchronously(error: Any) -> Any:
            exc = getattr(error, "original_exception", error)
            try:
                client.publish("tickstock:errors", seed_card_error(str(exc), {}))
            except redis.RedisError:
                pass  # the request still waited for the timeout
            return "error", 500

    @app.route("/boom")
    def boom() -> Any:
        raise ZeroDivisionError("bench")

    return app, monitor


def floor_capture(app: Flask) -> deque[tuple[Any, ...]]:
    """The least an in-process capture can do on the request thread, as the floor for ours: one
    after-request hook that, for a 5xx with an exception, copies what the error contract needs
    (type, message, each frame's code and offset, endpoint, method, path, time) into a bounded
    deque. Nothing is sent, checked, deduplicated or throttled; no thread takes the events."""
    captured: deque[tuple[Any, ...]] = deque(maxlen=1024)

    @app.after_request
    def capture(response: Any) -> Any:
        if response.status_code >= 500:
            exc = sys.exc_info()[1]
            if exc is not None:
                frames: list[Any] = []
                tb = exc.__traceback__
                while tb is not None:
                    frames += (tb.tb_frame.f_code, tb.tb_lasti)
                    tb = tb.tb_next
                req = _compat.current_request()
                captured.append(
                    (
                        type(exc),
                        str(exc),
                        tuple(frames),
                        req.endpoint,
                        req.method,
                        req.path,
                        time.time(),
                    )
                )
        return response

    return captured


def request_times(app: Flask, count: int) -> list[float]:
    client = app.test_client()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.get("/boom")
        times.append(time.perf_counter() - started)
    return times


def request_path(
    url: str, variants: list[str], rounds: int = ROUNDS, flask_logging: bool = False
) -> dict[str, Any]:
    """p50 of one erroring request per variant, and each variant's cost as a ratio to bare.

    Rounds are interleaved, and the ratio is the median over rounds of the variant's p50 over
    bare's p50 in the same round: a VM whose speed drifts by tens of percent within a minute
    (this one does) moves both sides of each ratio alike. Each round runs the variants in a
    new order, so none always follows another. ``control`` is a second bare app measured the
    same way: how far from 1.000 a ratio lands with nothing between the two (the noise)."""
    apps = {v: erroring_app(v, url, flask_logging) for v in variants}
    apps["control"] = erroring_app("bare", url, flask_logging)
    variants = [*variants, "control"]
    order = random.Random(len(variants) * rounds)
    samples: dict[str, list[float]] = {v: [] for v in variants}
    ratios: dict[str, list[float]] = {v: [] for v in variants}
    per_round = {}
    for variant, (app, _) in apps.items():
        warm = request_times(app, 50)
        # A round lasts many publisher lingers, so that what the publisher does for a
        # variant's errors lands in that variant's own round, not in the next variant's.
        per_round[variant] = max(50, round(ROUND_SECONDS / median(warm)))
    for _ in range(rounds):
        p50 = {}
        order.shuffle(variants)
        for variant in variants:
            times = request_times(apps[variant][0], per_round[variant])
            samples[variant].extend(times)
            p50[variant] = median(times)
        for variant in variants:
            ratios[variant].append(p50[variant] / p50["bare"])
    for app, monitor in apps.values():
        if monitor is not None:
            monitor.shutdown(timeout=0.5, app=app)
    result: dict[str, Any] = {v: median(s) for v, s in samples.items()}
    result["ratio"] = {v: median(r) for v, r in ratios.items()}
    return result


def sync_paused_request(url: str) -> float:
    app, _ = erroring_app("sync", url)
    return min(request_times(app, 2))


def caller_cost(url: str, count: int = 200_000) -> dict[str, float]:
    app = Flask("bench_caller")
    app.logger.disabled = True
    app.config.update(
        TICKSTOCK_MONITOR_REDIS_URL=url,
        TICKSTOCK_MONITOR_THROTTLE_LIMIT=0,
        TICKSTOCK_MONITOR_QUEUE_SIZE=count + 1,
        TICKSTOCK_MONITOR_HEALTH_INTERVAL=3600,
    )
    monitor = TickStockMonitor(app)
    times = []
    with app.app_context():
        publish = monitor.publish_error
        for i in range(count):
            started = time.perf_counter()
            publish("caller cost", context={"i": i})
            times.append(time.perf_counter() - started)
    monitor.shutdown(timeout=10, app=app)
    return {"p50_us": percentile(times, 50) * 1e6, "p99_us": percentile(times, 99) * 1e6}


def sustained(url: str, count: int = 300_000) -> dict[str, Any]:
    """Events/s from one process: from the first publish_error until all reached Redis, the
    producer holding back while more than 8 batches wait (the rate it can keep up forever)."""
    app = Flask("bench_sustained")
    app.config.update(
        TICKSTOCK_MONITOR_REDIS_URL=url,
        TICKSTOCK_MONITOR_THROTTLE_LIMIT=0,
        TICKSTOCK_MONITOR_QUEUE_SIZE=count + 1,
        TICKSTOCK_MONITOR_BATCH_SIZE=1024,
        TICKSTOCK_MONITOR_HEALTH_INTERVAL=3600,
    )
    monitor = TickStockMonitor(app)
    publisher = monitor.state(app).publisher
    with app.app_context():
        publish = monitor.publish_error
        started = time.perf_counter()
        for i in range(count):
            publish("sustained", context={"i": i})
            if not i % 1024:
                # a steady producer: let the queue hold a few batches, not the whole run
                while publisher.queued > 8 * 1024:
                    time.sleep(0.0005)
        assert monitor.flush(120, app=app)
        elapsed = time.perf_counter() - started
    stats = monitor.stats(app)
    monitor.shutdown(app=app)
    return {
        "events_per_s": stats["published"] / elapsed,
        "published": stats["published"],
        "dropped": stats["dropped_total"],
    }


FloorItem = tuple[str, str, dict[str, int], float]


def floor_messages(batch: list[FloorItem]) -> list[tuple[str, bytes]]:
    """The bare pipeline's publisher half: the same JSON object as ours, made with orjson."""
    return [
        (
            "tickstock:errors",
            orjson.dumps(
                {
                    "type": "application_error",
                    "error_id": error_id,
                    "source": "TickStockAppV2",
                    "severity": "error",
                    "component": "bench",
                    "message": message,
                    "timestamp": timestamp,
                    "context": context,
                    "origin": "explicit",
                    "instance_id": "bench",
                }
            ),
        )
        for error_id, message, context, timestamp in batch
    ]


def python_floor(port: int, count: int = 300_000) -> float:
    """The least one Python process can do per event, as the ceiling for ours: the caller
    appends a tuple (with an id from the same generator) to a deque; a thread makes the same
    JSON object with orjson and sends 1,024 PUBLISHes at a time on a raw socket. No snapshot,
    no scrubbing, no stats."""
    queue: deque[FloorItem] = deque()
    sock = socket.create_connection(("127.0.0.1", port))
    done = threading.Event()

    def drain() -> None:
        sent = 0
        while sent < count:
            if not queue:
                time.sleep(0.0002)
                continue
            batch = [queue.popleft() for _ in range(min(1024, len(queue)))]
            messages = floor_messages(batch)
            sock.sendall(wire._pack_publishes(b"PUBLISH", messages))
            wire._read_line_replies(sock, len(messages))
            sent += len(messages)
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    started = time.perf_counter()
    for i in range(count):
        queue.append((events.new_id(), "sustained", {"i": i}, time.time()))
        if not i % 1024:
            while len(queue) > 8 * 1024:
                time.sleep(0.0005)
    done.wait(120)
    elapsed = time.perf_counter() - started
    sock.close()
    return count / elapsed


def sync_sustained(url: str, count: int = 20_000) -> float:
    client = redis.Redis.from_url(url, socket_timeout=5)
    started = time.perf_counter()
    for i in range(count):
        client.publish("tickstock:errors", seed_card_error("sustained", {"i": i}))
    return count / (time.perf_counter() - started)


def redis_benchmark_ceiling(port: int) -> float | None:
    """redis-benchmark's pipelined PUBLISH rate: the ceiling of the server itself."""
    try:
        out = subprocess.run(
            [
                "redis-benchmark",
                "-p",
                str(port),
                "-n",
                "300000",
                "-P",
                "64",
                "-q",
                "publish",
                "tickstock:errors",
                "x" * 200,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for token in out.replace("\r", "\n").split():
        try:
            value = float(token)
        except ValueError:
            continue
        if value > 1000:
            return value
    return None


def run() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with redis_server() as server:
        for name, flask_logging in (("logged", True), ("quiet", False)):
            results[f"request_up_{name}"] = request_path(
                server.url,
                ["bare", "monitor", "hooks", "floor", "sync"],
                flask_logging=flask_logging,
            )
        server.pause()
        try:
            for name, flask_logging in (("logged", True), ("quiet", False)):
                paused = request_path(server.url, ["bare", "monitor"], ROUNDS // 2, flask_logging)
                results[f"request_paused_{name}"] = paused
            results["sync_paused_s"] = sync_paused_request(server.url)
        finally:
            server.resume()
        results["caller"] = caller_cost(server.url)
        runs = [sustained(server.url) for _ in range(SUSTAINED_RUNS)]
        results["sustained"] = sorted(runs, key=lambda r: r["events_per_s"])[len(runs) // 2]
        results["sustained"]["runs_per_s"] = [r["events_per_s"] for r in runs]
        floors = sorted(python_floor(server.port) for _ in range(SUSTAINED_RUNS))
        results["python_floor_per_s"] = floors[len(floors) // 2]
        results["sync_sustained_per_s"] = sync_sustained(server.url)
        results["redis_benchmark_per_s"] = redis_benchmark_ceiling(server.port)
    return results


def rows(results: dict[str, Any]) -> list[list[str]]:
    ceiling = results["redis_benchmark_per_s"]
    out = []
    for name, label in (("logged", "Flask's default logging"), ("quiet", "logging silenced")):
        up, paused = results[f"request_up_{name}"], results[f"request_paused_{name}"]
        out.append(
            [
                f"erroring request p50, Redis up, {label}",
                f"{up['ratio']['monitor']:.3f}x bare",
                "<= 1.05x",
                f"sync publish {up['ratio']['sync']:.3f}x; bare {up['bare'] * 1e6:.0f} us;"
                f" Flask's dispatch of our hooks alone {up['ratio']['hooks']:.3f}x;"
                f" the least capture (nothing sent) {up['ratio']['floor']:.3f}x;"
                f" a second bare app {up['ratio']['control']:.3f}x",
            ]
        )
        out.append(
            [
                f"erroring request p50, Redis paused, {label}",
                f"{paused['ratio']['monitor']:.3f}x bare",
                "<= 1.05x",
                f"sync publish {results['sync_paused_s']:.2f} s a request (socket_timeout=5);"
                f" a second bare app {paused['ratio']['control']:.3f}x",
            ]
        )
    out += [
        [
            "publish_error caller cost p50 / p99",
            f"{results['caller']['p50_us']:.1f} / {results['caller']['p99_us']:.1f} us",
            "-",
            "-",
        ],
        [
            "sustained events/s, one process",
            f"{results['sustained']['events_per_s']:,.0f}/s (runs "
            + " / ".join(f"{r / 1000:.0f}k" for r in results["sustained"]["runs_per_s"])
            + ")",
            ">= 150,000/s",
            f"sync publish {results['sync_sustained_per_s']:,.0f}/s; bare Python pipeline "
            f"{results['python_floor_per_s']:,.0f}/s; redis-benchmark -P 64 "
            + (f"{ceiling:,.0f}/s" if ceiling else "n/a"),
        ],
    ]
    return out
