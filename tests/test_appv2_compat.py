"""TickStockAppV2 as it really runs, as tests of our own: what its readers require of our messages,
its re-logging of every received error, its errorhandler(500), its Redis settings.

Its rules, read in its code and written here in our words (none of its code is copied):

- its ErrorMessage model rejects an error without ``error_id``, ``source``, ``severity``,
  ``message`` or ``timestamp`` (a datetime: Unix seconds parse); ``category``, ``component``,
  ``traceback`` may be null, ``context`` is an object; severities are lowercase names of its
  SEVERITY_LEVELS; categories are its ERROR_CATEGORIES (plus ``system``, which its own start-up
  code logs with); its EnhancedLogger files ``category`` in ``error_logs.category``;
- its ErrorSubscriber hands every message on ``tickstock:errors`` to EnhancedLogger, which logs
  it again at that severity, on a propagating logger, with a new error_id in the record;
- its monitoring subscriber takes ``event_type == "HEALTH_CHECK"`` events, reads ``health``
  (``overall_score``, ``status``, ``components``) and warns about each component whose
  ``status`` is not ``"OK"``, printing its ``details``; its admin dashboard draws ``score``;
- its app.py has an errorhandler(500) that logs two ``FLASK-ERROR-500: …`` lines at ERROR about
  the error it handles and returns a JSON 500;
- it connects to Redis with REDIS_HOST / REDIS_PORT / REDIS_DB / REDIS_PASSWORD, REDIS_URL being
  only an on/off switch (its .env.example sets both).
"""

from __future__ import annotations

import logging
import socket
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from conftest import quiet
from flask import Flask
from relogger import LOGGER, OTHER_LOGGER, ReLogger
from servers import RedisServer
from werkzeug.exceptions import BadRequestKeyError

from flask_tickstock_monitor import TickStockMonitor, signals
from flask_tickstock_monitor.categories import CATEGORIES, derive

ERRORS = "tickstock:errors"
MONITORING = "tickstock:monitoring"
SEVERITY_LEVELS = ("debug", "info", "warning", "error", "critical")
APP_LOGGER = "src.app"  # the module logger of its app.py


# --- its readers' rules, in our words ------------------------------------------------------------


def read_as_error_message(data: dict[str, Any]) -> dict[str, Any]:
    """What its ErrorMessage model requires of an error, or AssertionError."""
    for key in ("error_id", "source", "severity", "message"):
        assert isinstance(data.get(key), str), f"{key} must be a string: {data.get(key)!r}"
    for key in ("category", "component", "traceback"):
        assert data.get(key) is None or isinstance(data[key], str), key
    assert data.get("context") is None or isinstance(data["context"], dict)
    when = datetime.fromtimestamp(data["timestamp"], timezone.utc)  # its datetime field
    assert abs(when.timestamp() - time.time()) < 60
    return data


def component_warnings(beat: dict[str, Any]) -> list[str]:
    """What its monitoring subscriber logs as warnings for one HEALTH_CHECK event."""
    assert beat.get("event_type") == "HEALTH_CHECK"
    health = beat["health"]
    assert isinstance(health["overall_score"], int) and isinstance(health["status"], str)
    return [
        f"Component {name}: {component.get('status')} - {component.get('details')}"
        for name, component in health["components"].items()
        if component.get("status") != "OK"
    ]


def appv2_500_handler(app: Flask) -> None:
    """The shape of its errorhandler(500): two ERROR lines about the error, then a JSON 500."""
    log = logging.getLogger(APP_LOGGER)

    @app.errorhandler(500)
    def internal_error(error):
        log.error(f"FLASK-ERROR-500: {error}")
        details = vars(error) if hasattr(error, "__dict__") else "No details available"
        log.error(f"FLASK-ERROR-500: Exception details: {details}")
        return {"error": "Internal server error", "message": str(error)}, 500


@pytest.fixture
def appv2(redis_server, make_app, record_channels):
    """An app shaped like TickStockAppV2 (its 500 handler), a recorder on the errors channel,
    and its re-logging subscriber when asked (``relog=`` the logger it re-logs on)."""
    relogs: list[ReLogger] = []

    def make(relog: str | None = None, **config):
        app, monitor = make_app(redis_server.url, **config)
        appv2_500_handler(app)
        recorder = record_channels(redis_server.client(), ERRORS, MONITORING)
        if relog is not None:
            relogs.append(ReLogger(redis_server.client(), logger=relog).start())
        return app, monitor, recorder

    yield make
    for relogger in relogs:
        relogger.stop()


# --- the error contract --------------------------------------------------------------------------


