"""An error storm: bounded memory, the throttle working, every event accounted for exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_a_million_raises_and_100k_requests(redis_server):
    # in a process of its own, so that its RSS is the storm's and nothing else's
    script = (
        "import json; from bench import storm; "
        f"print(json.dumps(storm.run(1_000_000, 100_000, {redis_server.url!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print(figures)
    assert figures["rss_growth_mb"] <= 20
    # the throttle let 10 per raise site (10 sites) per 1 s window through, and no more
    published, throttled = figures["raise_published"], figures["raise_dropped"]["throttled"]
    assert figures["raise_dropped"] == {"throttled": throttled}
    assert published % 100 == 0 and 100 <= published <= 100 * 10
    assert published + throttled == 1_000_000 == figures["raise_accounted"]
    # what the events reported as suppressed, plus what the open windows still hold, is
    # exactly what was throttled (the warm-up's suppressed ones are reported by the storm)
    assert (
        figures["raise_reported_suppressed"] + figures["raise_outstanding_suppressed"]
        == throttled + figures["warmup_throttled"]
    )
    # without the throttle every erroring request was published: nothing queued or lost
    assert figures["request_published"] == 100_000
    assert figures["request_dropped"] == {}
    assert figures["queued_after_flush"] == 0
