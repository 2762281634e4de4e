"""Redis outages while the app runs: killed and restarted, or paused (a half-open connection).

The app's own redis-server is killed, restarted on the same port, or stopped with SIGSTOP. The
app must keep serving at its normal speed, count what it could not deliver, and come back by
itself: publishing, heartbeats and every subscription.
"""

from __future__ import annotations

import time
from statistics import median

import pytest
from relayutil import invalidation, publish

from flask_tickstock_monitor import MonitoringSubscriber

ERRORS, MONITORING = "tickstock:errors", "tickstock:monitoring"


def wait_for(predicate, timeout: float = 10.0, step: float = 0.01) -> float | None:
    """Seconds until ``predicate()`` held, or ``None``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(step)
    return None


@pytest.fixture
def outage_app(redis_server, make_app):
    def make(interval: float, **config):
        app, monitor = make_app(
            redis_server.url,
            TICKSTOCK_MONITOR_HEALTH_ENABLED=True,
            TICKSTOCK_MONITOR_HEALTH_INTERVAL=interval,
            TICKSTOCK_MONITOR_THROTTLE_LIMIT=0,
            **config,
        )

        @app.route("/fail")
        def fail():
            raise RuntimeError("during the outage")

        @app.route("/ok")
        def ok():
            return "ok"

        return app, monitor

    return make


@pytest.fixture
def dashboard(redis_server):
    subscribers = []

    def make(probe_interval: float) -> MonitoringSubscriber:
        subscriber = MonitoringSubscriber(
            redis_server.url, probe_interval=probe_interval, socket_timeout=0.5
        )
        subscriber.subscription.breaker.cap = 0.5  # a dashboard retries often
        subscriber.start()
        assert subscriber.wait_connected(5)
        subscribers.append(subscriber)
        return subscriber

    yield make
    for subscriber in subscribers:
        subscriber.stop()


def timed_requests(client, path: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - started)
        assert response.status_code == (500 if path == "/fail" else 200)
    return times


def produced(monitor, app, errors: int) -> int:
    return errors + monitor.stats(app)["health"]["beats"]


@pytest.mark.slow
def test_redis_killed_and_restarted(redis_server, outage_app, dashboard, record_channels):
    app, monitor = outage_app(0.3)
    subscriber = dashboard(probe_interval=0.5)
    client = app.test_client()
    state = monitor.state(app)
    cache = {"nasdaq100": [1], "sp500": [2]}
    monitor.register_cache("relationship", cache, app=app)
    relay = state.planes["relay"]
    assert relay.wait_connected()
    assert wait_for(lambda: subscriber.stats()["health_received"] >= 2)
    timed_requests(client, "/fail", 5)

    redis_server.kill()
    down = timed_requests(client, "/fail", 20) + timed_requests(client, "/ok", 20)
    with app.app_context():  # nothing raises into the app while Redis is gone
        assert monitor.publish_error("while Redis is down") is not None
    assert monitor.publish_health(app=app)["status"] == "unhealthy"
    assert wait_for(lambda: not subscriber.stats()["connected"], timeout=5) is not None
    assert wait_for(lambda: not relay.stats()["connected"], timeout=5) is not None
    time.sleep(3.0)  # long enough for the backoff to reach its cap

    redis_server.start()  # the same port
    back = time.monotonic()
    recorder = record_channels(redis_server.client(), ERRORS, MONITORING)
    assert wait_for(lambda: relay.stats()["connected"]) is not None
    relay_back = time.monotonic() - back
    assert wait_for(lambda: subscriber.stats()["connected"]) is not None
    subscriber_back = time.monotonic() - back
    # invalidations may have been missed meanwhile: the relay cleared its caches after the gap
    assert wait_for(lambda: cache == {}, timeout=2) is not None
    assert relay.stats()["gap_clears"] == 1
    cache["AAPL"] = [3]
    publish(redis_server.client(), invalidation("relationship", ["AAPL"]))
    assert wait_for(lambda: cache == {}, timeout=2) is not None  # and it applies again
    assert (
        wait_for(
            lambda: any(b["instance"]["id"] == state.instance_id for b in recorder.on(MONITORING))
        )
        is not None
    )
    beat_back = time.monotonic() - back
    with app.app_context():
        monitor.publish_error("Redis is back")
    assert monitor.flush(10, app=app)
    error_back = time.monotonic() - back
    # what was queued during the outage arrives first: wait for this one, not for any one
    assert recorder.wait(lambda r: "Redis is back" in [e["message"] for e in r.on(ERRORS)])

    assert max(down) < 0.1  # requests never waited on the dead server
    # the breaker retries within its backoff cap (5 s, jittered up to 7.5 s)
    assert beat_back < 7.5
    assert subscriber_back < 2.0
    assert relay_back < 2.0  # the relay listener resubscribed within 2 s of Redis being back
    assert subscriber.stats()["reconnects"] >= 1
    last = subscriber.stats()["health_received"]
    assert wait_for(lambda: subscriber.stats()["health_received"] > last, timeout=2)
    # every error and beat is accounted for: published, or counted as failed. Beats go on every
    # 0.3 s, so one may be queued at any given moment: wait for a moment with none in flight.
    seen: list[dict] = []

    def settled() -> bool:
        seen.append(stats := monitor.stats(app))
        accounted = stats["published"] + stats["dropped_total"]
        return stats["queued"] == 0 and accounted == produced(monitor, app, 5 + 20 + 2)

    assert wait_for(settled, timeout=3), seen[-1]
    stats = seen[-1]
    assert stats["connected"] is True
    assert set(stats["dropped"]) <= {"publish_failed"}
    print(
        f"outage: relay resubscribed in {relay_back:.2f}s, beat back in {beat_back:.2f}s, "
        f"subscriber in {subscriber_back:.2f}s, "
        f"error published {error_back:.2f}s after restart; slowest request {max(down):.4f}s"
    )


@pytest.mark.slow
def test_redis_paused_is_detected_within_two_intervals(
    redis_server, outage_app, dashboard, frozen_heap
):
    # A 6 s pause (3 heartbeat intervals of 2 s) stands for the 60 s one: detection is counted
    # in intervals, so 3 intervals show it as well as 30 would, 54 s sooner.
    interval = 2.0
    app, monitor = outage_app(interval)
    subscriber = dashboard(probe_interval=interval / 2)
    client = app.test_client()
    health = monitor.state(app).planes["health"]
    assert wait_for(lambda: subscriber.stats()["health_received"] >= 1, timeout=5)
    before = timed_requests(client, "/fail", 20)
    assert monitor.flush(2, app=app)

    redis_server.pause()
    paused_at = time.monotonic()
    detected: dict[str, float] = {}
    try:
        during = []
        while time.monotonic() - paused_at < 6.0:
            during += timed_requests(client, "/fail", 5)
            if "subscriber" not in detected and not subscriber.stats()["connected"]:
                detected["subscriber"] = time.monotonic() - paused_at
            redis = health.latest["health"]["components"]["redis"]["state"]
            if "app" not in detected and redis == "unhealthy":
                detected["app"] = time.monotonic() - paused_at
            time.sleep(0.02)
    finally:
        redis_server.resume()
    # both sides noticed through their probes within 2 intervals: the dashboard's subscription
    # (a PING without a reply) and the app's health check (a PING with the socket timeout)
    assert set(detected) == {"subscriber", "app"}
    assert max(detected.values()) <= 2 * interval, detected
    # unaffected: the median and the 99th percentile as before, and none waited for the 0.5 s
    # socket timeout. The odd slow request is a full garbage collection of this test process
    # (measured up to 0.2 s with gc.callbacks, Redis up or not) or a wait for the GIL.
    p50_before, p50_during = median(before), median(during)
    p99_during = sorted(during)[int(len(during) * 0.99)]
    assert p50_during < 1.5 * p50_before + 0.0005, (p50_before, p50_during)
    assert p99_during < 0.05, f"p99 while paused: {p99_during:.3f}s"
    assert max(during) < 0.45, f"slowest request while paused: {max(during):.3f}s"
    assert monitor.flush(10, app=app)
    stats = monitor.stats(app)
    assert stats["dropped"].get("publish_failed", 0) > 0  # the loss is counted…
    assert stats["published"] + stats["dropped_total"] == produced(monitor, app, 20 + len(during))
    assert wait_for(lambda: subscriber.stats()["connected"], timeout=5) is not None
    print(
        f"paused: detected by the subscriber in {detected['subscriber']:.2f}s, by the app's "
        f"health check in {detected['app']:.2f}s; {len(during)} requests, p50 "
        f"{p50_during * 1e3:.2f} ms (before {p50_before * 1e3:.2f} ms), "
        f"p99 {p99_during * 1e3:.2f} ms, max {max(during) * 1e3:.1f} ms"
    )
