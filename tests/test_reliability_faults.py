"""Redis faults around the app's life: absent at start, hung or refusing at interpreter exit.

The core's basic exit tests are in test_transport.py; these add the error log, eventlet and
a Redis that refuses connections, and measure the exit flush itself (not interpreter start).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from servers import RedisServer, free_port

CHANNEL = "tickstock:errors"


def test_redis_down_at_start_then_up(make_app, record_channels):
    port = free_port()
    app, monitor = make_app(f"redis://127.0.0.1:{port}/0", TICKSTOCK_MONITOR_THROTTLE_LIMIT=0)

    @app.route("/fail")
    def fail():
        raise RuntimeError("while Redis is down")

    @app.route("/ok")
    def ok():
        return "served"

    client = app.test_client()
    assert client.get("/ok").data == b"served"
    assert [client.get("/fail").status_code for _ in range(3)] == [500] * 3
    deadline = time.monotonic() + 5
    while not monitor.stats(app)["dropped"].get("publish_failed") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert monitor.stats(app)["connected"] is False
    server = RedisServer(port=port).start()  # the suite's own server, on the URL's port
    try:
        recorder = record_channels(server.client(), CHANNEL)
        with app.app_context():
            monitor.publish_error("Redis came up")
        assert monitor.flush(10.0, app=app)  # the breaker's backoff is at most 7.5 s
        messages = [e["message"] for e in recorder.wait_count(CHANNEL, 1)]
        assert "Redis came up" in messages
        stats = monitor.stats(app)
        assert stats["connected"] is True
        # every one of the four is accounted for: lost while down, or published once up
        assert stats["published"] + stats["dropped"]["publish_failed"] == 4
        assert client.get("/ok").data == b"served"
    finally:
        server.stop()


# --- exit with events queued ---------------------------------------------------------------

# The timer is registered before the package is imported: atexit runs handlers last-in
# first-out, so it runs after the monitor's exit flush and measures exactly that.
PRELUDE = """
import atexit, sys, time
END = []
atexit.register(lambda: print(json.dumps({"exit_flush_s": time.monotonic() - END[0]})))
"""


def run_exiting_app(
    url: str, body: str, *, eventlet: bool = False, timeout: float = 20, **config: object
) -> dict:
    script = "\n".join(
        [
            "import eventlet; eventlet.monkey_patch()" if eventlet else "",
            "import json",
            PRELUDE,
            "from flask import Flask",
            "from flask_tickstock_monitor import TickStockMonitor",
            'app = Flask("exiting")',
            f"app.config.update({{'TICKSTOCK_MONITOR_REDIS_URL': {url!r}, **{config!r}}})",
            "monitor = TickStockMonitor(app)",
            textwrap.dedent(body),
            "END.append(time.monotonic())",
        ]
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["process_s"] = time.monotonic() - started
    return out


PUBLISH_500 = """
with app.app_context():
    for i in range(500):
        monitor.publish_error(f"exit {i}")
"""


@pytest.mark.parametrize("eventlet", [False, True], ids=["threads", "eventlet"])
def test_queued_events_are_flushed_at_exit(redis_server, record_channels, eventlet):
    recorder = record_channels(redis_server.client(), CHANNEL)
    out = run_exiting_app(
        redis_server.url, PUBLISH_500, eventlet=eventlet, TICKSTOCK_MONITOR_THROTTLE_LIMIT=0
    )
    assert out["exit_flush_s"] < 2.0
    events = recorder.wait_count(CHANNEL, 500)
    assert sorted(e["message"] for e in events) == sorted(f"exit {i}" for i in range(500))


@pytest.mark.parametrize("eventlet", [False, True], ids=["threads", "eventlet"])
def test_exit_with_redis_hung_and_the_error_log(redis_server, tmp_path, eventlet):
    db = tmp_path / "errors.db"
    redis_server.pause()
    try:
        out = run_exiting_app(
            redis_server.url,
            PUBLISH_500.replace("500", "50"),
            eventlet=eventlet,
            TICKSTOCK_MONITOR_THROTTLE_LIMIT=0,
            TICKSTOCK_MONITOR_DATABASE_URI=f"sqlite:///{db}",
        )
    finally:
        redis_server.resume()
    # the exit budget is 2 s (TICKSTOCK_MONITOR_EXIT_FLUSH_TIMEOUT), whatever Redis does
    assert out["exit_flush_s"] < 2.6
    # the durable error log did not wait on Redis: every error was stored
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute("select count(*) from error_logs").fetchone()
    assert count == 50


@pytest.mark.parametrize("eventlet", [False, True], ids=["threads", "eventlet"])
def test_exit_with_redis_refusing_connections_is_quick(eventlet):
    out = run_exiting_app(
        f"redis://127.0.0.1:{free_port()}/0",
        PUBLISH_500,
        eventlet=eventlet,
        TICKSTOCK_MONITOR_THROTTLE_LIMIT=0,
    )
    assert out["exit_flush_s"] < 2.6
