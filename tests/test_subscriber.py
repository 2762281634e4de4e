from __future__ import annotations

import json
import logging
import threading
import time

import pytest
from conftest import wait_for

from flask_tickstock_monitor import MonitoringPublisher, MonitoringSubscriber

MONITORING = "tickstock:monitoring"
ERRORS = "tickstock:errors"


def beat(
    seq: int,
    *,
    boot: str = "boot-a",
    interval: float = 1.0,
    status: str = "healthy",
    instance: str = "web-1",
    timestamp: float = 100.0,
) -> bytes:
    return json.dumps(
        {
            "type": "health_check",
            "component": "market_data_service",
            "status": status,
            "timestamp": timestamp,
            "metrics": {"symbols_tracked": 70},
            "instance": {"id": instance, "host": "h", "pid": 1, "boot_id": boot, "uptime_s": 1.0},
            "seq": seq,
            "interval_s": interval,
            "event_type": "HEALTH_CHECK",
            "health": {
                "overall_score": 100,
                "status": status,
                "components": {},
                "uptime_seconds": 1,
            },
        }
    ).encode()


def error(n: int, timestamp: float = 100.0) -> bytes:
    return json.dumps(
        {
            "type": "application_error",
            "error_id": f"e{n}",
            "source": "TickStockAppV2",
            "severity": "error",
            "component": "c",
            "message": f"failure {n}",
            "timestamp": timestamp,
        }
    ).encode()


class Clock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def subscriber(redis_server, clock):
    made = []

    def make(**options):
        options.setdefault("clock", clock)
        sub = MonitoringSubscriber(redis_server.url, **options)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.stop()


def test_stale_then_offline_from_each_beats_interval(subscriber, clock):
    sub = subscriber()
    sub.handle_message(MONITORING, beat(1, interval=1.0))
    sub.handle_message(MONITORING, beat(1, interval=10.0, instance="web-2"))
    assert sub.instances()["web-1"]["state"] == "healthy"
    clock.now = 101.9
    assert sub.instances()["web-1"]["state"] == "healthy"
    clock.now = 102.5  # two intervals missed
    assert sub.instances()["web-1"]["state"] == "stale"
    clock.now = 103.5  # three
    view = sub.instances()
    assert view["web-1"]["state"] == "offline"
    assert view["web-1"]["age_s"] == 3.5
    assert view["web-2"]["state"] == "healthy"  # its own interval is 10 s
    sub.handle_message(MONITORING, beat(2, status="degraded"))
    assert sub.instances()["web-1"]["state"] == "degraded"


def test_restart_and_lost_beats(subscriber):
    sub = subscriber()
    for seq in (1, 2, 5):
        sub.handle_message(MONITORING, beat(seq))
    sub.handle_message(MONITORING, beat(5))  # a duplicate is not news
    web = sub.instances()["web-1"]
    assert (web["beats"], web["lost_beats"], web["restarts"], web["seq"]) == (3, 2, 0, 5)
    sub.handle_message(MONITORING, beat(1, boot="boot-b"))
    sub.handle_message(MONITORING, beat(2, boot="boot-b"))
    web = sub.instances()["web-1"]
    assert (web["beats"], web["lost_beats"], web["restarts"], web["seq"]) == (5, 2, 1, 2)
    assert web["boot_id"] == "boot-b"
    assert web["metrics"] == {"symbols_tracked": 70}
    assert web["component"] == "market_data_service"


def test_error_rate_over_a_window(subscriber, clock):
    seen = []
    sub = subscriber(error_window=60.0, recent_errors=2)
    sub.subscribe_monitoring(error_callback=seen.append)
    sub.handle_message(ERRORS, error(1))
    clock.now = 130.0
    sub.handle_message(ERRORS, error(2))
    sub.handle_message(ERRORS, error(3))
    rate = sub.error_rate()
    assert (rate["count"], rate["per_min"], rate["window_s"]) == (3, 3.0, 60.0)
    assert [e["error_id"] for e in rate["recent"]] == ["e3", "e2"]  # newest first, bounded
    assert rate["recent"][0]["received_at"] == 130.0
    clock.now = 175.0
    assert sub.error_rate()["count"] == 2
    assert [e["error_id"] for e in seen] == ["e1", "e2", "e3"]
    view = sub.view()
    assert json.loads(json.dumps(view)) == view
    assert view["errors"]["count"] == 2
    assert view["stats"]["errors_received"] == 3


