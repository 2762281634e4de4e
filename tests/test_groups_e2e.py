"""Error groups end to end: fingerprints on published events, before_send, ignored exceptions,
log record extras, trace ids, and the groups a subscriber and the durable log keep."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from conftest import wait_for
from groupshape import SHAPE_KEYS
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from flask_tickstock_monitor import MonitoringSubscriber, events
from flask_tickstock_monitor.cli import tickstock

ERRORS = "tickstock:errors"


def fail_in_service():
    raise ZeroDivisionError("division by zero")


def published(monitor, app, recorder, count):
    assert monitor.flush(5, app=app)
    return recorder.wait_count(ERRORS, count)


def test_every_event_has_a_fingerprint_release_and_environment(
    redis_server, make_app, record_channels
):
    app, monitor = make_app(
        redis_server.url,
        TICKSTOCK_MONITOR_RELEASE="1.4.0",
        TICKSTOCK_MONITOR_ENVIRONMENT="staging",
    )
    recorder = record_channels(redis_server.client(), ERRORS)
    for _ in range(2):
        try:
            fail_in_service()
        except ZeroDivisionError:
            monitor.capture_exception(app=app)
    try:
        fail_in_service()
    except ZeroDivisionError:
        monitor.capture_exception(app=app, fingerprint=["{{ default }}", "nightly-job"])
    monitor.publish_error("User 123 failed: 'abc'", app=app)
    monitor.publish_error("User 456 failed: 'xyz'", app=app)
    first, second, custom, msg_a, msg_b = published(monitor, app, recorder, 5)
    for event in (first, custom, msg_a):
        events.validate_error(event)  # TickStockAppV2's required fields are all still there
        assert len(event["fingerprint"]) == 16 and event["release"] == "1.4.0"
        assert event["environment"] == "staging"
    assert first["fingerprint"] == second["fingerprint"] != custom["fingerprint"]
    assert msg_a["fingerprint"] == msg_b["fingerprint"] != first["fingerprint"]
    with pytest.raises(TypeError, match="fingerprint must be a list of strings"):
        monitor.publish_error("x", fingerprint="not-a-list", app=app)


def test_before_send_edits_drops_or_is_survived(redis_server, make_app, record_channels, caplog):
    def before_send(event):
        if event["message"] == "drop me":
            return None
        if event["message"] == "break me":
            raise RuntimeError("a bug in the hook")
        if event["message"] == "invalid":
            del event["error_id"]
            return event
        event["context"]["api_password"] = "hunter2"  # scrubbed after the hook too
        event["message"] = event["message"].upper()
        return event

    app, monitor = make_app(redis_server.url, TICKSTOCK_MONITOR_BEFORE_SEND=before_send)
    recorder = record_channels(redis_server.client(), ERRORS)
    for message in ("edit me", "drop me", "break me", "invalid"):
        monitor.publish_error(message, app=app, context={"n": 1})
    edited, broken, invalid = published(monitor, app, recorder, 3)
    assert edited["message"] == "EDIT ME"
    assert edited["context"] == {"n": 1, "api_password": "[scrubbed]"}
    assert broken["message"] == "break me" and broken["context"] == {"n": 1}
    assert invalid["message"] == "invalid" and invalid["error_id"]
    assert monitor.stats(app)["dropped"] == {"before_send": 1}
    assert any("before_send raised" in r.getMessage() for r in caplog.records)


def test_the_decorator_hook_and_ignored_exceptions(redis_server, make_app, record_channels):
    class QuietError(LookupError):
        pass

    app, monitor = make_app(
        redis_server.url,
        TICKSTOCK_MONITOR_IGNORE_EXCEPTIONS=["KeyError", ValueError],
    )
    seen = []

    @monitor.before_send
    def remember(event):
        seen.append(event["error_type"])
        return event

    recorder = record_channels(redis_server.client(), ERRORS)
    for exc in (KeyError("k"), UnicodeError("u"), QuietError("q"), ZeroDivisionError("z")):
        monitor.capture_exception(exc, app=app)
    sent = published(monitor, app, recorder, 2)
    # KeyError by name, UnicodeError as a ValueError subclass; LookupError was not named
    assert seen == ["QuietError", "ZeroDivisionError"]
    assert [e["error_type"] for e in sent] == seen
    assert monitor.stats(app)["dropped"] == {"ignored": 2}


def test_log_extras_and_trace_ids_go_into_the_event(redis_server, make_app, record_channels):
    app, monitor = make_app(redis_server.url)
    recorder = record_channels(redis_server.client(), ERRORS)
    span = NonRecordingSpan(
        SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=False, trace_flags=TraceFlags(1))
    )
    with trace.use_span(span):
        logging.getLogger("app.orders").error(
            "order failed", extra={"order_id": 42, "api_token": "secret"}
        )
    [event] = published(monitor, app, recorder, 1)
    assert event["context"]["order_id"] == 42
    assert event["context"]["api_token"] == "[scrubbed]"
    assert event["trace_id"] == f"{0xABC:032x}" and event["span_id"] == f"{0xDEF:016x}"


def test_the_subscriber_groups_what_it_receives(redis_server, make_app):
    app, monitor = make_app(redis_server.url)
    subscriber = MonitoringSubscriber(redis_server.url)
    subscriber.start()
    try:
        assert subscriber.wait_connected()
        for _ in range(3):
            try:
                fail_in_service()
            except ZeroDivisionError:
                monitor.capture_exception(app=app)
        monitor.publish_error("disk full", app=app)
        assert monitor.flush(5, app=app)
        assert wait_for(lambda: subscriber.stats()["errors_received"] == 4)
        groups = {g["error_type"] or g["message"]: g for g in subscriber.groups()}
        assert groups["ZeroDivisionError"]["count"] == 3 and groups["ZeroDivisionError"]["new"]
        assert groups["disk full"]["count"] == 1
        view = subscriber.view()
        assert len(view["groups"]) == 2
        assert sum(view["errors_per_minute"]["total"]) == 4
    finally:
        subscriber.stop()


def test_the_durable_log_counts_groups_and_the_cli_resolves_them(redis_server, make_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'errors.db'}"
    app, monitor = make_app(redis_server.url, TICKSTOCK_MONITOR_DATABASE_URI=url)
    for _ in range(3):
        try:
            fail_in_service()
        except ZeroDivisionError:
            monitor.capture_exception(app=app)
    assert monitor.flush(5, app=app)
    errorlog = monitor.state(app).errorlog
    [group] = errorlog.groups()
    assert group["count"] == 3 and group["status"] == "open"
    runner = app.test_cli_runner()
    listed = runner.invoke(tickstock, ["groups"])
    assert listed.exit_code == 0 and group["fingerprint"] in listed.output and "3x" in listed.output
    resolved = runner.invoke(tickstock, ["resolve", group["fingerprint"]])
    assert resolved.exit_code == 0, resolved.output
    assert errorlog.groups()[0]["status"] == "resolved"
    try:
        fail_in_service()
    except ZeroDivisionError:
        monitor.capture_exception(app=app)
    assert monitor.flush(5, app=app)
    [again] = errorlog.groups()
    assert again["status"] == "open" and again["regression"] and again["count"] == 4
    missing = runner.invoke(tickstock, ["ignore", "0000000000000000"])
    assert missing.exit_code != 0 and "No error group" in missing.output


def test_the_documented_group_shape_is_the_served_one():
    doc = (Path(__file__).parent.parent / "docs" / "error-groups.md").read_text()
    table = doc.split("## A group", 1)[1].split("###", 1)[0]
    documented = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            documented.update(re.findall(r"`(\w+)`", line.split("|")[1]))
    assert documented == SHAPE_KEYS
