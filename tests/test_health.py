from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest
from conftest import wait_for
from flask import Flask

from flask_tickstock_monitor import ConfigurationError, TickStockMonitor, signals
from flask_tickstock_monitor.builtin_metrics import cache_hit_rate

MONITORING = "tickstock:monitoring"


@pytest.fixture
def monitor() -> TickStockMonitor:
    return TickStockMonitor()


def test_heartbeat_carries_the_contract(redis_server, make_app, record_channels, monitor):
    @monitor.health_metric("symbols_tracked")
    def symbols_tracked():
        return 70

    recorder = record_channels(redis_server.client(), MONITORING)
    app, _ = make_app(
        redis_server.url,
        monitor,
        TICKSTOCK_MONITOR_HEALTH_INTERVAL=0.2,
        TICKSTOCK_MONITOR_HEALTH_ENABLED=True,
        TICKSTOCK_MONITOR_INSTANCE_ID="web-1",
    )
    state = monitor.state(app)
    beats = recorder.wait_count(MONITORING, 3)
    assert len(beats) >= 3
    first, second, third = beats[:3]
    assert [b["seq"] for b in beats[:3]] == [1, 2, 3]
    assert first["environment"] == "production" and "release" not in first  # none configured
    assert set(first) == {
        "type",
        "component",
        "source",
        "environment",
        "status",
        "timestamp",
        "metrics",
        "instance",
        "seq",
        "interval_s",
        "event_type",
        "health",
    }
    assert first["type"] == "health_check"
    assert first["event_type"] == "HEALTH_CHECK"
    assert first["component"] == "test_component"
    assert first["source"] == "TickStockAppV2"
    assert first["status"] == "healthy"
    assert first["interval_s"] == 0.2
    assert set(first["metrics"]) == {"memory_usage_mb", "symbols_tracked"}
    assert first["metrics"]["symbols_tracked"] == 70
    uptime = first["instance"]["uptime_s"]
    assert first["instance"] == {
        "id": "web-1",
        "host": state.host,
        "pid": os.getpid(),
        "boot_id": state.boot_id,
        "uptime_s": uptime,
    }
    assert 0 <= uptime < 5
    health = first["health"]
    assert set(health) == {"overall_score", "status", "components", "uptime_seconds"}
    assert health["overall_score"] == 100
    assert health["status"] == "healthy"
    assert health["uptime_seconds"] == uptime
    assert set(health["components"]) == {"redis"}
    redis_component = health["components"]["redis"]
    assert set(redis_component) == {"status", "state", "score", "details", "latency_ms"}
    # "OK" for TickStockAppV2's subscriber (anything else is a warning there); ours in state
    assert redis_component["status"] == "OK" and redis_component["state"] == "healthy"
    assert redis_component["score"] == 100
    assert redis_component["details"] == f"healthy (latency_ms={redis_component['latency_ms']})"
    assert 0 < redis_component["latency_ms"] < 500
    # the interval is kept with about ±10 % jitter (loosely: the machine may be busy)
    gap = third["timestamp"] - second["timestamp"]
    assert 0.15 < gap < 0.6
    assert monitor.stats(app)["health"]["beats"] >= 3


def test_latest_beat_is_kept_in_redis_with_an_expiry(redis_server, make_app, monitor):
    app, _ = make_app(
        redis_server.url,
        monitor,
        TICKSTOCK_MONITOR_HEALTH_INTERVAL=0.2,
        TICKSTOCK_MONITOR_HEALTH_ENABLED=True,
        TICKSTOCK_MONITOR_INSTANCE_ID="web-1",
    )
    client = redis_server.client()
    assert wait_for(lambda: client.get("tickstock:monitoring:latest:web-1") is not None)
    monitor.shutdown(app=app)
    stored = json.loads(client.get("tickstock:monitoring:latest:web-1"))
    assert stored["instance"]["id"] == "web-1"
    assert stored["seq"] == monitor.health_snapshot(app=app)["seq"]
    assert 0 < client.pttl("tickstock:monitoring:latest:web-1") <= 600
    assert wait_for(lambda: client.get("tickstock:monitoring:latest:web-1") is None, 2)


