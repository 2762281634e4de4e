from __future__ import annotations

import gc
import logging
import weakref

import pytest
from flask import Flask, got_request_exception

from flask_tickstock_monitor import ConfigurationError, TickStockMonitor
from flask_tickstock_monitor.config import load_config


def config_of(values: dict, environ: dict | None = None):
    return load_config(values, "my_app", environ or {})


def test_defaults():
    config = config_of({})
    assert config.enabled is True
    assert config.redis_url == "redis://localhost:6379/0"
    assert config.errors_enabled is True
    assert config.health_interval == 30.0
    assert config.component == "my_app"
    assert config.source == "TickStockAppV2"
    assert (config.channel_errors, config.channel_monitoring, config.channel_invalidation) == (
        "tickstock:errors",
        "tickstock:monitoring",
        "tickstock:cache:invalidation",
    )
    assert config.log_level == logging.ERROR


def test_prefixed_keys_win_over_fallbacks():
    config = config_of(
        {"TICKSTOCK_MONITOR_REDIS_URL": "redis://a:1/2", "REDIS_URL": "redis://b:1/0"},
        {"REDIS_URL": "redis://c:1/0"},
    )
    assert config.redis_url == "redis://a:1/2"


def test_tickstock_names_from_app_config_then_environment():
    config = config_of(
        {"HEALTH_CHECK_INTERVAL": 15, "REDIS_ERROR_CHANNEL": "custom:errors"},
        {
            "HEALTH_CHECK_INTERVAL": "99",
            "MONITORING_ENABLED": "false",
            "ERROR_CHANNEL_ENABLED": "no",
            "REDIS_URL": "redis://env-host:6380/1",
        },
    )
    assert config.health_interval == 15.0  # app.config before the environment
    assert config.channel_errors == "custom:errors"
    assert config.enabled is False
    assert config.errors_enabled is False
    assert config.redis_url == "redis://env-host:6380/1"


def test_redis_host_port_db_password_from_environment():
    config = config_of(
        {},
        {
            "REDIS_HOST": "cache.local",
            "REDIS_PORT": "6390",
            "REDIS_DB": "3",
            "REDIS_PASSWORD": "p@ss/word",
        },
    )
    assert config.redis_url == "redis://:p%40ss%2Fword@cache.local:6390/3"


def test_redis_host_without_password():
    assert config_of({}, {"REDIS_HOST": "h"}).redis_url == "redis://h:6379/0"


def test_redis_host_wins_over_redis_url_as_tickstock_connects():
    # TickStockAppV2's .env.example sets both; the app connects with host/port/db/password
    both = {"REDIS_URL": "redis://url-host:6379/0", "REDIS_HOST": "h", "REDIS_PORT": "6390"}
    assert config_of({}, both).redis_url == "redis://h:6390/0"
    assert config_of(both, {}).redis_url == "redis://h:6390/0"
    # the host in the environment, the URL in app.config: still the host
    assert config_of({"REDIS_URL": "redis://u:1/0"}, {"REDIS_HOST": "h"}).redis_url == (
        "redis://h:6379/0"
    )
    # blank values (REDIS_PASSWORD= in its .env) are unset ones
    blank = {"REDIS_URL": "redis://u:1/0", "REDIS_HOST": " ", "REDIS_PASSWORD": ""}
    assert config_of({}, blank).redis_url == "redis://u:1/0"
    assert config_of({}, {"REDIS_HOST": "h", "REDIS_PORT": "", "REDIS_PASSWORD": ""}).redis_url == (
        "redis://h:6379/0"
    )


def test_the_prefixed_url_wins_over_redis_host():
    config = config_of(
        {"TICKSTOCK_MONITOR_REDIS_URL": "redis://mine:1/0", "REDIS_HOST": "h"},
        {"REDIS_HOST": "e", "REDIS_URL": "redis://u:1/0"},
    )
    assert config.redis_url == "redis://mine:1/0"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"TICKSTOCK_MONITOR_ENABLED": "maybe"}, "TICKSTOCK_MONITOR_ENABLED must be a boolean"),
        (
            {"TICKSTOCK_MONITOR_HEALTH_INTERVAL": 0},
            "TICKSTOCK_MONITOR_HEALTH_INTERVAL must be greater than 0",
        ),
        (
            {"TICKSTOCK_MONITOR_HEALTH_INTERVAL": "soon"},
            "TICKSTOCK_MONITOR_HEALTH_INTERVAL must be a number",
        ),
        ({"HEALTH_CHECK_INTERVAL": -5}, "HEALTH_CHECK_INTERVAL must be greater than 0"),
        (
            {"TICKSTOCK_MONITOR_QUEUE_SIZE": 0},
            "TICKSTOCK_MONITOR_QUEUE_SIZE must be greater than 0",
        ),
        (
            {"TICKSTOCK_MONITOR_REDIS_URL": "http://x"},
            "TICKSTOCK_MONITOR_REDIS_URL: unsupported scheme 'http'",
        ),
        (
            {"TICKSTOCK_MONITOR_LOG_LEVEL": "LOUD"},
            "TICKSTOCK_MONITOR_LOG_LEVEL must be a logging level",
        ),
        ({"TICKSTOCK_MONITOR_SOURCE": "  "}, "TICKSTOCK_MONITOR_SOURCE must be a non-empty string"),
        (
            {"TICKSTOCK_MONITOR_IGNORE_LOGGERS": [1]},
            "TICKSTOCK_MONITOR_IGNORE_LOGGERS must be a list",
        ),
        (
            {"TICKSTOCK_MONITOR_CAPTURE_5XX": True, "REDIS_PORT": "x", "REDIS_HOST": "h"},
            "REDIS_PORT must be a number",
        ),
        (
            {"TICKSTOCK_MONITOR_THROTTLE_LIMIT": True},
            "TICKSTOCK_MONITOR_THROTTLE_LIMIT must be a number",
        ),
    ],
)
def test_bad_config_raises_at_init_app_naming_the_key(values, message):
    app = Flask("bad")
    app.config.update(values)
    with pytest.raises(ConfigurationError, match=message):
        TickStockMonitor(app)
    assert "tickstock_monitor" not in app.extensions


