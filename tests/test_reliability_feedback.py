"""Feedback loops: a subscriber that re-logs every error at ERROR, as TickStockAppV2 does.

The monitor publishes ERROR log records; TickStockAppV2's ErrorSubscriber + EnhancedLogger
re-log each message received on tickstock:errors at ERROR (format in relogger.py). Each
published error must lead to a bounded number of events, exactly:

- on TickStockAppV2's own loggers (ignored by default): the loop is cut there, 1 event;
- on a logger the monitor does not know: the re-log is recognised as an echo when it contains
  a message published recently (8 characters or more), else published once more;
- a re-logger that never repeats the text: only the throttle (limit per call site) bounds it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest
from relogger import LOGGER, OTHER_LOGGER, ReLogger

CHANNEL = "tickstock:errors"
TESTS = os.path.dirname(os.path.abspath(__file__))


def quiet(recorder, channel: str, silence: float = 0.7, timeout: float = 15.0) -> list:
    """The messages once none arrived for ``silence`` seconds."""
    deadline = time.monotonic() + timeout
    count, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(recorder.on(channel))
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= silence:
            break
        time.sleep(0.02)
    return recorder.on(channel)


@pytest.fixture
def relogging(redis_server, make_app, record_channels):
    started = []

    def make(logger, mangle=False, **config):
        app, monitor = make_app(redis_server.url, **config)
        recorder = record_channels(redis_server.client(), CHANNEL)
        relogger = ReLogger(redis_server.client(), logger=logger, mangle=mangle).start()
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
    assert monitor.stats(app)["dropped"] == {}  # cut by name or recognised: never throttled


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


def test_a_short_message_on_an_unknown_logger_settles_after_one_echo(relogging):
    # messages under 8 characters are not remembered (they would match too much): their
    # first re-log is published once, and that one's re-log is recognised
    app, monitor, recorder, relogger = relogging(OTHER_LOGGER)
    with app.app_context():
        monitor.publish_error("oops", context={"symbol": "AAPL"})
    events = quiet(recorder, CHANNEL)
    assert [e["message"] for e in events] == [
        "oops",
        '[TickStockAppV2] [ERROR] [TickStockAppV2] oops | Context: {"symbol": "AAPL"}',
    ]
    assert events[1]["component"] == OTHER_LOGGER
    assert relogger.relogged == 2


def test_a_mangling_relogger_is_bounded_by_the_throttle(relogging):
    app, monitor, recorder, relogger = relogging(
        OTHER_LOGGER, mangle=True, TICKSTOCK_MONITOR_THROTTLE_LIMIT=4
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

    url, name, logger, mangle = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "mangle"
    app = Flask(name)
    app.config.update(
        TICKSTOCK_MONITOR_REDIS_URL=url, TICKSTOCK_MONITOR_INSTANCE_ID=name,
        TICKSTOCK_MONITOR_THROTTLE_LIMIT=5, TICKSTOCK_MONITOR_HEALTH_ENABLED=False,
    )
    monitor = TickStockMonitor(app)
    relogger = ReLogger(redis.Redis.from_url(url), logger=logger, skip_instance=name,
                        mangle=mangle).start()
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
        # B publishes its re-log of A's error; A recognises its own message inside B's
        (OTHER_LOGGER, "verbatim", ["A", "B"]),
        # nothing to recognise: the throttle (5 per log call site per window) ends it. A's
        # error, then B and A alternate 5 re-logs each; B's sixth is throttled
        (OTHER_LOGGER, "mangle", ["A"] + ["B", "A"] * 5),
    ],
    ids=["tickstock-logger", "other-logger", "other-logger-mangled"],
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
    assert stats["A"]["dropped"] == {}
    assert stats["B"]["dropped"] == ({"throttled": 1} if mode == "mangle" else {})
    if mode == "verbatim":
        assert (stats["A"]["relogged"], stats["B"]["relogged"]) == (len(events) - 1, 1)
