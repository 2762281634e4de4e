"""What a new user hit: calls from background threads, an init_app that leaves nothing behind on
a bad value, and probes an orchestrator can use (liveness never depends on Redis; readiness
drains on shutdown)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from flask import Flask

from flask_tickstock_monitor import ConfigurationError, TickStockMonitor

# --- a monitor of one app, outside any app context --------------------------------------------


def in_thread(func):
    """Run ``func`` on a plain thread (no app context there) and return what it returned."""
    out: dict = {}

    def run():
        try:
            out["value"] = func()
        except BaseException as exc:  # handed back to the test
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_a_monitor_of_one_app_serves_background_threads(redis_server, make_app, record_channels):
    app, monitor = make_app(redis_server.url)
    recorder = record_channels(redis_server.client(), "tickstock:errors")
    cache = {"nasdaq100": [1]}

    def background_service():
        try:
            raise ZeroDivisionError("in a service thread")
        except ZeroDivisionError:
            error_id = monitor.capture_exception(context={"service": "market"})
        monitor.register_cache("relationship", cache)
        monitor.invalidate("relationship", ["nasdaq100"])
        assert monitor.flush(5)
        return error_id, monitor.stats()

    error_id, stats = in_thread(background_service)
    assert error_id and stats["published"] >= 2 and stats["dropped"] == {}
    assert cache == {}
    [event] = recorder.wait_count("tickstock:errors", 1)
    assert event["error_id"] == error_id
    assert event["error_type"] == "ZeroDivisionError"
    assert event["context"] == {"service": "market"}


def test_a_monitor_of_two_apps_still_needs_to_be_told_which(redis_server, make_app):
    monitor = TickStockMonitor()
    make_app(redis_server.url, monitor)
    app_b, _ = make_app(redis_server.url, monitor)
    with pytest.raises(RuntimeError, match=r"outside of application context.*serves 2 apps"):
        in_thread(lambda: monitor.stats())
    assert in_thread(lambda: monitor.stats(app=app_b))["enabled"] is True
    with app_b.app_context():
        assert monitor.stats()["instance_id"]


def test_a_monitor_of_no_app_says_so():
    with pytest.raises(RuntimeError, match="outside of application context: pass app="):
        TickStockMonitor().stats()


# --- init_app is atomic -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"TICKSTOCK_MONITOR_DASHBOARD_AUTH": 42}, "TICKSTOCK_MONITOR_DASHBOARD_AUTH must be a"),
        ({"TICKSTOCK_MONITOR_READINESS_CHECKS": [1]}, "TICKSTOCK_MONITOR_READINESS_CHECKS must"),
        ({"TICKSTOCK_MONITOR_DATABASE_URI": "mysql://x/y"}, "TICKSTOCK_MONITOR_DATABASE_URI must"),
        ({"TICKSTOCK_MONITOR_RELAY_MAX_KEYS": 0}, "TICKSTOCK_MONITOR_RELAY_MAX_KEYS must be at"),
    ],
)
def test_a_bad_value_leaves_nothing_behind(tickstock_memory_url, bad, message):
    app = Flask("atomic")
    app.config.update(
        TICKSTOCK_MONITOR_REDIS_URL=tickstock_memory_url,
        TICKSTOCK_MONITOR_HEALTH_ENDPOINT="/healthz",
        TICKSTOCK_MONITOR_LIVENESS_ENDPOINT="/livez",
        TICKSTOCK_MONITOR_READINESS_ENDPOINT="/readyz",
        TICKSTOCK_MONITOR_DASHBOARD=True,
        **bad,
    )
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    hooks = (dict(app.before_request_funcs), dict(app.after_request_funcs))
    handlers = list(logging.getLogger().handlers)
    with pytest.raises(ConfigurationError, match=message):
        TickStockMonitor(app)
    assert {rule.rule for rule in app.url_map.iter_rules()} == rules
    assert (dict(app.before_request_funcs), dict(app.after_request_funcs)) == hooks
    assert logging.getLogger().handlers == handlers
    assert app.blueprints == {}
    assert "tickstock_monitor" not in app.extensions
    # the same app with the value mended registers as if nothing had happened
    for key in bad:
        del app.config[key]
    monitor = TickStockMonitor(app)
    assert {"/healthz", "/livez", "/readyz", "/monitor/"} <= {
        r.rule for r in app.url_map.iter_rules()
    }
    monitor.shutdown(app=app)


# --- liveness and readiness ---------------------------------------------------------------------


@pytest.fixture
def monitor() -> TickStockMonitor:
    return TickStockMonitor()


@pytest.fixture
def probed(redis_server, make_app, monitor):
    def make(**config):
        app, _ = make_app(
            redis_server.url,
            monitor,
            TICKSTOCK_MONITOR_LIVENESS_ENDPOINT="/livez",
            TICKSTOCK_MONITOR_READINESS_ENDPOINT="/readyz",
            TICKSTOCK_MONITOR_HEALTH_ENABLED=True,
            TICKSTOCK_MONITOR_HEALTH_INTERVAL=30,
            TICKSTOCK_MONITOR_DRAIN_ON_SIGTERM=False,
            **config,
        )
        return app, app.test_client()

    return make


def test_liveness_does_not_depend_on_redis(redis_server, probed, monitor):
    app, client = probed()
    monitor.publish_error("start the publisher", app=app)
    assert monitor.flush(5, app=app)
    live = client.get("/livez")
    assert live.status_code == 200 and live.json["status"] == "alive"
    assert live.json["threads"] == {
        "publisher": True,
        "health_scheduler": True,
        "relay_applier": True,  # no cache and no Socket.IO: not started, which is fine
    }
    redis_server.pause()
    try:
        monitor.publish_error("while Redis hangs", app=app)
        time.sleep(0.6)  # the publisher's socket timeout passes: the breaker opens
        assert client.get("/livez").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.json  # Redis is not critical by default
        assert ready.json["checks"]["redis"] == {"status": "unhealthy", "critical": False}
    finally:
        redis_server.resume()


def test_a_wedged_thread_fails_liveness_and_details_need_the_auth_check(probed, monitor):
    app, client = probed(TICKSTOCK_MONITOR_LIVENESS_STALL=5)
    monitor.publish_error("start the publisher", app=app)
    assert monitor.flush(5, app=app)
    publisher = monitor.state(app).publisher
    assert "host" not in json.dumps(client.get("/livez").json)
    monitor.dashboard_auth(lambda: True)
    details = client.get("/livez").json
    assert details["instance"]["pid"] and details["threads"]["publisher"]["running"] is True
    # the thread is alive but stuck: it does not come round its loop for longer than the limit
    stuck, release = threading.Event(), threading.Event()

    def hang(timeout):
        stuck.set()
        release.wait(10)
        return True

    publisher._wake.wait = hang
    publisher._wake.set()
    assert stuck.wait(5)
    publisher.loop_at -= 60
    try:
        wedged = client.get("/livez")
    finally:
        release.set()
    assert wedged.status_code == 503 and wedged.json["status"] == "wedged"
    assert wedged.json["threads"]["publisher"]["ok"] is False
    assert wedged.json["threads"]["health_scheduler"]["ok"] is True


def test_readiness_follows_critical_checks_and_drains_on_shutdown(probed, monitor):
    state = {"database": "healthy", "cache": "healthy"}

    @monitor.health_check("database", critical=True)
    def database():
        return state["database"]

    @monitor.health_check("cache")
    def cache():
        return state["cache"]

    app, client = probed()
    assert client.get("/readyz").status_code == 200
    state["cache"] = "unhealthy"  # not critical: still ready
    monitor.publish_health(app=app)
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["checks"]["cache"]["status"] == "unhealthy"
    state["database"] = "unhealthy"
    monitor.publish_health(app=app)
    refused = client.get("/readyz")
    assert refused.status_code == 503
    assert refused.json == {
        "status": "not_ready",
        "failed": ["database"],
        "checks": {
            "redis": {"status": "healthy", "critical": False},
            "database": {"status": "unhealthy", "critical": True},
            "cache": {"status": "unhealthy", "critical": False},
        },
    }
    state["database"] = "healthy"
    monitor.publish_health(app=app)
    assert client.get("/readyz").status_code == 200
    monitor.shutdown(app=app)
    assert client.get("/readyz").status_code == 503
    assert client.get("/readyz").json == {"status": "shutting_down"}


def test_redis_can_be_made_critical_for_readiness(redis_server, probed, monitor):
    app, client = probed(TICKSTOCK_MONITOR_READINESS_CHECKS="redis")
    assert client.get("/readyz").status_code == 200
    redis_server.kill()
    monitor.publish_health(app=app)
    refused = client.get("/readyz")
    assert refused.status_code == 503 and refused.json["failed"] == ["redis"]


def test_the_health_endpoint_hides_host_and_metrics_without_the_auth_check(probed, monitor):
    app, client = probed(TICKSTOCK_MONITOR_HEALTH_ENDPOINT="/health")
    public = client.get("/health").json
    assert public["status"] == "healthy" and "instance" not in public and "metrics" not in public
    assert public["health"]["components"] == {"redis": {"status": "healthy"}}
    monitor.dashboard_auth(lambda: True)
    full = client.get("/health").json
    assert full["instance"]["host"] and "memory_usage_mb" in full["metrics"]


SIGTERM_APP = textwrap.dedent(
    """
    import os, signal, sys
    from flask import Flask
    from flask_tickstock_monitor import TickStockMonitor

    called = []
    signal.signal(signal.SIGTERM, lambda signum, frame: called.append(signum))  # the server's
    app = Flask("drain")
    app.config.update(
        TICKSTOCK_MONITOR_REDIS_URL="memory://drain",
        TICKSTOCK_MONITOR_READINESS_ENDPOINT="/readyz",
        TICKSTOCK_MONITOR_HEALTH_ENABLED=False,
    )
    TickStockMonitor(app)
    client = app.test_client()
    before = client.get("/readyz").status_code
    os.kill(os.getpid(), signal.SIGTERM)
    print(before, client.get("/readyz").status_code, called == [signal.SIGTERM])
    """
)


def test_sigterm_drains_readiness_and_calls_the_servers_own_handler():
    out = subprocess.run(
        [sys.executable, "-c", SIGTERM_APP], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["200", "503", "True"]
