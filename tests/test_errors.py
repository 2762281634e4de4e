"""Error events on a real redis-server: every path an error takes, each published once."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid

import pytest
from blinker import Namespace
from flask import abort, got_request_exception, jsonify

CHANNEL = "tickstock:errors"
REQUIRED = {
    "type",
    "error_id",
    "source",
    "severity",
    "component",
    "message",
    "timestamp",
    "context",
}


@pytest.fixture
def setup(redis_server, make_app, record_channels):
    def make(**config):
        app, monitor = make_app(redis_server.url, **config)
        recorder = record_channels(redis_server.client(), CHANNEL)
        return app, monitor, recorder

    return make


def only_event(app, monitor, recorder):
    assert monitor.flush(2.0, app=app)
    events = recorder.wait_count(CHANNEL, 1)
    recorder.wait(lambda r: False, timeout=0.1)  # anything extra would arrive now
    assert len(recorder.on(CHANNEL)) == 1, recorder.on(CHANNEL)
    return events[0]


# Who sees an unhandled exception first: Flask's log record of it ("Exception on /path"),
# logged before the 500 is made; the after-request hook, which the 500 passes; or, in an app
# that propagates exceptions (no 500 is made), Flask's got_request_exception signal.
FIRST_SEEN_BY = {
    "log_record": {},
    "error_response": {"TICKSTOCK_MONITOR_CAPTURE_LOGGING": False},
    "signal": {"PROPAGATE_EXCEPTIONS": None},  # TESTING: Flask re-raises
}


@pytest.mark.parametrize("first_seen_by", FIRST_SEEN_BY)
def test_unhandled_exception_publishes_the_contract(setup, first_seen_by):
    app, monitor, recorder = setup(**FIRST_SEEN_BY[first_seen_by])

    @app.route("/quote/<symbol>")
    def quote(symbol):
        return {"price": 100 / 0}

    client = app.test_client()
    query, headers = "/quote/AAPL?token=abc&user=bob", {"Cookie": "s=1"}
    if first_seen_by == "signal":
        with pytest.raises(ZeroDivisionError):
            client.get(query, headers=headers)
    else:
        assert client.get(query, headers=headers).status_code == 500
    event = only_event(app, monitor, recorder)
    assert REQUIRED <= set(event)
    assert event["type"] == "application_error"
    uuid.UUID(event["error_id"])
    assert event["source"] == "TickStockAppV2"
    assert event["severity"] == "error"
    assert event["component"] == "test_component"
    assert event["message"] == "ZeroDivisionError: division by zero"
    assert event["error_type"] == "ZeroDivisionError"
    assert event["traceback"].startswith("Traceback (most recent call last):")
    assert 'return {"price": 100 / 0}' in event["traceback"]
    assert isinstance(event["timestamp"], float)
    # only the small snapshot: no query values, cookies, bodies or client IP
    assert event["context"] == {"endpoint": "quote", "method": "GET", "path": "/quote/AAPL"}
    assert event["origin"] == "unhandled"
    assert monitor.stats(app)["published"] == 1


def test_got_request_exception_is_connected_only_where_flask_propagates(setup):
    # Where Flask makes a 500 the after-request hook sees every error, and blinker's dispatch
    # would cost each erroring request as much again; the first request decides, as testing
    # and debug are set by then, whatever they were when the monitor was initialised.
    app, monitor, recorder = setup()
    assert not got_request_exception.has_receivers_for(app)
    app.config["PROPAGATE_EXCEPTIONS"] = None

    @app.route("/boom")
    def boom():
        raise KeyError("late")

    with pytest.raises(KeyError):
        app.test_client().get("/boom")
    assert got_request_exception.has_receivers_for(app)
    event = only_event(app, monitor, recorder)
    assert (event["origin"], event["error_type"]) == ("unhandled", "KeyError")


def test_errors_an_extension_routes_and_swallows_keep_their_exception(setup):
    # Flask-RESTful and Flask-RESTX take the app's error handling over on the instance (its
    # handle_user_exception and handle_exception), make their own 500 and send
    # got_request_exception for it: the hooks never see that exception, the signal does.
    app, monitor, recorder = setup(TICKSTOCK_MONITOR_CAPTURE_LOGGING=False)
    original = app.handle_user_exception

    def error_router(error):
        if isinstance(error, LookupError):
            got_request_exception.send(app, exception=error)
            return jsonify(message="Internal Server Error"), 500
        return original(error)

    app.handle_user_exception = error_router  # as those extensions do, with a partial

    @app.route("/api/symbol")
    def symbol():
        raise LookupError("no such symbol")

    response = app.test_client().get("/api/symbol")
    assert (response.status_code, response.get_json()) == (
        500,
        {"message": "Internal Server Error"},
    )
    assert got_request_exception.has_receivers_for(app)
    event = only_event(app, monitor, recorder)
    assert (event["origin"], event["error_type"]) == ("unhandled", "LookupError")
    assert 'raise LookupError("no such symbol")' in event["traceback"]


def test_an_exception_being_handled_around_a_request_is_not_its_error(setup):
    # The after-hook reads the exception being handled: only one Flask caught in this request
    # is the request's own, not one the caller is handling while it makes the request.
    app, monitor, recorder = setup(TICKSTOCK_MONITOR_CAPTURE_LOGGING=False)

    @app.route("/down")
    def down():
        return "maintenance", 503

    try:
        raise RuntimeError("the caller's own")
    except RuntimeError:
        assert app.test_client().get("/down").status_code == 503
    event = only_event(app, monitor, recorder)
    assert event["origin"] == "handled_5xx"
    assert event["message"] == "HTTP 503 SERVICE UNAVAILABLE from down"
    assert "error_type" not in event and "traceback" not in event


def test_request_details_only_when_configured(setup):
    app, monitor, recorder = setup(
        TICKSTOCK_MONITOR_INCLUDE_QUERY=True,
        TICKSTOCK_MONITOR_INCLUDE_HEADERS=True,
        TICKSTOCK_MONITOR_INCLUDE_CLIENT_IP=True,
    )

    @app.route("/x")
    def x():
        raise RuntimeError("x")

    app.test_client().get(
        "/x?symbol=AAPL&api_key=k", headers={"Authorization": "Bearer t", "X-Trace": "42"}
    )
    context = only_event(app, monitor, recorder)["context"]
    assert context["query"] == {"symbol": ["AAPL"], "api_key": "[scrubbed]"}
    assert context["headers"]["Authorization"] == "[scrubbed]"
    assert context["headers"]["X-Trace"] == "42"
    assert context["client_ip"] == "127.0.0.1"


def test_app_errorhandler_500_publishes_once(setup):
    app, monitor, recorder = setup()

    @app.errorhandler(500)
    def server_error(error):
        return jsonify(error="internal"), 500

    @app.route("/boom")
    def boom():
        raise ValueError("bad bar")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal"}
    event = only_event(app, monitor, recorder)
    assert event["error_type"] == "ValueError"
    assert event["message"] == "ValueError: bad bar"


def test_error_swallowed_by_an_app_handler_is_published_with_its_exception(setup):
    app, monitor, recorder = setup()

    class FeedError(Exception):
        pass

    @app.errorhandler(FeedError)
    def feed_failed(exc):
        return jsonify(error="feed down"), 502

    @app.route("/feed")
    def feed():
        raise FeedError("no prices")

    assert app.test_client().get("/feed").status_code == 502
    event = only_event(app, monitor, recorder)
    assert event["origin"] == "handled_5xx"
    assert event["error_type"] == "FeedError"
    assert event["message"] == "HTTP 502 BAD GATEWAY from feed: FeedError: no prices"
    assert 'raise FeedError("no prices")' in event["traceback"]
    assert event["context"]["status"] == 502


def test_plain_5xx_response_without_exception(setup):
    app, monitor, recorder = setup()

    @app.route("/down")
    def down():
        abort(503)

    @app.route("/manual")
    def manual():
        return "nope", 500

    client = app.test_client()
    assert client.get("/down").status_code == 503
    assert client.get("/manual").status_code == 500
    assert monitor.flush(2.0, app=app)
    events = recorder.wait_count(CHANNEL, 2)
    messages = sorted(e["message"] for e in events)
    assert messages[0] == "HTTP 500 INTERNAL SERVER ERROR from manual"
    assert messages[1] == "HTTP 503 SERVICE UNAVAILABLE from down"  # abort() with no handler


def test_each_request_in_a_pushed_app_context_is_its_own(setup):
    # Requests made while the caller holds an app context share its ``g``: what one request
    # captured must not hide the next request's 5xx.
    app, monitor, recorder = setup()

    @app.route("/boom")
    def boom():
        raise ValueError("first")

    @app.route("/manual")
    def manual():
        return "nope", 500

    client = app.test_client()
    with app.app_context():
        assert client.get("/boom").status_code == 500
        assert client.get("/manual").status_code == 500
    assert monitor.flush(2.0, app=app)
    events = recorder.wait_count(CHANNEL, 2)
    assert sorted(e["origin"] for e in events) == ["handled_5xx", "unhandled"]
    assert {e["message"] for e in events} == {
        "ValueError: first",
        "HTTP 500 INTERNAL SERVER ERROR from manual",
    }


def test_an_exception_that_cannot_be_marked_is_still_published_once(setup):
    # Its __setattr__ refuses our mark: the request's own flag stops the after-request hook
    # and Flask's "Exception on ..." log record from publishing it a second time.
    app, monitor, recorder = setup()

    class Sealed(Exception):
        def __setattr__(self, name, value):
            raise AttributeError(name)

    @app.route("/sealed")
    def sealed():
        raise Sealed("no marks")

    assert app.test_client().get("/sealed").status_code == 500
    event = only_event(app, monitor, recorder)
    assert event["origin"] == "unhandled"
    assert event["message"] == "Sealed: no marks"


def test_handler_wrapping_keeps_our_frame_out_of_tracebacks(setup):
    app, monitor, recorder = setup()

    class FeedError(Exception):
        pass

    @app.errorhandler(FeedError)
    def feed_failed(exc):
        return "feed down", 502

    @app.route("/feed")
    def feed():
        raise FeedError("no prices")

    @app.route("/boom")
    def boom():
        raise ValueError("unhandled")

    client = app.test_client()
    client.get("/feed")
    client.get("/boom")
    assert monitor.flush(2.0, app=app)
    events = recorder.wait_count(CHANNEL, 2)
    assert {e["error_type"] for e in events} == {"FeedError", "ValueError"}
    for event in events:
        assert "flask_tickstock_monitor" not in event["traceback"]
    assert app.error_handler_spec[None][None][FeedError].__name__ == "feed_failed"


def test_handled_5xx_capture_can_be_turned_off(setup):
    app, monitor, recorder = setup(TICKSTOCK_MONITOR_CAPTURE_5XX=False)

    @app.route("/manual")
    def manual():
        return "nope", 500

    app.test_client().get("/manual")
    assert monitor.flush(2.0, app=app)
    assert not recorder.wait(lambda r: r.on(CHANNEL), timeout=0.3)


def test_4xx_is_not_an_error(setup):
    app, monitor, recorder = setup()
    assert app.test_client().get("/missing").status_code == 404
    assert monitor.flush(2.0, app=app)
    assert not recorder.wait(lambda r: r.on(CHANNEL), timeout=0.3)


def test_error_log_record_is_published(setup):
    app, monitor, recorder = setup()
    logging.getLogger("app.services.bars").error("threshold bars failed for %s", "nasdaq100")
    event = only_event(app, monitor, recorder)
    assert event["message"] == "threshold bars failed for nasdaq100"
    assert event["severity"] == "error"
    assert event["component"] == "app.services.bars"
    assert event["origin"] == "logging"
    assert event["context"]["logger"] == "app.services.bars"


def test_log_levels(setup):
    app, monitor, recorder = setup()
    log = logging.getLogger("app.levels")
    log.warning("just a warning")
    log.critical("disk full")
    event = only_event(app, monitor, recorder)
    assert (event["severity"], event["message"]) == ("critical", "disk full")


def test_log_record_with_exception_carries_the_traceback(setup):
    app, monitor, recorder = setup()
    try:
        {}["missing"]
    except KeyError:
        logging.getLogger("app.x").exception("lookup failed")
    event = only_event(app, monitor, recorder)
    assert event["message"] == "lookup failed"
    assert event["error_type"] == "KeyError"
    assert "KeyError: 'missing'" in event["traceback"]


def test_own_and_ignored_loggers_are_never_published(setup):
    app, monitor, recorder = setup(TICKSTOCK_MONITOR_IGNORE_LOGGERS=["noisy"])
    logging.getLogger("flask_tickstock_monitor.transport").error("our own")
    logging.getLogger("noisy.child").error("ignored by config")
    logging.getLogger("src.core.services.error_subscriber").error("TickStockAppV2 re-log")
    logging.getLogger("published").error("this one")
    assert only_event(app, monitor, recorder)["message"] == "this one"


def test_logging_capture_can_be_turned_off(setup):
    app, monitor, recorder = setup(TICKSTOCK_MONITOR_CAPTURE_LOGGING=False)
    logging.getLogger("app").error("not published")
    assert monitor.flush(2.0, app=app)
    assert not recorder.wait(lambda r: r.on(CHANNEL), timeout=0.3)


def test_in_process_relogging_subscriber_does_not_loop(redis_server, setup):
    """TickStockAppV2 re-logs every tickstock:errors message at ERROR in the same process."""
    app, monitor, recorder = setup()
    relog = logging.getLogger("tickstock.app.relogger")
    relogged = []

    import threading

    pubsub = redis_server.client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    stop = threading.Event()

    def resubscriber():
        import json

        while not stop.is_set():
            msg = pubsub.get_message(timeout=0.05)
            if msg:
                data = json.loads(msg["data"])
                relogged.append(data["error_id"])
                relog.error("[%s] %s", data["source"], data["message"])

    thread = threading.Thread(target=resubscriber, daemon=True)
    thread.start()
    try:
        with app.app_context():
            monitor.publish_error("Failed to calculate threshold bars", component="bars")
        recorder.wait(lambda r: False, timeout=1.0)
        assert monitor.flush(2.0, app=app)
    finally:
        stop.set()
        thread.join(1)
        pubsub.close()
    assert len(recorder.on(CHANNEL)) == 1
    assert len(relogged) == 1


def test_track_signal_publishes_each_send(setup):
    app, monitor, recorder = setup()
    calculation_failed = Namespace().signal("calculation-failed")
    monitor.track_signal(calculation_failed, severity="warning", app=app)
    calculation_failed.send(app, universe_key="nasdaq100", symbol_count=102, password="x")
    event = only_event(app, monitor, recorder)
    assert event["severity"] == "warning"
    assert event["message"] == "signal calculation-failed"
    assert event["context"] == {
        "universe_key": "nasdaq100",
        "symbol_count": 102,
        "password": "[scrubbed]",
        "signal": "calculation-failed",
        "sender": app.name,
    }


def test_track_signal_with_an_exception_kwarg(setup):
    app, monitor, recorder = setup()
    failed = Namespace().signal("job-failed")
    monitor.track_signal(failed, app=app)
    try:
        raise TimeoutError("provider slow")
    except TimeoutError as exc:
        failed.send(None, exception=exc, job="eod")
    event = only_event(app, monitor, recorder)
    assert event["message"] == "job-failed: provider slow"
    assert event["error_type"] == "TimeoutError"
    assert event["context"] == {"job": "eod", "signal": "job-failed"}


def test_capture_exception_and_publish_error(setup):
    app, monitor, recorder = setup()
    with app.app_context():
        try:
            raise OSError("socket closed")
        except OSError:
            error_id = monitor.capture_exception(severity="critical", context={"symbol": "AAPL"})
        other_id = monitor.publish_error(
            "Failed to calculate threshold bars",
            component="threshold_bar_service",
            context={"universe_key": "nasdaq100", "symbol_count": 102},
            category="performance",
        )
    assert monitor.flush(2.0, app=app)
    first, second = recorder.wait_count(CHANNEL, 2)
    assert (first["error_id"], first["severity"], first["error_type"]) == (
        error_id,
        "critical",
        "OSError",
    )
    assert first["context"] == {"symbol": "AAPL"}
    assert second["error_id"] == other_id
    assert second["component"] == "threshold_bar_service"
    assert second["category"] == "performance"
    assert second["context"] == {"universe_key": "nasdaq100", "symbol_count": 102}
    assert "traceback" not in second


def test_the_current_request_and_app_are_flasks_own(setup):
    """The capture reads Flask's context variables directly (where they exist): it must find
    what Flask's public functions find, inside a request, inside an app context only, and
    outside both, and an explicit publish in a request must carry that request's snapshot."""
    from flask import current_app, request

    from flask_tickstock_monitor import _compat

    app, monitor, recorder = setup()
    seen = {}

    @app.route("/look")
    def look():
        seen["ours"] = _compat.current_request()
        seen["public"] = _compat.public_current_request()
        seen["flask"] = request._get_current_object()
        seen["state"] = monitor.state()
        monitor.publish_error("looked", context={"n": 1})
        return "ok"

    assert _compat.current_request() is None
    assert _compat.public_current_request() is None
    assert monitor.state() is monitor.state(app)  # outside any context: the one app it serves
    with app.app_context():
        assert _compat.current_request() is None
        assert _compat.public_current_request() is None
        assert monitor.state() is app.extensions["tickstock_monitor"]
        assert current_app._get_current_object() is app
    assert app.test_client().get("/look?x=1").status_code == 200
    assert seen["ours"] is seen["flask"] is seen["public"]
    assert seen["state"] is app.extensions["tickstock_monitor"]
    event = only_event(app, monitor, recorder)
    assert event["message"] == "looked"
    assert event["context"] == {"endpoint": "look", "method": "GET", "path": "/look", "n": 1}