def test_bad_messages_are_counted_by_reason_and_logged_once(subscriber, caplog):
    health_seen = []
    sub = subscriber()
    sub.subscribe_monitoring(health_callback=health_seen.append)
    caplog.set_level(logging.WARNING, logger="flask_tickstock_monitor.subscriber")
    for _ in range(3):
        sub.handle_message(MONITORING, b"{not json")
    sub.handle_message(MONITORING, b"[1, 2]")
    sub.handle_message(MONITORING, json.dumps({"type": "health_check", "status": "ok"}))
    sub.handle_message(MONITORING, beat(1, status="fine"))
    sub.handle_message(ERRORS, json.dumps({"severity": "error", "message": "no id"}))
    sub.handle_message(ERRORS, b"\xff\xfe")
    sub.handle_message(MONITORING, json.dumps({"event_type": "METRIC_UPDATE", "metrics": {}}))
    stats = sub.stats()
    assert stats["rejected"] == {
        "bad_json": 3,
        "not_object": 1,
        "missing_field": 2,
        "bad_value": 1,
        "not_utf8": 1,
    }
    assert stats["rejected_total"] == 8
    assert stats["ignored"] == 1
    assert health_seen == [] and sub.instances() == {}
    lines = [r.getMessage() for r in caplog.records]
    assert len([line for line in lines if "(bad_json" in line]) == 1
    assert len([line for line in lines if "(missing_field" in line]) == 1
    assert len(lines) == 5


def test_a_raising_callback_is_counted_not_fatal(subscriber):
    def explode(event):
        raise RuntimeError("dashboard bug")

    sub = subscriber()
    sub.subscribe_monitoring(explode, explode)
    sub.handle_message(MONITORING, beat(1))
    sub.handle_message(ERRORS, error(1))
    assert sub.stats()["callback_errors"] == 2
    assert sub.instances()["web-1"]["beats"] == 1


def test_live_beats_from_an_app(redis_server, make_app, subscriber):
    received = []
    sub = subscriber(clock=time.time)
    sub.subscribe_monitoring(received.append, None).start()
    assert sub.wait_connected()
    app, monitor = make_app(
        redis_server.url,
        TICKSTOCK_MONITOR_HEALTH_INTERVAL=0.2,
        TICKSTOCK_MONITOR_HEALTH_ENABLED=True,
        TICKSTOCK_MONITOR_INSTANCE_ID="web-1",
    )
    assert wait_for(lambda: len(received) >= 3)
    web = sub.instances()["web-1"]
    assert web["state"] == "healthy"
    assert web["interval_s"] == 0.2
    assert web["boot_id"] == monitor.state(app).boot_id
    assert web["lost_beats"] == 0 and web["restarts"] == 0
    assert received[0]["event_type"] == "HEALTH_CHECK"
    monitor.shutdown(app=app)
    assert wait_for(lambda: sub.instances()["web-1"]["state"] == "stale", 2)
    assert wait_for(lambda: sub.instances()["web-1"]["state"] == "offline", 2)


def test_a_late_subscriber_sees_the_latest_beats_at_once(redis_server, make_app, subscriber):
    app, monitor = make_app(
        redis_server.url,
        TICKSTOCK_MONITOR_HEALTH_INTERVAL=30,
        TICKSTOCK_MONITOR_INSTANCE_ID="web-9",
    )
    published = monitor.publish_health(app=app)
    assert monitor.flush(app=app)
    sub = subscriber(clock=time.time).start()
    assert wait_for(lambda: "web-9" in sub.instances())
    web = sub.instances()["web-9"]
    assert web["state"] == "healthy"
    assert web["seq"] == published["seq"]
    assert web["last_seen"] == published["timestamp"]
    assert sub.stats()["health_received"] == 0  # loaded, not received live


def test_reconnects_after_the_server_restarts(redis_server, subscriber):
    received = []
    sub = subscriber(clock=time.time, probe_interval=0.2)
    sub.subscribe_monitoring(received.append).start()
    assert sub.wait_connected()
    redis_server.kill()
    assert wait_for(lambda: not sub.stats()["connected"], 5)
    redis_server.start()
    assert sub.wait_connected(10)
    redis_server.client().publish(MONITORING, beat(1))
    assert wait_for(lambda: len(received) == 1)
    assert sub.stats()["reconnects"] == 1


def test_seed_card_publisher_and_listen(redis_server, subscriber):
    health, errors = [], []
    sub = subscriber(clock=time.time)
    sub.subscribe_monitoring(health.append, errors.append)
    listener = threading.Thread(target=sub.listen)
    listener.start()
    assert sub.wait_connected()
    publisher = MonitoringPublisher(redis_server.url)
    publisher.publish_health_metric(
        {
            "component": "market_data_service",
            "status": "healthy",
            "timestamp": time.time(),
            "metrics": {"a": 1},
        }
    )
    publisher.publish_error(
        {"severity": "warning", "component": "c", "message": "m", "timestamp": time.time()}
    )
    assert publisher.flush()
    publisher.close()
    assert wait_for(lambda: health and errors)
    assert "component:market_data_service" in sub.instances()
    assert errors[0]["message"] == "m"
    sub.stop()
    listener.join(2)
    assert not listener.is_alive()
