"""The metrics endpoint under gunicorn with three workers: whichever worker answers a scrape, it
shows all of them; a killed worker is replaced, goes stale, offline, and is purged after the
offline TTL, so recycled workers do not pile up."""

from __future__ import annotations

import os
import signal
import textwrap
import time
import urllib.request

import pytest
from gunicornutil import gunicorn as start_gunicorn
from test_metrics import parse, value

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

WSGI = textwrap.dedent("""
    import os
    from flask import Flask
    from flask_tickstock_monitor import TickStockMonitor

    app = Flask("gunicorn_metrics")
    app.config.update(
        TICKSTOCK_MONITOR_REDIS_URL=os.environ["TEST_REDIS_URL"],
        TICKSTOCK_MONITOR_HEALTH_INTERVAL=0.3,
        TICKSTOCK_MONITOR_HEALTH_LATEST_TTL=30,
        TICKSTOCK_MONITOR_METRICS_ENDPOINT="/metrics",
        TICKSTOCK_MONITOR_OFFLINE_TTL=1.5,
    )
    monitor = TickStockMonitor(app)
""")


@pytest.fixture
def gunicorn(redis_server, tmp_path):
    with start_gunicorn(WSGI, redis_server.url, tmp_path, workers=3) as proc:
        proc.url = f"http://127.0.0.1:{proc.port}/metrics"
        yield proc


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return parse(response.read())


def states(samples: dict) -> dict[str, str]:
    """instance id -> its state (up, stale, offline) in one scrape."""
    return {
        labels["instance_id"]: labels["state"]
        for labels, v in samples.get("tickstock_instance_state", [])
        if v == 1
    }


def wait_scrape(url: str, predicate, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    samples: dict = {}
    while time.monotonic() < deadline:
        try:
            samples = scrape(url)
        except OSError:  # not listening yet
            time.sleep(0.1)
            continue
        if predicate(samples):
            return samples
        time.sleep(0.1)
    raise AssertionError(f"timed out; last scrape: {states(samples)}")


@pytest.mark.slow
def test_any_workers_scrape_shows_every_worker_and_a_killed_one_is_purged(gunicorn):
    url = gunicorn.url
    first = wait_scrape(url, lambda s: list(states(s).values()).count("up") == 3, 20)
    workers = set(states(first))
    answered = set()
    for _ in range(6):
        samples = scrape(url)
        assert set(states(samples)) == workers and set(states(samples).values()) == {"up"}
        answered.add(next(labels["instance_id"] for labels, _ in samples["tickstock_monitor_info"]))
    assert answered <= workers  # each answer came from one of them, and knew all three

    victim = sorted(workers)[0]
    info = first["tickstock_instance_info"]
    pid = int(next(labels["pid"] for labels, _ in info if labels["instance_id"] == victim))
    os.kill(pid, signal.SIGKILL)  # gunicorn forks a replacement
    gone = wait_scrape(url, lambda s: states(s).get(victim) == "offline", 10)
    assert list(states(gone).values()).count("up") == 3  # the replacement beats
    final = wait_scrape(url, lambda s: victim not in states(s), 10)
    assert len(states(final)) == 3 and set(states(final).values()) == {"up"}
    assert value(final, "tickstock_cluster_expired_instances") == 1
