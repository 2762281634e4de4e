"""Feedback loops: a subscriber that re-logs every error at ERROR, as TickStockAppV2 does.

The monitor publishes ERROR log records; TickStockAppV2's ErrorSubscriber + EnhancedLogger
re-log each message received on tickstock:errors at ERROR (format in relogger.py). Each
published error must lead to a bounded number of events, exactly:

- on TickStockAppV2's own loggers (ignored by default): the loop is cut there, 1 event, the
  re-log counted as dropped "echo";
- on a logger the monitor does not know: the re-log is an echo when something proves it is
  ours (our error_id in the record or its text, or the received message held by the code that
  logs it), 1 event and "echo" counted; a re-log of another's message is published once, with
  ``echo_of``, which is how the other side recognises its own echo in turn;
- a re-logger that holds nothing of the message when it logs (hands the text to another
  thread): nothing proves an echo, so only the throttle (limit per call site) bounds it. Text
  alone is no proof: the same logger.error text logged again is a new error.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import quiet
from relogger import LOGGER, OTHER_LOGGER, ReLogger

CHANNEL = "tickstock:errors"
TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def relogging(redis_server, make_app, record_channels):
    started = []

    def make(logger, mangle=False, handoff=False, **config):
        app, monitor = make_app(redis_server.url, **config)
        recorder = record_channels(redis_server.client(), CHANNEL)
        relogger = ReLogger(
            redis_server.client(), logger=logger, mangle=mangle, handoff=handoff
        ).start()
        started.append(relogger)
        return app, monitor, recorder, relogger

    yield make
    for relogger in started:
        relogger.stop()


@pytest.mark.parametrize("logger", [LOGGER, OTHER_LOGGER])
def test_an_unhandled_raise_is_published_once(relogging, logger):
    app, monitor, recorder, relogger = relogging(logger)

    @app.route("/bars")
    def bars():
        raise ZeroDivisionError("Failed to calculate threshold bars")

    assert app.test_client().get("/bars").status_code == 500
    events = quiet(recorder, CHANNEL)
    messages = [e["message"] for e in events]
    assert messages == ["ZeroDivisionError: Failed to calculate threshold bars"]
    assert relogger.relogged == 1
    # cut by name or recognised, and counted: never throttled
    assert monitor.stats(app)["dropped"] == {"echo": 1}


@pytest.mark.parametrize("logger", [LOGGER, OTHER_LOGGER])
def test_an_error_log_record_is_published_once(relogging, logger):
    app, monitor, recorder, relogger = relogging(logger)
    logging.getLogger("tickstock.services").error("symbol feed stalled for %s", "nasdaq100")
    events = quiet(recorder, CHANNEL)
    assert [e["message"] for e in events] == ["symbol feed stalled for nasdaq100"]
    assert relogger.relogged == 1


def test_a_short_message_on_tickstocks_logger_is_published_once(relogging):
    app, monitor, recorder, relogger = relogging(LOGGER)
    with app.app_context():
        monitor.publish_error("oops", context={"symbol": "AAPL"})
    assert [e["message"] for e in quiet(recorder, CHANNEL)] == ["oops"]


def test_a_short_message_on_an_unknown_logger_is_recognised_at_once(relogging):
    # what proves the echo is the received message in the re-logger's hands, not the text
    app, monitor, recorder, relogger = relogging(OTHER_LOGGER)
    with app.app_context():
        monitor.publish_error("oops", context={"symbol": "AAPL"})
    assert [e["message"] for e in quiet(recorder, CHANNEL)] == ["oops"]
    assert relogger.relogged == 1
    assert monitor.stats(app)["dropped"] == {"echo": 1}


def test_a_relog_that_names_our_error_id_is_an_echo(relogging):
    app, monitor, recorder, relogger = relogging(OTHER_LOGGER, mangle=True)
    with app.app_context():
        monitor.publish_error("Failed to calculate threshold bars")
    assert len(quiet(recorder, CHANNEL)) == 1
    assert relogger.relogged == 1
    assert monitor.stats(app)["dropped"] == {"echo": 1}


def test_a_relogger_without_proof_is_bounded_by_the_throttle(relogging):
    app, monitor, recorder, relogger = relogging(
        OTHER_LOGGER, handoff=True, TICKSTOCK_MONITOR_THROTTLE_LIMIT=4
    )
    with app.app_context():
        monitor.publish_error("Failed to calculate threshold bars")
    events = quiet(recorder, CHANNEL)
    # the original, then 4 re-logs (the throttle's limit for that log call site); the fifth
    # re-log is throttled and the loop ends
    assert len(events) == 1 + 4
    assert relogger.relogged == 5
    assert monitor.stats(app)["dropped"] == {"throttled": 1}


# --- across processes --------------------------------------------------------------------------

PEER = textwrap.dedent("""
    import json, sys
    import redis
    from flask import Flask
    from flask_tickstock_monitor import TickStockMonitor
    from relogger import ReLogger

    url, name, logger, mode = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    app = Flask(name)
    app.config.update(
        TICKSTOCK_MONITOR_REDIS_URL=url, TICKSTOCK_MONITOR_INSTANCE_ID=name,
        TICKSTOCK_MONITOR_THROTTLE_LIMIT=5, TICKSTOCK_MONITOR_HEALTH_ENABLED=False,
    )
    monitor = TickStockMonitor(app)
    relogger = ReLogger(redis.Redis.from_url(url), logger=logger, skip_instance=name,
                        mangle=mode == "mangle", handoff=mode == "handoff").start()
    print("ready", flush=True)
    for command in sys.stdin:
        if command.strip() == "raise":
            with app.app_context():
                try:
                    raise ValueError("Failed to calculate threshold bars")
                except ValueError:
                    monitor.capture_exception()
        else:
            break
    relogger.stop()
    monitor.flush(2.0, app=app)
    print(json.dumps({"relogged": relogger.relogged, **monitor.stats(app)}), flush=True)