def test_explicit_calls_validate_their_arguments(setup):
    app, monitor, _ = setup()
    with app.app_context():
        with pytest.raises(ValueError, match="severity must be one of"):
            monitor.publish_error("x", severity="ERROR")
        with pytest.raises(ValueError, match="needs an exception"):
            monitor.capture_exception()


def test_same_exception_is_published_once(setup):
    app, monitor, recorder = setup()
    exc = RuntimeError("once")
    with app.app_context():
        assert monitor.capture_exception(exc) is not None
        assert monitor.capture_exception(exc) is None
    only_event(app, monitor, recorder)


def test_secrets_are_scrubbed_recursively(setup):
    app, monitor, recorder = setup()
    with app.app_context():
        monitor.publish_error(
            "login failed",
            context={
                "user": "bob",
                "password": "hunter2",
                "nested": {"api_key": "k", "items": [{"token": "t"}]},
                "Authorization": "Bearer x",
                "session_id": "s",
                "card": {"credit_card": "4111"},
            },
        )
    context = only_event(app, monitor, recorder)["context"]
    assert context == {
        "user": "bob",
        "password": "[scrubbed]",
        "nested": {"api_key": "[scrubbed]", "items": [{"token": "[scrubbed]"}]},
        "Authorization": "[scrubbed]",
        "session_id": "[scrubbed]",
        "card": {"credit_card": "[scrubbed]"},
    }