def test_log_line_and_signal_per_beat(redis_server, make_app, monitor, caplog):
    app, _ = make_app(redis_server.url, monitor, TICKSTOCK_MONITOR_HEALTH_INTERVAL=30)
    received = []

    def on_health(sender, event):
        received.append((sender, event))

    caplog.set_level(logging.INFO, logger="flask_tickstock_monitor")
    with signals.health_published.connected_to(on_health, app):
        beat = monitor.publish_health(app=app)
        assert monitor.flush(app=app)
        assert wait_for(lambda: any(e["seq"] == beat["seq"] for _, e in received))
    sender, event = next((s, e) for s, e in received if e["seq"] == beat["seq"])
    assert sender is app
    assert event == beat
    lines = [r for r in caplog.records if r.getMessage().startswith("MONITORING: ")]
    assert lines and lines[-1].name == "flask_tickstock_monitor"
    assert lines[-1].levelno == logging.INFO
    assert any(
        r.getMessage() == f"MONITORING: Health metrics published: {beat['metrics']}" for r in lines
    )


def test_status_change_publishes_at_once(redis_server, make_app, record_channels, monitor):
    status = {"value": "healthy"}

    @monitor.health_check("database")
    def database():
        return status["value"]

    recorder = record_channels(redis_server.client(), MONITORING)
    make_app(
        redis_server.url,
        monitor,
        TICKSTOCK_MONITOR_HEALTH_INTERVAL=30,
        TICKSTOCK_MONITOR_HEALTH_POLL=0.05,
        TICKSTOCK_MONITOR_HEALTH_ENABLED=True,
    )
    assert recorder.wait_count(MONITORING, 1)[0]["status"] == "healthy"
    status["value"] = "degraded"
    beats = recorder.wait_count(MONITORING, 2, timeout=2)
    assert len(beats) == 2
    assert beats[1]["status"] == "degraded"
    assert beats[1]["health"]["components"]["database"] == {
        "status": "DEGRADED",
        "state": "degraded",
        "score": 50,
        "details": "degraded",
    }
    assert beats[1]["health"]["overall_score"] == 75
    # no change: no beat before the (long) interval
    time.sleep(0.3)
    assert len(recorder.on(MONITORING)) == 2


def test_slow_check_is_degraded_and_not_started_twice(redis_server, make_app, monitor):
    release = threading.Event()
    calls = []

    @monitor.health_check("slow")
    def slow():
        calls.append(1)
        release.wait(5)
        return "healthy"

    app, _ = make_app(
        redis_server.url,
        monitor,
        TICKSTOCK_MONITOR_HEALTH_INTERVAL=30,
        TICKSTOCK_MONITOR_HEALTH_CHECK_TIMEOUT=0.1,
    )
    started = time.monotonic()
    beat = monitor.publish_health(app=app)
    assert time.monotonic() - started < 1.0
    assert beat["status"] == "degraded"
    slow_component = beat["health"]["components"]["slow"]
    assert slow_component["state"] == "degraded" and slow_component["status"] == "DEGRADED"
    assert slow_component["details"].startswith("timed out after 0.1s (running for 0.1")
    assert monitor.publish_health(app=app)["status"] == "degraded"
    assert len(calls) == 1
    release.set()
    assert wait_for(lambda: monitor.publish_health(app=app)["status"] == "healthy")
    assert monitor.publish_health(app=app)["health"]["components"]["slow"] == {
        "status": "OK",
        "state": "healthy",
        "score": 100,
        "details": "healthy",
    }


def test_raising_and_invalid_checks_are_unhealthy(redis_server, make_app, monitor):
    @monitor.health_check("database")
    def database():
        raise RuntimeError("connection refused")

    @monitor.health_check("queue")
    def queue():
        return "ok"

    @monitor.health_check("feed")
    def feed():
        return {"status": "healthy", "lag_ms": 12}

    app, _ = make_app(redis_server.url, monitor)
    beat = monitor.publish_health(app=app)
    components = beat["health"]["components"]
    assert components["database"] == {
        "status": "UNHEALTHY",
        "state": "unhealthy",
        "score": 0,
        "details": "RuntimeError: connection refused",
    }
    assert components["queue"] == {
        "status": "UNHEALTHY",
        "state": "unhealthy",
        "score": 0,
        "details": "invalid check result 'ok'",
    }
    assert components["feed"] == {
        "status": "OK",
        "state": "healthy",
        "score": 100,
        "lag_ms": 12,
        "details": "healthy (lag_ms=12)",
    }
    assert beat["status"] == "unhealthy"
    assert beat["health"]["overall_score"] == 50  # (100 redis + 0 + 0 + 100) / 4


