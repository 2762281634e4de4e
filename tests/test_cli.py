from __future__ import annotations

import json
import re
import threading
import time

import pytest

from flask_tickstock_monitor.cli import tickstock


@pytest.fixture
def app(redis_server, make_app):
    app, _ = make_app(redis_server.url)
    return app


def invoke(app, *args: str):
    return app.test_cli_runner().invoke(tickstock, list(args))


def publish_soon(client, channel: str, payloads: list[bytes], delay: float = 0.3):
    def run():
        time.sleep(delay)
        for payload in payloads:
            client.publish(channel, payload)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_health_reports_ping_channels_and_test_publish(app, redis_server):
    listener = redis_server.client().pubsub()
    listener.subscribe("tickstock:errors")
    result = invoke(app, "health")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"Redis: {redis_server.url}"
    assert re.fullmatch(r"OK      Redis connection \(\d+\.\d\d ms\)", lines[1])
    assert lines[2:] == [
        "        Active channels: 1",
        "          - tickstock:errors: 1 subscribers",
        "OK      Test message published to tickstock:monitoring (0 subscribers)",
    ]
    listener.close()


def test_health_fails_when_redis_is_down(app, redis_server):
    redis_server.kill()
    result = invoke(app, "health")
    assert result.exit_code == 1
    assert result.output.splitlines()[1].startswith("FAILED  Redis connection failed: ")


def test_health_hides_the_password(redis_server, make_app):
    app, _ = make_app("redis://:hunter2@127.0.0.1:1/0")
    result = invoke(app, "health")
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "Redis: redis://:***@127.0.0.1:1/0"
    assert "hunter2" not in result.output


def test_channels(app, redis_server):
    listener = redis_server.client().pubsub()
    listener.subscribe("tickstock:monitoring", "tickstock:extra")
    result = invoke(app, "channels")
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "tickstock:cache:invalidation\t0",
        "tickstock:errors\t0",
        "tickstock:extra\t1",
        "tickstock:monitoring\t1",
    ]
    listener.close()
    redis_server.kill()
    assert invoke(app, "channels").exit_code == 1


def test_listen_prints_json_until_count(app, redis_server):
    client = redis_server.client()
    thread = publish_soon(client, "tickstock:errors", [b'{"a": 1}', b"not json", b'{"b": 2}'])
    result = invoke(app, "listen", "--json", "--count", "2", "--timeout", "5")
    thread.join()
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.output.splitlines()] == [
        {"channel": "tickstock:errors", "message": {"a": 1}},
        {"channel": "tickstock:errors", "message": {"_invalid": "bad_json", "_raw": "not json"}},
    ]


def test_listen_pretty_prints_a_chosen_channel(app, redis_server):
    client = redis_server.client()
    thread = publish_soon(client, "custom", [b'{"z": 1, "a": [1]}'])
    result = invoke(app, "listen", "--channel", "custom", "--count", "1", "--timeout", "5")
    thread.join()
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == "Listening on custom"
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] custom", lines[1])
    assert "\n".join(lines[2:]) == json.dumps({"a": [1], "z": 1}, indent=2)


def test_listen_fails_when_count_not_reached(app):
    started = time.monotonic()
    result = invoke(app, "listen", "--json", "--count", "1", "--timeout", "0.3")
    assert result.exit_code == 1
    assert result.output == ""
    assert time.monotonic() - started < 3


def test_publish_test(app, redis_server):
    listener = redis_server.client().pubsub()
    listener.subscribe("tickstock:monitoring")
    result = invoke(app, "publish-test")
    assert result.exit_code == 0
    assert result.output == (
        "OK      Test message published to tickstock:monitoring (1 subscribers)\n"
    )
    listener.close()
    redis_server.kill()
    result = invoke(app, "publish-test", "--channel", "x")
    assert result.exit_code == 1
    assert result.output.startswith("FAILED  Test publish to x failed: ")


def test_doctor_all_well(redis_server, make_app):
    app, monitor = make_app(redis_server.url)
    monitor.publish_health(app=app)
    assert monitor.flush(app=app)
    client = redis_server.client()
    healthy = json.dumps(monitor.health_snapshot(app=app)).encode()
    thread = publish_soon(
        client, "tickstock:monitoring", [healthy, b'{"event_type": "METRIC_UPDATE"}']
    )
    result = invoke(app, "doctor", "--sample-seconds", "0.8")
    thread.join()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.fullmatch(r"OK      Redis connection \(ping min .* ms\)", lines[1])
    assert "        tickstock:monitoring: 2 messages" in lines
    assert "OK      every sampled message keeps its contract" in lines
    assert "OK      this app published 1, dropped none, queued 0" in lines
    assert lines[-1] == "No problems found"


def test_doctor_flags_removed_channels_bad_messages_and_failures(redis_server, make_app):
    app, monitor = make_app(redis_server.url)
    client = redis_server.client()
    leftover = client.pubsub()
    leftover.subscribe("tickstock.jobs.backtest", "tickstock:market:ticks")
    monitor.state(app).publisher.count_drop("publish_failed", 2)
    thread = publish_soon(client, "tickstock:errors", [b'{"message": "no id"}'])
    stray = publish_soon(client, "tickstock.events.patterns", [b"{}"])
    result = invoke(app, "doctor", "--sample-seconds", "0.8")
    thread.join()
    stray.join()
    leftover.close()
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "PROBLEM removed channel tickstock.jobs.backtest still has 1 subscribers" in lines
    assert "PROBLEM removed channel tickstock:market:ticks still has 1 subscribers" in lines
    assert "PROBLEM a message was published on the removed channel tickstock.events.patterns" in (
        lines
    )
    assert "PROBLEM 1 invalid message(s) on tickstock:errors: missing_field: error_id" in lines
    assert "PROBLEM this app published 0, dropped publish_failed=2, queued 0" in lines
    assert lines[-1] == "5 problem(s) found"


def test_doctor_fails_when_redis_is_down(app, redis_server):
    redis_server.kill()
    result = invoke(app, "doctor", "--sample-seconds", "0")
    assert result.exit_code == 1
    assert result.output.splitlines()[1].startswith("PROBLEM Redis connection failed: ")


def test_an_app_loaded_by_flask_tickstock_does_not_heartbeat(tickstock_memory_url):
    """`flask tickstock …` loads the app only to read its config: no instance must appear."""
    from click.testing import CliRunner
    from flask import Flask
    from flask.cli import FlaskGroup

    from flask_tickstock_monitor import TickStockMonitor as Monitor

    made = []

    def create_app():
        app = Flask("loaded_by_cli")
        app.config["TICKSTOCK_MONITOR_REDIS_URL"] = tickstock_memory_url
        made.append((app, Monitor(app)))
        return app

    result = CliRunner().invoke(FlaskGroup(create_app=create_app), ["tickstock", "stats"])
    try:
        assert result.exit_code == 0, result.output
        stats = json.loads(result.output)
        assert stats["health"]["running"] is False
        assert stats["health"]["beats"] == 0
        assert stats["relay"]["listening"] is False
    finally:
        for app, monitor in made:
            monitor.shutdown(app=app)