def test_sizes_are_capped_not_dropped(setup):
    app, monitor, recorder = setup(
        TICKSTOCK_MONITOR_MAX_MESSAGE_CHARS=100, TICKSTOCK_MONITOR_MAX_CONTEXT_BYTES=2000
    )
    deep: dict = {}
    node = deep
    for _ in range(20):
        node["d"] = {}
        node = node["d"]
    with app.app_context():
        monitor.publish_error(
            "m" * 5000,
            context={
                "blob": "x" * 100_000,
                "deep": deep,
                "many": list(range(500)),
            },
        )
    event = only_event(app, monitor, recorder)
    assert len(event["message"]) == 100 and event["message"].endswith("[truncated]")
    context = event["context"]
    assert len(str(context)) < 3000
    assert context["blob"].endswith("[truncated]")
    assert "[truncated]" in str(context["deep"])
    assert context["many"][-1].endswith("450 more")


def test_error_storm_is_throttled_and_the_next_event_says_how_many(setup, monkeypatch):
    app, monitor, recorder = setup(
        TICKSTOCK_MONITOR_THROTTLE_LIMIT=3, TICKSTOCK_MONITOR_THROTTLE_WINDOW=60
    )

    @app.route("/storm")
    def storm():
        raise ZeroDivisionError("same place")

    client = app.test_client()
    for _ in range(50):
        client.get("/storm")
    assert monitor.flush(2.0, app=app)
    assert len(recorder.wait_count(CHANNEL, 3)) == 3
    stats = monitor.stats(app)
    assert stats["published"] == 3
    assert stats["dropped"] == {"throttled": 47}
    # the window rolls over: the next one carries the suppressed count
    throttle = monitor.state(app).capture.throttle
    for entry in throttle._windows.values():
        entry[0] -= 61
    client.get("/storm")
    assert monitor.flush(2.0, app=app)
    events = recorder.wait_count(CHANNEL, 4)
    assert events[3]["suppressed"] == 47


