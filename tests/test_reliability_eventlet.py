"""The example app under eventlet monkey-patching (how TickStockAppV2 runs), real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest
from relayutil import invalidation, publish

ERRORS, MONITORING = "tickstock:errors", "tickstock:monitoring"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SERVE = textwrap.dedent("""
    import eventlet
    eventlet.monkey_patch()  # first thing, as TickStockAppV2 does
    import sys
    import eventlet.wsgi
    from example_app import create_app

    app = create_app({
        "TICKSTOCK_MONITOR_REDIS_URL": sys.argv[1],
        "TICKSTOCK_MONITOR_DATABASE_URI": sys.argv[2],
        "TICKSTOCK_MONITOR_HEALTH_INTERVAL": 0.3,
        "TICKSTOCK_MONITOR_THROTTLE_LIMIT": 0,
    })
    sock = eventlet.listen(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    eventlet.wsgi.server(sock, app, log_output=False)
""")


@pytest.fixture
def eventlet_app(redis_server, tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-W",
            "ignore::DeprecationWarning",
            "-c",
            SERVE,
            redis_server.url,
            f"sqlite:///{tmp_path}/errors.db",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    port = int(proc.stdout.readline())
    yield proc, f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    proc.stdout.close()


def get(url: str) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
        exc.close()
    return status, body, time.perf_counter() - started


@pytest.mark.slow
def test_example_app_under_eventlet(eventlet_app, redis_server, record_channels):
    proc, base = eventlet_app
    recorder = record_channels(redis_server.client(), ERRORS, MONITORING)
    paths = {
        "/fail/unhandled": 500,
        "/fail/handled": 500,
        "/fail/log": 200,
        "/fail/signal": 200,
        "/fail/abort": 503,
    }
    assert {path: get(base + path)[0] for path in paths} == paths
    errors = recorder.wait_count(ERRORS, 5)
    assert sorted(e["origin"] for e in errors) == sorted(
        ["unhandled", "handled_5xx", "logging", "signal", "handled_5xx"]
    )
    assert {e["instance_id"].split(":")[1] for e in errors} == {str(proc.pid)}
    # heartbeats from the green scheduler, every 0.3 s
    assert recorder.wait(lambda r: len(r.on(MONITORING)) >= 3)
    beats = recorder.on(MONITORING)
    assert {b["instance"]["pid"] for b in beats} == {proc.pid}
    assert [b["seq"] for b in beats[:3]] == [1, 2, 3]
    assert beats[-1]["health"]["components"]["redis"]["state"] == "healthy"

    # the relay: an invalidation from another process reaches the app's cache
    def cached() -> list[str]:
        return json.loads(get(base + "/invalidate/none")[1])["cached"]  # "none" is not cached

    assert cached() == ["nasdaq100", "sp500"]
    publish(redis_server.client(), invalidation("relationship", ["sp500"], scope="universe"))
    deadline = time.monotonic() + 5
    while cached() != ["nasdaq100"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cached() == ["nasdaq100"]

    # Redis hung: the green publisher waits on its socket, requests do not
    redis_server.pause()
    try:
        timings = [get(base + "/fail/unhandled") for _ in range(10)]
    finally:
        redis_server.resume()
    assert [status for status, _, _ in timings] == [500] * 10
    assert max(elapsed for _, _, elapsed in timings) < 0.25
    # the durable error log did not wait on Redis: every error at "error" and above is stored
    # (the signal's event is a warning); its database I/O runs in eventlet's tpool
    deadline = time.monotonic() + 5
    while True:
        status, body, _ = get(base + "/stats")
        written = json.loads(body)["errorlog"]["written"]
        if written == 4 + 10 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (status, written) == (200, 14)
