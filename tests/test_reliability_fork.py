"""Forked processes: each child is an instance of its own; a pre-fork master is not one.

``os.fork()`` directly, and gunicorn with 4 preloaded sync workers on the suite's redis-server.
"""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
import urllib.error
import urllib.request

import pytest
from gunicornutil import gunicorn as start_gunicorn

ERRORS, MONITORING = "tickstock:errors", "tickstock:monitoring"

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def beats_by_instance(recorder) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for beat in recorder.on(MONITORING):
        out.setdefault(beat["instance"]["id"], []).append(beat)
    return out


def test_forked_child_heartbeats_as_a_new_instance(redis_server, make_app, record_channels):
    recorder = record_channels(redis_server.client(), MONITORING, ERRORS)
    app, monitor = make_app(
        redis_server.url,
        TICKSTOCK_MONITOR_HEALTH_ENABLED=True,
        TICKSTOCK_MONITOR_HEALTH_INTERVAL=0.2,
    )
    parent = monitor.state(app)
    assert recorder.wait(lambda r: beats_by_instance(r).get(parent.instance_id))
    pid = os.fork()
    if pid == 0:  # the child: beat a few times, publish an error, leave without atexit
        code = 1
        try:
            time.sleep(1.0)
            with app.app_context():
                monitor.publish_error("from the child")
            code = 0 if monitor.flush(2.0, app=app) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child_id = f"{parent.host}:{pid}"
    beats = beats_by_instance(recorder)
    assert len(beats[child_id]) >= 3
    child = beats[child_id][0]["instance"]
    assert child["pid"] == pid and child["boot_id"] != parent.boot_id
    assert [b["seq"] for b in beats[child_id]][:3] == [1, 2, 3]  # a new boot counts from 1
    (error,) = recorder.wait_count(ERRORS, 1)
    assert error["instance_id"] == child_id
    # the parent forked: like a pre-fork master, it stopped beating (its children do)
    parent_beats = len(beats_by_instance(recorder)[parent.instance_id])
    time.sleep(0.5)
    assert len(beats_by_instance(recorder)[parent.instance_id]) == parent_beats


WSGI = textwrap.dedent("""
    import os, time
    from flask import Flask
    from flask_tickstock_monitor import TickStockMonitor

    app = Flask("gunicorn_app")
    app.config.update(
        TICKSTOCK_MONITOR_REDIS_URL=os.environ["TEST_REDIS_URL"],
        TICKSTOCK_MONITOR_HEALTH_INTERVAL=0.3,
        TICKSTOCK_MONITOR_THROTTLE_LIMIT=0,
    )
    monitor = TickStockMonitor(app)

    @app.route("/slow-fail")
    def slow_fail():
        time.sleep(0.5)  # keeps its worker busy, so 4 concurrent requests reach 4 workers
        raise RuntimeError(f"failed in worker {os.getpid()}")
""")


@pytest.fixture
def gunicorn(redis_server, tmp_path):
    with start_gunicorn(WSGI, redis_server.url, tmp_path, workers=4) as proc:
        yield proc


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_gunicorn_preloaded_workers_are_instances_of_their_own(
    gunicorn, redis_server, record_channels
):
    recorder = record_channels(redis_server.client(), MONITORING, ERRORS)
    four = recorder.wait(lambda r: len(beats_by_instance(r)) >= 4, timeout=15)
    assert four, gunicorn.log.read_text()
    workers = beats_by_instance(recorder)
    assert len(workers) == 4
    pids = {beats[0]["instance"]["pid"] for beats in workers.values()}
    assert gunicorn.pid not in pids  # the master never beats
    assert len({beats[0]["instance"]["boot_id"] for beats in workers.values()}) == 4

    # four concurrent requests keep the four workers busy: one error from each
    codes: list[int] = []
    url = f"http://127.0.0.1:{gunicorn.port}/slow-fail"
    threads = [threading.Thread(target=lambda: codes.append(get(url))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert codes == [500] * 4
    errors = recorder.wait_count(ERRORS, 4)
    assert len(errors) == 4
    assert {e["instance_id"] for e in errors} == set(workers)
    for error in errors:  # the instance that published it is the worker that raised it
        assert error["message"].endswith(f"failed in worker {error['instance_id'].split(':')[1]}")

    # a recycled worker: gunicorn spawns another, which beats as a new instance
    victim = sorted(pids)[0]
    os.kill(victim, signal.SIGTERM)
    assert recorder.wait(lambda r: len(beats_by_instance(r)) >= 5, timeout=15)
    (new_id,) = set(beats_by_instance(recorder)) - set(workers)
    new = beats_by_instance(recorder)[new_id][0]["instance"]
    assert new["pid"] not in pids | {gunicorn.pid}
    assert new["boot_id"] not in {b[0]["instance"]["boot_id"] for b in workers.values()}
    # the recycled one stops beating; the master still never beats
    victim_id = next(i for i, b in workers.items() if b[0]["instance"]["pid"] == victim)
    seen = len(beats_by_instance(recorder)[victim_id])
    time.sleep(1.0)
    assert len(beats_by_instance(recorder)[victim_id]) == seen
    assert all(b["instance"]["pid"] != gunicorn.pid for b in recorder.on(MONITORING))