def test_every_kind_of_error_reads_as_its_error_message(appv2):
    app, monitor, recorder = appv2()

    @app.route("/fail")
    def fail():
        raise ZeroDivisionError("Failed to calculate threshold bars")

    with app.app_context():
        monitor.publish_error("feed stalled", severity="warning", component="market_data")
        try:
            {}["missing"]
        except KeyError:
            monitor.capture_exception(severity="critical")
    logging.getLogger("src.core.services.pattern_detection").error("no patterns for AAPL")
    assert app.test_client().get("/fail").status_code == 500
    assert monitor.flush(2.0, app=app)
    events = recorder.wait_count(ERRORS, 4)
    assert len(events) == 4
    for event in events:
        read_as_error_message(event)
        assert event["severity"] in SEVERITY_LEVELS  # lowercase, its names
        assert event["source"] == "TickStockAppV2"
        assert event["category"] in CATEGORIES
    assert [e["category"] for e in events] == ["system", "system", "pattern", "system"]


@pytest.mark.parametrize(
    ("exc", "name", "category"),
    [
        (ConnectionError("refused"), None, "network"),
        (TimeoutError("timed out"), None, "network"),  # socket.timeout
        (socket.gaierror("no such host"), None, "network"),
        (ValueError("not a number: 'x'"), None, "validation"),
        (BadRequestKeyError("symbol"), None, "validation"),  # a missing form/query key
        (KeyError("internal"), None, "system"),  # a bug, not input
        (PermissionError("denied"), None, "security"),
        (ModuleNotFoundError("no module"), None, "configuration"),
        (MemoryError(), None, "performance"),
        (ZeroDivisionError("x"), "src.core.services.pattern_detection", "pattern"),
        (None, "app.db.session", "database"),
        (None, "src.core.services.tickstockpl_api", "integration"),
        (None, "app.feedback", "system"),  # a word, not a substring: "db" is not in it
        (None, "flask_socketio", "websocket"),
    ],
)
def test_category_from_the_exception_then_the_logger(exc, name, category):
    assert derive([type(exc)] if exc is not None else [], name) == category
    assert category in CATEGORIES


def test_category_of_library_errors():
    import redis
    import sqlalchemy.exc

    assert derive([redis.exceptions.ConnectionError], None) == "redis"
    assert derive([sqlalchemy.exc.OperationalError], "app") == "database"
    # a chain: the newest exception first, then its causes
    assert derive([RuntimeError, sqlalchemy.exc.IntegrityError], None) == "database"
    try:
        import psycopg
    except ImportError:
        return
    assert derive([psycopg.OperationalError], None) == "database"


def test_category_per_call_and_by_before_send(appv2):
    app, monitor, recorder = appv2()

    @monitor.before_send
    def recategorise(event):
        if event["message"] == "recategorised":
            event["category"] = "performance"
        return event

    with app.app_context():
        monitor.publish_error("bars late", category="integration")
        try:
            raise ValueError("bad universe")
        except ValueError:
            monitor.capture_exception(category="pattern")
        monitor.publish_error("recategorised")
        with pytest.raises(ValueError, match="category"):
            monitor.publish_error("empty", category="")
    assert monitor.flush(2.0, app=app)
    events = recorder.wait_count(ERRORS, 3)
    assert [e["category"] for e in events] == ["integration", "pattern", "performance"]


def test_the_durable_error_log_files_the_category(appv2, tmp_path):
    from databases import read_rows

    url = f"sqlite:///{tmp_path}/errors.db"
    app, monitor, recorder = appv2(TICKSTOCK_MONITOR_DATABASE_URI=url)
    with app.app_context():
        monitor.capture_exception(ConnectionError("upstream refused"))
    assert monitor.flush(5.0, app=app)
    (row,) = read_rows(url)
    assert row["category"] == "network"


# --- its re-logging subscriber -------------------------------------------------------------------


@pytest.mark.parametrize("logger", [LOGGER, OTHER_LOGGER])
def test_its_relogging_stays_at_one_message_and_is_counted(appv2, logger):
    app, monitor, recorder = appv2(relog=logger)
    dropped: list[tuple[str, int]] = []

    def on_drop(sender, reason, count):
        dropped.append((reason, count))

    with signals.event_dropped.connected_to(on_drop, sender=app):
        logging.getLogger("src.core.services.market_data").error("symbol feed stalled")
        events = quiet(recorder, ERRORS)
    assert [e["message"] for e in events] == ["symbol feed stalled"]
    assert monitor.stats(app)["dropped"] == {"echo": 1}
    assert dropped == [("echo", 1)]