""")


def peers(url: str, logger: str, mode: str, *names: str) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONPATH": TESTS + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PEER, url, name, logger, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in names
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    return procs


def finish(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate("stop\n", timeout=10)
    assert proc.returncode == 0
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("logger", "mode", "expected"),
    [
        # TickStockAppV2's re-log is never published: A's error is the only event
        (LOGGER, "verbatim", ["A"]),
        # B publishes its re-log of A's error, with echo_of naming A's; A's re-log of that
        # holds its own id: an echo
        (OTHER_LOGGER, "verbatim", ["A", "B"]),
        (OTHER_LOGGER, "mangle", ["A", "B"]),
        # nothing proves an echo: the throttle (5 per log call site per window) ends it. A's
        # error, then B and A alternate 5 re-logs each; B's sixth is throttled
        (OTHER_LOGGER, "handoff", ["A"] + ["B", "A"] * 5),
    ],
    ids=["tickstock-logger", "other-logger", "other-logger-mangled", "other-logger-handoff"],
)
def test_two_processes_relogging_each_other_converge(
    redis_server, record_channels, logger, mode, expected
):
    recorder = record_channels(redis_server.client(), CHANNEL)
    a, b = peers(redis_server.url, logger, mode, "A", "B")
    try:
        a.stdin.write("raise\n")
        a.stdin.flush()
        events = quiet(recorder, CHANNEL)
    finally:
        stats = {"A": finish(a), "B": finish(b)}
    assert [e["instance_id"] for e in events] == expected
    assert events[0]["message"] == "ValueError: Failed to calculate threshold bars"
    assert stats["A"]["published"] + stats["B"]["published"] == len(events)
    if logger == LOGGER:  # cut by name at B
        assert (stats["A"]["dropped"], stats["B"]["dropped"]) == ({}, {"echo": 1})
    elif mode == "handoff":
        assert (stats["A"]["dropped"], stats["B"]["dropped"]) == ({}, {"throttled": 1})
    else:  # B's event names A's (echo_of): proof at A
        assert events[1]["echo_of"] == events[0]["error_id"]
        assert (stats["A"]["dropped"], stats["B"]["dropped"]) == ({"echo": 1}, {})
        assert (stats["A"]["relogged"], stats["B"]["relogged"]) == (1, 1)
