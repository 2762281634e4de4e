"""The monitor's threads work in slices: a batch never holds the eventlet hub (or the GIL) for
longer than the slicer's budget, and slicing loses or reorders nothing. Clocks are faked or
the proof is an interleaving; nothing here is timed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from sqlalchemy import text

from flask_tickstock_monitor import _util
from flask_tickstock_monitor.transport import Outgoing, Publisher
from flask_tickstock_monitor.transport import publisher as publisher_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeClock:
    """Advances ``step`` seconds each time it is read."""

    def __init__(self, step: float):
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def sliced(slicer: _util.Slicer, log: list[Any], step: float) -> None:
    slicer.clock = FakeClock(step)
    slicer.pause = lambda: log.append("yield")


def test_slicer_yields_once_the_budget_is_spent():
    log: list[Any] = []
    slicer = _util.Slicer(budget=0.5)
    sliced(slicer, log, 0.125)
    slicer.start()
    for i in range(10):
        slicer.tick()
        log.append(i)
    # each tick reads the clock once (0.125 s), and after a yield once more (the new slice's
    # start): the first slice is 3 items, then 4 (the budget, 0.5 s, reached at the 4th tick)
    assert log == [0, 1, 2, "yield", 3, 4, 5, 6, "yield", 7, 8, 9]
    assert slicer.yields == 2


def test_slicer_gives_way_with_the_patched_sleep(monkeypatch):
    seen: list[Any] = []
    monkeypatch.setattr(_util.time, "sleep", lambda s: seen.append(("sleep", s)))  # as eventlet
    monkeypatch.setattr(_util, "_sched_yield", lambda: seen.append("sched_yield"))
    slicer = _util.Slicer(budget=0.0)
    slicer.start()
    slicer.tick()
    assert seen == [("sleep", 0)]  # a switch to the hub


def test_slicer_gives_way_to_threads_without_sleeping(monkeypatch):
    seen: list[Any] = []
    monkeypatch.setattr(_util, "_sched_yield", lambda: seen.append("sched_yield"))
    slicer = _util.Slicer(budget=0.0)
    slicer.start()
    slicer.tick()
    assert seen == ["sched_yield"]  # releases the GIL; time.sleep(0) would sleep the slack


def publisher_with_log(monkeypatch, log: list[Any], sent: list[Any]) -> Publisher:
    publisher = Publisher(lambda: object(), batch_size=512)

    def build(i: int) -> dict[str, Any]:
        log.append(i)
        return {"i": i}

    publisher.compact("error", "tickstock:errors", build)
    monkeypatch.setattr(
        publisher_module, "publish_batch", lambda client, messages, *_: sent.extend(messages)
    )
    return publisher


def test_publisher_yields_between_slices_and_publishes_every_event_in_order(monkeypatch):
    log: list[Any] = []
    sent: list[Any] = []
    publisher = publisher_with_log(monkeypatch, log, sent)
    publisher.slicer.budget = 0.5
    sliced(publisher.slicer, log, 0.125)  # a clock read per event: slices of 4 (the first 3)
    publisher._queue.extend((i,) for i in range(300))
    publisher._queue.append(Outgoing("tickstock:monitoring", payload={"beat": 1}, kind="health"))
    publisher._publish_batch()  # on this thread, as the publisher's thread does

    builds = [entry for entry in log if entry != "yield"]
    assert builds == list(range(300))
    # no slice longer than the budget, and no yield after the last build
    slices = "".join("y" if entry == "yield" else "b" for entry in log).split("y")
    assert slices == ["bbb"] + ["bbbb"] * 74 + ["b"]  # the 301st item (the beat) is no build
    assert publisher.slicer.yields == 75
    # every event went out, in the order queued, in the one batch
    assert [m[1] for m in sent[:300]] == [b'{"i":%d}' % i for i in range(300)]
    assert sent[300] == ("tickstock:monitoring", b'{"beat":1}')
    assert publisher.published == 301
    assert publisher.queued == 0


def test_publisher_does_not_yield_for_a_small_batch(monkeypatch):
    log: list[Any] = []
    sent: list[Any] = []
    publisher = publisher_with_log(monkeypatch, log, sent)
    sliced(publisher.slicer, log, 0.0001)  # 0.5 ms for the five: within the budget
    publisher._queue.extend((i,) for i in range(5))
    publisher._publish_batch()
    assert log == [0, 1, 2, 3, 4]
    assert len(sent) == 5


def test_error_log_builds_its_rows_in_slices(make_app, tmp_path):
    app, monitor = make_app(
        "redis://127.0.0.1:9/0",  # nothing listens: the rows do not need Redis
        TICKSTOCK_MONITOR_DATABASE_URI=f"sqlite:///{tmp_path}/errors.db",
        TICKSTOCK_MONITOR_THROTTLE_LIMIT=0,
    )
    errorlog = monitor.state(app).errorlog
    log: list[Any] = []
    errorlog.slicer.budget = 0.5
    sliced(errorlog.slicer, log, 0.125)  # a clock read per row: slices of 4 (the first 3)
    row = errorlog._row
    errorlog._row = lambda entry: log.append("row") or row(entry)  # type: ignore[method-assign]
    # held back for a moment (as after a database outage), so that the 20 go in one batch
    errorlog.breaker.retry_at = time.monotonic() + 1.0
    with app.app_context():
        for i in range(20):
            monitor.publish_error(f"row {i}")
    assert errorlog.flush(5)
    assert errorlog.stats()["written"] == 20
    slices = "".join("y" if entry == "yield" else "r" for entry in log).split("y")
    assert slices == ["rrr", "rrrr", "rrrr", "rrrr", "rrrr", "r"]
    with errorlog.engine.connect() as conn:
        messages = [r[0] for r in conn.execute(text("SELECT message FROM error_logs ORDER BY id"))]
    assert messages == [f"row {i}" for i in range(20)]


EVENTLET_BATCH = textwrap.dedent("""
    import eventlet
    eventlet.monkey_patch()
    import time
    from flask_tickstock_monitor.transport import Publisher
    from flask_tickstock_monitor.transport import publisher as publisher_module

    ticks = [0]
    seen = []

    def ticker():
        while True:
            ticks[0] += 1
            eventlet.sleep(0)

    def build(i):
        deadline = time.perf_counter() + 0.0003  # CPU work, as scrubbing and serialising are
        while time.perf_counter() < deadline:
            pass
        seen.append(ticks[0])
        return {"i": i}

    sent = []
    publisher_module.publish_batch = lambda client, messages, *_: sent.extend(messages)
    publisher = Publisher(lambda: object(), batch_size=512)
    publisher.compact("error", "tickstock:errors", build)
    eventlet.spawn(ticker)
    eventlet.sleep(0)
    for i in range(200):
        publisher.submit((i,))
    assert publisher.flush(10)
    # the ticker ran while the batch was being built: other green threads were not held up
    print(len(sent), seen[-1] - seen[0], publisher.slicer.yields)
""")


@pytest.mark.slow
def test_green_publisher_lets_other_green_threads_run_mid_batch():
    out = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", EVENTLET_BATCH],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    published, ticker_runs, yields = map(int, out.split())
    assert published == 200
    assert yields >= 10  # 200 events of 0.3 ms: a yield every few events
    assert ticker_runs >= yields  # each yield let the ticker run