def test_checks_run_in_an_app_context(redis_server, make_app, monitor):
    from flask import current_app

    @monitor.health_check("config")
    def config():
        return "healthy" if current_app.config["TESTING"] else "unhealthy"

    app, _ = make_app(redis_server.url, monitor)
    assert monitor.publish_health(app=app)["health"]["components"]["config"]["state"] == "healthy"


def test_metric_provider_errors_are_reported_not_fatal(redis_server, make_app, monitor):
    release = threading.Event()

    @monitor.health_metric("symbols_tracked")
    def symbols_tracked():
        return 70

    @monitor.health_metric("broken")
    def broken():
        return 1 / 0

    @monitor.health_metric("slow")
    def slow():
        release.wait(5)
        return 1

    @monitor.health_metric("text")
    def text():
        return "many"

    @monitor.health_metric("absent")
    def absent():
        return None

    app, _ = make_app(
        redis_server.url,
        monitor,
        TICKSTOCK_MONITOR_HEALTH_CHECK_TIMEOUT=0.1,
    )
    try:
        beat = monitor.publish_health(app=app)
    finally:
        release.set()
    assert beat["status"] == "healthy"
    assert set(beat["metrics"]) == {"memory_usage_mb", "symbols_tracked"}
    assert beat["metric_errors"] == {
        "broken": "ZeroDivisionError: division by zero",
        "slow": "timed out after 0.1s",
        "text": "returned str, not a number",
    }


def test_memory_metric_is_current_rss(redis_server, make_app, monitor):
    app, _ = make_app(redis_server.url, monitor)
    memory = monitor.publish_health(app=app)["metrics"]["memory_usage_mb"]
    rss = psutil.Process().memory_info().rss / 1024 / 1024
    assert isinstance(memory, float)
    assert 5 < memory < 100_000
    assert abs(memory - rss) < max(20, rss * 0.2)


class RelationshipCacheLike:
    """Reports ``hit_rate`` as a percentage, as TickStockAppV2's RelationshipCache does."""

    def get_stats(self):
        return {"hits": 3, "misses": 1, "hit_rate": 75.0, "total_requests": 4}


class CountingCache:
    hits = 1
    misses = 3


def test_cache_hit_rate_is_a_fraction_over_every_cache(redis_server, make_app, monitor):
    caches = {"relationship": RelationshipCacheLike(), "local": CountingCache(), "plain": {}}
    assert cache_hit_rate(caches) == 0.5
    assert cache_hit_rate({"plain": object()}) is None
    app, _ = make_app(redis_server.url, monitor)
    assert "cache_hit_rate" not in monitor.publish_health(app=app)["metrics"]
    monitor.state(app).caches = caches  # what monitor.register_cache fills
    assert monitor.publish_health(app=app)["metrics"]["cache_hit_rate"] == 0.5


def test_active_websockets_counts_connections_without_replacing_handlers(
    redis_server, make_app, monitor
):
    from flask_socketio import SocketIO

    app = Flask("ws")
    app.config.update(TICKSTOCK_MONITOR_REDIS_URL=redis_server.url, TESTING=True)
    socketio = SocketIO(app, async_mode="threading")
    connects = []

    @socketio.on("connect")
    def on_connect():
        connects.append("/")

    @socketio.on("connect", namespace="/chat")
    def on_chat_connect():
        connects.append("/chat")

    monitor.init_app(app)
    try:
        assert monitor.publish_health(app=app)["metrics"]["active_websockets"] == 0
        first = socketio.test_client(app)
        second = socketio.test_client(app)
        also_chat = socketio.test_client(app, namespace="/chat")
        assert monitor.publish_health(app=app)["metrics"]["active_websockets"] == 3
        assert connects == ["/", "/", "/chat"]  # the app's own handlers still run
        first.disconnect()
        assert monitor.publish_health(app=app)["metrics"]["active_websockets"] == 2
        second.disconnect()
        also_chat.disconnect(namespace="/chat")
    finally:
        monitor.shutdown(app=app)