def test_configuration_error_is_a_runtime_error():
    assert issubclass(ConfigurationError, RuntimeError)


def test_log_level_by_name_and_list_from_comma_string():
    config = config_of(
        {
            "TICKSTOCK_MONITOR_LOG_LEVEL": "warning",
            "TICKSTOCK_MONITOR_IGNORE_LOGGERS": "noisy, chatty",
        }
    )
    assert config.log_level == logging.WARNING
    assert config.ignore_loggers[-2:] == ("noisy", "chatty")
    assert "flask_tickstock_monitor" in config.ignore_loggers


def test_second_registration_is_refused(tickstock_memory_url):
    app = Flask("twice")
    app.config["TICKSTOCK_MONITOR_REDIS_URL"] = tickstock_memory_url
    monitor = TickStockMonitor(app)
    try:
        with pytest.raises(RuntimeError, match="already been registered"):
            TickStockMonitor(app)
    finally:
        monitor.shutdown(app=app)


def test_state_lookup_without_init_app_says_so():
    monitor = TickStockMonitor()
    app = Flask("none")
    with app.app_context(), pytest.raises(RuntimeError, match="Did you forget to call 'init_app'"):
        monitor.stats()
    with pytest.raises(RuntimeError, match="outside of application context"):
        monitor.stats()


def test_one_monitor_serves_two_apps(make_app, tickstock_memory_url, tickstock_events):
    monitor = TickStockMonitor()
    first, _ = make_app(tickstock_memory_url, monitor, TICKSTOCK_MONITOR_COMPONENT="first")
    second, _ = make_app(tickstock_memory_url, monitor, TICKSTOCK_MONITOR_COMPONENT="second")
    with first.app_context():
        monitor.publish_error("from first")
    with second.app_context():
        monitor.publish_error("from second")
    tickstock_events.wait_for_errors(2)
    assert {(e["component"], e["message"]) for e in tickstock_events.errors} == {
        ("first", "from first"),
        ("second", "from second"),
    }
    assert monitor.stats(first)["published"] == 1
    assert monitor.stats(second)["published"] == 1


def test_app_factory_pattern(tickstock_memory_url, tickstock_events):
    monitor = TickStockMonitor()

    def create_app():
        app = Flask("factory")
        app.config["TICKSTOCK_MONITOR_REDIS_URL"] = tickstock_memory_url
        monitor.init_app(app)

        @app.route("/fail")
        def fail():
            raise KeyError("missing")

        return app

    app = create_app()
    try:
        assert app.test_client().get("/fail").status_code == 500
        (event,) = tickstock_events.wait_for_errors(1)
        assert event["error_type"] == "KeyError"
    finally:
        monitor.shutdown(app=app)


def test_an_app_shut_down_and_dropped_is_freed(tickstock_memory_url):
    """Flask's got_request_exception is module-level: it must not keep our apps alive (it is
    connected in an app that propagates exceptions, as a testing one does)."""
    monitor = TickStockMonitor()
    apps = []
    for name in ("dropped", "kept"):
        app = Flask(name)
        app.config.update(TICKSTOCK_MONITOR_REDIS_URL=tickstock_memory_url, TESTING=True)
        monitor.init_app(app)
        app.add_url_rule("/fail", "fail", lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            app.test_client().get("/fail")
        assert got_request_exception.has_receivers_for(app)
        apps.append(app)
    kept = apps.pop()
    dropped = weakref.ref(apps.pop())
    monitor.shutdown(app=dropped())
    gc.collect()
    assert dropped() is None
    # the other app still publishes its unhandled exceptions
    with pytest.raises(ZeroDivisionError):
        kept.test_client().get("/fail")
    assert monitor.flush(2.0, app=kept)
    assert monitor.stats(kept)["published"] >= 2
    monitor.shutdown(app=kept)