def test_genuine_repeats_pass_the_throttle_limit_while_it_relogs(appv2):
    app, monitor, recorder = appv2(relog=OTHER_LOGGER, TICKSTOCK_MONITOR_THROTTLE_LIMIT=3)
    log = logging.getLogger("src.core.services.market_data")
    for _ in range(5):  # the same text, five distinct occurrences
        log.error("symbol feed stalled for nasdaq100")
        time.sleep(0.05)
    events = quiet(recorder, ERRORS)
    assert [e["message"] for e in events] == ["symbol feed stalled for nasdaq100"] * 3
    # each published one was re-logged and recognised; the 4th and 5th were throttled
    assert monitor.stats(app)["dropped"] == {"echo": 3, "throttled": 2}


# --- one event per failing request ---------------------------------------------------------------


def test_its_500_handler_makes_one_event_with_its_lines_attached(appv2):
    app, monitor, recorder = appv2(relog=OTHER_LOGGER)

    @app.route("/bars")
    def bars():
        raise ZeroDivisionError("Failed to calculate threshold bars")

    client = app.test_client()
    response = client.get("/bars")
    assert response.status_code == 500
    assert response.json["error"] == "Internal server error"
    events = quiet(recorder, ERRORS)
    assert len(events) == 1
    (event,) = events
    read_as_error_message(event)
    assert event["message"] == "ZeroDivisionError: Failed to calculate threshold bars"
    assert event["origin"] == "unhandled"
    lines = event["context"]["log"]
    assert [(line["logger"], line["level"]) for line in lines] == [(APP_LOGGER, "ERROR")] * 2
    assert lines[0]["message"].startswith("FLASK-ERROR-500: 500 Internal Server Error")
    assert lines[1]["message"].startswith("FLASK-ERROR-500: Exception details: {")
    assert monitor.stats(app)["dropped"] == {"echo": 1}  # its subscriber's re-log, nothing else


def test_a_handled_5xx_with_logging_handler_is_one_event(appv2):
    app, monitor, recorder = appv2()
    log = logging.getLogger(APP_LOGGER)

    @app.errorhandler(LookupError)
    def lookup_failed(error):
        log.error("LOOKUP-ERROR: %s", error)
        log.error("LOOKUP-ERROR: again", exc_info=error)
        return {"error": "unavailable"}, 503

    @app.route("/symbol")
    def symbol():
        raise LookupError("no such universe")

    assert app.test_client().get("/symbol").status_code == 503
    (event,) = quiet(recorder, ERRORS)
    assert event["origin"] == "handled_5xx" and event["error_type"] == "LookupError"
    assert [line["message"] for line in event["context"]["log"]] == [
        "LOOKUP-ERROR: no such universe",
        "LOOKUP-ERROR: again",
    ]


def test_a_handler_that_answers_4xx_publishes_its_error_line_as_before(appv2):
    app, monitor, recorder = appv2()

    @app.errorhandler(ValueError)
    def bad_input(error):
        logging.getLogger(APP_LOGGER).error("VALIDATION-ERROR: %s", error)
        return {"error": "bad input"}, 400

    @app.route("/form")
    def form():
        raise ValueError("symbol missing")

    assert app.test_client().get("/form").status_code == 400
    (event,) = quiet(recorder, ERRORS)
    assert event["message"] == "VALIDATION-ERROR: symbol missing"
    assert event["origin"] == "logging" and event["context"]["path"] == "/form"


def test_records_about_an_error_published_before_the_handler_are_counted(appv2):
    app, monitor, recorder = appv2()

    @app.route("/explicit")
    def explicit():
        try:
            raise RuntimeError("published by the view")
        except RuntimeError:
            monitor.capture_exception()
            raise

    assert app.test_client().get("/explicit").status_code == 500
    (event,) = quiet(recorder, ERRORS)
    assert event["origin"] == "explicit"
    assert monitor.stats(app)["dropped"] == {"merged": 2}  # the handler's two lines


# --- the health block ----------------------------------------------------------------------------


def test_its_monitoring_subscriber_warns_only_about_what_is_not_healthy(appv2):
    monitor = TickStockMonitor()
    state = {"value": "healthy"}

    @monitor.health_check("database")
    def database():
        return {"status": state["value"], "pool": 5}

    app, _, recorder = appv2(monitor=monitor)
    monitor.publish_health(app=app)
    state["value"] = "degraded"
    monitor.publish_health(app=app)
    healthy, degraded = recorder.wait_count(MONITORING, 2)
    assert healthy["status"] == "healthy" and component_warnings(healthy) == []
    for beat in (healthy, degraded):
        for component in beat["health"]["components"].values():
            assert isinstance(component["details"], str) and isinstance(component["score"], int)
    assert degraded["status"] == "degraded"  # ours, lowercase, at the top and in health
    assert degraded["health"]["status"] == "degraded"
    assert component_warnings(degraded) == ["Component database: DEGRADED - degraded (pool=5)"]
    assert degraded["health"]["components"]["database"]["state"] == "degraded"