def test_health_endpoint(redis_server, make_app, monitor):
    state = {"value": "healthy"}

    @monitor.health_check("database")
    def database():
        return state["value"]

    app, _ = make_app(
        redis_server.url,
        monitor,
        TICKSTOCK_MONITOR_HEALTH_ENDPOINT="/health/monitor",
    )
    client = app.test_client()
    response = client.get("/health/monitor")
    assert response.status_code == 200
    assert response.json["status"] == "healthy"
    assert response.json["event_type"] == "HEALTH_CHECK"
    state["value"] = "unhealthy"
    monitor.publish_health(app=app)
    response = client.get("/health/monitor")
    assert response.status_code == 503
    assert response.json["health"]["components"]["database"]["status"] == "unhealthy"  # ours


def test_no_endpoint_by_default(redis_server, make_app):
    app, _ = make_app(redis_server.url)
    assert app.test_client().get("/health/monitor").status_code == 404


def test_redis_down_is_unhealthy_and_counted(redis_server, make_app, monitor):
    app, _ = make_app(redis_server.url, monitor)
    redis_server.kill()
    beat = monitor.publish_health(app=app)
    assert beat["status"] == "unhealthy"
    assert beat["health"]["components"]["redis"]["state"] == "unhealthy"
    assert beat["health"]["components"]["redis"]["details"].startswith("ConnectionError")
    monitor.flush(app=app)
    assert monitor.stats(app)["dropped"] == {"publish_failed": 1}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("TICKSTOCK_MONITOR_HEALTH_JITTER", 1.5, "TICKSTOCK_MONITOR_HEALTH_JITTER must be below 1"),
        ("TICKSTOCK_MONITOR_HEALTH_ENDPOINT", "health", "TICKSTOCK_MONITOR_HEALTH_ENDPOINT must"),
        ("TICKSTOCK_MONITOR_HEALTH_CHECK_TIMEOUT", "soon", "HEALTH_CHECK_TIMEOUT must be a num"),
        ("TICKSTOCK_MONITOR_HEALTH_POLL", 0, "TICKSTOCK_MONITOR_HEALTH_POLL must be greater"),
    ],
)
def test_bad_health_config_names_the_key(redis_server, make_app, key, value, message):
    with pytest.raises(ConfigurationError, match=message):
        make_app(redis_server.url, **{key: value})


def test_check_timeout_falls_back_to_tickstock_env(redis_server, make_app, monkeypatch):
    monkeypatch.setenv("HEALTH_CHECK_TIMEOUT", "5")
    app, monitor = make_app(redis_server.url)
    assert monitor.state(app).planes["health"].check_timeout == 5.0


def test_forked_child_beats_and_master_stops(redis_server, make_app, record_channels, monitor):
    recorder = record_channels(redis_server.client(), MONITORING)
    app, _ = make_app(
        redis_server.url,
        monitor,
        TICKSTOCK_MONITOR_HEALTH_INTERVAL=0.2,
        TICKSTOCK_MONITOR_HEALTH_ENABLED=True,
    )
    plane = monitor.state(app).planes["health"]
    assert recorder.wait_count(MONITORING, 1)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        ok = wait_for(lambda: plane.stats()["running"] and plane.latest is not None, 3)
        ok = ok and monitor.flush(app=app)
        os._exit(0 if ok and plane.latest["seq"] == 1 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not plane.stats()["running"]  # the forking parent (a pre-fork master) stops
    beats = recorder.wait(lambda r: any(b["instance"]["pid"] == pid for b in r.on(MONITORING)))
    assert beats
    child = [b for b in recorder.on(MONITORING) if b["instance"]["pid"] == pid]
    assert child[0]["seq"] == 1
    assert child[0]["instance"]["boot_id"] != monitor.state(app).boot_id


def test_heartbeat_under_eventlet(redis_server):
    script = textwrap.dedent(f"""
        import eventlet
        eventlet.monkey_patch()
        import time
        from flask import Flask
        from flask_tickstock_monitor import TickStockMonitor
        app = Flask("eventlet_app")
        app.config.update(TICKSTOCK_MONITOR_REDIS_URL={redis_server.url!r},
                          TICKSTOCK_MONITOR_HEALTH_INTERVAL=0.1)
        monitor = TickStockMonitor(app)
        deadline = time.monotonic() + 5
        while monitor.stats(app)["published"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        monitor.shutdown(app=app)
        print(monitor.stats(app)["published"] >= 3, time.monotonic() - started < 1.0)
    """)
    result = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert result.stdout.strip() == "True True", result.stderr