def test_disabled_monitor_is_a_no_op(setup):
    app, monitor, recorder = setup(TICKSTOCK_MONITOR_ENABLED=False)

    @app.route("/boom")
    def boom():
        raise ValueError("x")

    assert app.test_client().get("/boom").status_code == 500
    logging.getLogger("app").error("nothing")
    with app.app_context():
        assert monitor.publish_error("nothing") is None
    assert not recorder.wait(lambda r: r.on(CHANNEL), timeout=0.3)
    stats = monitor.stats(app)
    assert stats["enabled"] is False
    assert stats["published"] == 0


def test_errors_channel_disabled(setup):
    app, monitor, recorder = setup(ERROR_CHANNEL_ENABLED="false")
    with app.app_context():
        assert monitor.publish_error("nothing") is None
    assert not recorder.wait(lambda r: r.on(CHANNEL), timeout=0.3)


def test_signals_fire_with_the_app_as_sender(setup):
    from flask_tickstock_monitor.signals import error_published

    app, monitor, recorder = setup()
    got = []

    def receiver(sender, event, **kwargs):
        got.append((sender, event["message"]))

    with error_published.connected_to(receiver):
        with app.app_context():
            monitor.publish_error("signalled")
        assert monitor.flush(2.0, app=app)
    assert got == [(app, "signalled")]