# --- its Redis settings --------------------------------------------------------------------------


def test_the_monitor_publishes_to_the_redis_host_it_connects_to(
    redis_server, record_channels, monkeypatch
):
    other = RedisServer().start()  # what REDIS_URL names: the app does not connect there
    try:
        on_host = record_channels(redis_server.client(), ERRORS)
        on_url = record_channels(other.client(), ERRORS)
        # its .env: both set, the password blank
        monkeypatch.setenv("REDIS_URL", other.url)
        monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
        monkeypatch.setenv("REDIS_PORT", str(redis_server.port))
        monkeypatch.setenv("REDIS_DB", "0")
        monkeypatch.setenv("REDIS_PASSWORD", "")
        app = Flask("appv2_settings")
        app.config["TICKSTOCK_MONITOR_HEALTH_ENABLED"] = False
        monitor = TickStockMonitor(app)
        try:
            with app.app_context():
                monitor.publish_error("to the server it connects to")
            assert monitor.flush(2.0, app=app)
            assert [e["message"] for e in on_host.wait_count(ERRORS, 1)] == [
                "to the server it connects to"
            ]
            assert quiet(on_url, ERRORS, silence=0.3) == []
        finally:
            monitor.shutdown(app=app)
    finally:
        other.stop()


# --- two apps on one monitor ---------------------------------------------------------------------


def test_two_apps_on_one_monitor_publish_each_record_once(redis_server, make_app, record_channels):
    monitor = TickStockMonitor()
    first, _ = make_app(redis_server.url, monitor, TICKSTOCK_MONITOR_INSTANCE_ID="first")
    second, _ = make_app(redis_server.url, monitor, TICKSTOCK_MONITOR_INSTANCE_ID="second")
    recorder = record_channels(redis_server.client(), ERRORS)

    @second.route("/log")
    def log_in_a_request():
        logging.getLogger("app.views").error("logged in a request of the second")
        return "ok"

    log = logging.getLogger("app.jobs")
    with first.app_context():
        log.error("logged in the first's context")
    with second.app_context():
        log.error("logged in the second's context")
    log.error("logged outside any context")
    assert second.test_client().get("/log").status_code == 200
    for app in (first, second):
        assert monitor.flush(2.0, app=app)
    events = quiet(recorder, ERRORS)
    assert sorted((e["message"], e["instance_id"]) for e in events) == [
        ("logged in a request of the second", "second"),
        ("logged in the first's context", "first"),
        ("logged in the second's context", "second"),
        ("logged outside any context", "first"),  # the first set up
    ]


def test_a_storm_of_log_records_pays_no_look_into_frames_past_the_throttle(appv2, monkeypatch):
    from flask_tickstock_monitor import echo

    looks: list[int] = []
    examine_frames = echo._examine_frames

    def counted(proof, recent):
        looks.append(1)
        examine_frames(proof, recent)

    monkeypatch.setattr(echo, "_examine_frames", counted)
    app, monitor, recorder = appv2(TICKSTOCK_MONITOR_THROTTLE_LIMIT=3)
    for _ in range(10):
        logging.getLogger("app.jobs").error("the same line, a storm of it")
    assert monitor.flush(2.0, app=app)
    assert len(recorder.wait_count(ERRORS, 3)) == 3
    assert len(looks) == 3
    assert monitor.stats(app)["dropped"] == {"throttled": 7}


def test_where_flask_does_not_close_the_request_a_teardown_function_sends_it(appv2, monkeypatch):
    from flask_tickstock_monitor import capture, requestlog

    monkeypatch.setattr(capture, "CLOSES_REQUEST", False)
    monkeypatch.setattr(requestlog, "CLOSES_REQUEST", False)
    app, monitor, recorder = appv2()
    assert app.teardown_request_funcs[None]  # registered only where needed

    @app.route("/bars")
    def bars():
        raise ZeroDivisionError("Failed to calculate threshold bars")

    assert app.test_client().get("/bars").status_code == 500
    (event,) = quiet(recorder, ERRORS)
    assert len(event["context"]["log"]) == 2


def test_an_ok_request_costs_no_teardown_function(appv2):
    app, monitor, recorder = appv2()
    assert not app.teardown_request_funcs.get(None)


def test_an_id_in_the_text_that_is_not_ours_proves_nothing(appv2):
    app, monitor, recorder = appv2()
    logging.getLogger("app.orders").error("order 3f1c5a0e-1b2c-4d3e-8f40-123456789abc failed")
    (event,) = quiet(recorder, ERRORS)
    assert "echo_of" not in event  # only a received message names what it echoes
    assert monitor.stats(app)["dropped"] == {}