def test_published_log_line(setup, caplog):
    app, monitor, recorder = setup()
    with caplog.at_level(logging.INFO, logger="flask_tickstock_monitor"):
        with app.app_context():
            try:
                raise KeyError("k")
            except KeyError:
                monitor.capture_exception()
        assert monitor.flush(2.0, app=app)
    assert "ERROR-TRACKING: Published error to Redis: KeyError" in caplog.messages


def test_an_existing_redis_client_is_used(redis_server, record_channels):
    """TickStockAppV2 keeps a client of its own: the monitor publishes through it."""
    from flask import Flask

    from flask_tickstock_monitor import TickStockMonitor

    recorder = record_channels(redis_server.client(), CHANNEL)
    app = Flask("own_client")
    app.config["TICKSTOCK_MONITOR_REDIS_URL"] = "redis://127.0.0.1:1/0"  # never used
    app.config["TICKSTOCK_MONITOR_HEALTH_ENABLED"] = False
    monitor = TickStockMonitor(app, redis_client=redis_server.client())
    try:
        with app.app_context():
            monitor.publish_error("through the app's client")
        assert monitor.flush(2.0, app=app)
        (event,) = recorder.wait_count(CHANNEL, 1)
        assert event["message"] == "through the app's client"
    finally:
        monitor.shutdown(app=app)


def test_redis_settings_from_the_environment_as_tickstock_keeps_them(
    redis_server, record_channels, monkeypatch
):
    from flask import Flask

    from flask_tickstock_monitor import TickStockMonitor

    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", str(redis_server.port))
    monkeypatch.setenv("REDIS_ERROR_CHANNEL", "custom:errors")
    recorder = record_channels(redis_server.client(), "custom:errors")
    app = Flask("no_factory")  # nothing about Redis in app.config
    app.config["TICKSTOCK_MONITOR_HEALTH_ENABLED"] = False
    monitor = TickStockMonitor(app)
    try:
        with app.app_context():
            monitor.publish_error("configured from the environment")
        assert monitor.flush(2.0, app=app)
        (event,) = recorder.wait_count("custom:errors", 1)
        assert event["message"] == "configured from the environment"
    finally:
        monitor.shutdown(app=app)


def test_ids_made_later_are_unique_version_4_uuids_and_stable():
    import uuid as _uuid

    from flask_tickstock_monitor import events

    numbers = [events.id_number() for _ in range(20_000)]
    texts = [events.id_text(n) for n in numbers]
    assert len(set(texts)) == len(texts)
    parsed = [_uuid.UUID(t) for t in texts[:500]]
    assert all(u.version == 4 and u.variant == _uuid.RFC_4122 for u in parsed)
    assert [events.id_text(n) for n in numbers[:100]] == texts[:100]  # built twice: one id


def test_an_id_taken_before_a_fork_keeps_its_text(monkeypatch):
    from flask_tickstock_monitor import events

    number = events.id_number()
    text = events.id_text(number)
    for name in ("_id_salt", "_id_prefix", "_id_numbers"):  # put back after the test
        monkeypatch.setattr(events, name, getattr(events, name))
    events._new_id_salt()  # what a forked child does
    assert events.id_text(number) == text  # formatted in the child: the parent's id still
    assert events.id_text(events.id_number())[:24] != text[:24]


def test_ids_of_two_processes_share_no_part_by_their_order():
    # The per-process salt makes them unique; the counter's random start makes the first ids
    # of two processes differ in their last 12 digits too, not only in their first 24.
    code = (
        "from flask_tickstock_monitor import events;"
        "print(events.new_id(), events.id_text(events.id_number()))"
    )
    firsts = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    (a_new, a_later), (b_new, b_later) = firsts
    assert a_new[-12:] != b_new[-12:] and a_later[-12:] != b_later[-12:]
    assert a_new[:24] != b_new[:24]
