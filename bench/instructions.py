"""Instructions per event, counted by ``valgrind --tool=callgrind``: the figures of the error
plane that do not move with the machine's speed (this VM's wall clock swings 2x within
seconds; an instruction count is the same run after run).

Each figure is the difference of two runs that differ only in how many events they make, so
the interpreter's start-up cancels out, divided by the difference in events; only the
thread that does the work is counted (callgrind counts each thread apart).

- ``errors``: ``publish_error`` in an app context (the caller) and the publisher's build,
  serialisation and packing of the same events (the socket write left out: it is the
  kernel's), on one thread, in chunks of 1,024 as the sustained run's batches. Beside it the
  bare Python pipeline of ``bench.errors.python_floor`` counted the same way.
- ``request``: one erroring request through Flask's test client, bare, with the monitor, with
  only Flask's dispatch of our hooks, and with the least capture of ``bench.errors.floor_capture``
  (the request thread; the publisher's thread apart).

Opt-in (``python -m bench --only instructions``, a few minutes): it needs valgrind
(Debian's package ``valgrind``). ``python -m bench.instructions SCENARIO N`` is what each
counted run executes.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .common import NoThread, callgrind_total, redis_server

CHUNK = 1024
EVENTS = 22 * CHUNK  # events in the larger run of the error plane's figures (the other: none)
REQUESTS = (100, 1_100)  # erroring requests in the two runs of the request figures
#: the request figures' variants, as ``bench.errors.erroring_app`` builds them
REQUEST_VARIANTS = ("bare", "monitor", "hooks", "floor")


# --- what each counted run executes --------------------------------------------------------


def _errors(count: int, drain: bool) -> None:
    from flask import Flask

    from flask_tickstock_monitor import TickStockMonitor
    from flask_tickstock_monitor.transport import publisher as publisher_module
    from flask_tickstock_monitor.transport import wire

    app = Flask("bench_instructions")
    app.config.update(
        TICKSTOCK_MONITOR_REDIS_URL="redis://127.0.0.1:9/0",  # never connected: see below
        TICKSTOCK_MONITOR_THROTTLE_LIMIT=0,
        TICKSTOCK_MONITOR_QUEUE_SIZE=CHUNK * 2,
        TICKSTOCK_MONITOR_BATCH_SIZE=CHUNK,
        TICKSTOCK_MONITOR_HEALTH_ENABLED=False,
    )
    monitor = TickStockMonitor(app)
    publisher = monitor.state(app).publisher
    # The batch is packed as for Redis and not written: a socket's cost is the kernel's, and
    # the replies' timing would make the count vary.
    publisher_module.publish_batch = lambda client, messages, *_: wire._pack_publishes(  # type: ignore[assignment]
        b"PUBLISH", messages
    )
    publisher._thread = NoThread()  # type: ignore[assignment]  # this thread drains, in turn
    # Under valgrind the clock runs ~50x slow: the slicer would yield every few events where it
    # yields once in ~50 at full speed. Its clock reads are counted, its yields are not.
    publisher.slicer.budget = float("inf")
    with app.app_context():
        publish = monitor.publish_error
        for base in range(-CHUNK, count, CHUNK):  # a chunk first in every run: the warm-up
            for i in range(base, base + CHUNK):
                publish("sustained", context={"i": i})
            if drain:
                while publisher._queue:
                    publisher._publish_batch()
            else:
                publisher._queue.clear()
    publisher._queue.clear()
    publisher._thread = None


def _floor(count: int, drain: bool) -> None:
    import time

    from flask_tickstock_monitor import events
    from flask_tickstock_monitor.transport import wire

    from .errors import FloorItem, floor_messages

    queue: deque[FloorItem] = deque()
    for base in range(-CHUNK, count, CHUNK):  # a chunk first in every run: the warm-up
        for i in range(base, base + CHUNK):
            queue.append((events.new_id(), "sustained", {"i": i}, time.time()))
        if not drain:
            queue.clear()
            continue
        messages = floor_messages([queue.popleft() for _ in range(len(queue))])
        wire._pack_publishes(b"PUBLISH", messages)


def _request(variant: str, count: int) -> None:
    from . import errors

    with redis_server() as server:
        app, monitor = errors.erroring_app(variant, server.url)
        errors.request_times(app, 50)
        if monitor is not None:
            monitor.flush(5, app=app)
        errors.request_times(app, count)
        if monitor is not None:
            monitor.shutdown(timeout=5, app=app)


def child(scenario: str, count: int) -> None:
    # The other threads (the monitor's) wait while this one runs: no switches in the count.
    sys.setswitchinterval(1000)
    if scenario in ("errors", "errors-fill"):
        _errors(count, drain=scenario == "errors")
    elif scenario in ("floor", "floor-fill"):
        _floor(count, drain=scenario == "floor")
    elif scenario.startswith("request-"):
        _request(scenario.removeprefix("request-"), count)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    sys.setswitchinterval(0.005)


# --- the counting -------------------------------------------------------------------------------


def count(scenario: str, n: int) -> int:
    """Instructions of the main thread of ``python -m bench.instructions scenario n``."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "callgrind.out")
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "bench.instructions",
                scenario,
                str(n),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        return callgrind_total(sorted(glob.glob(out + "-*"))[0])  # the main thread's file


def run() -> dict[str, Any]:
    if shutil.which("valgrind") is None:
        return {"skipped": "valgrind is not installed (Debian package valgrind)"}
    large = EVENTS
    few, many = REQUESTS
    jobs = [(s, n) for s in ("errors", "floor") for n in (0, large)]
    jobs += [(f"{s}-fill", large) for s in ("errors", "floor")]
    jobs += [(f"request-{v}", n) for v in REQUEST_VARIANTS for n in (few, many)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: count(*job), jobs), strict=True))
    results: dict[str, Any] = {}
    for side in ("errors", "floor"):
        empty, full = counts[(side, 0)], counts[(side, large)]
        fill = counts[(f"{side}-fill", large)]
        results[side] = {"caller": (fill - empty) / large, "publisher": (full - fill) / large}
    per_request = {
        v: (counts[(f"request-{v}", many)] - counts[(f"request-{v}", few)]) / (many - few)
        for v in REQUEST_VARIANTS
    }
    results["request"] = per_request
    results["events"] = large
    return results


def rows(results: dict[str, Any]) -> list[list[str]]:
    if "skipped" in results:
        return [["instructions per event (callgrind)", results["skipped"], "-", "-"]]
    ours, floor, req = results["errors"], results["floor"], results["request"]
    total, floor_total = ours["caller"] + ours["publisher"], floor["caller"] + floor["publisher"]
    return [
        [
            "instructions per publish_error event: caller / publisher",
            f"{ours['caller']:,.0f} / {ours['publisher']:,.0f} ({total:,.0f})",
            "-",
            f"bare Python pipeline {floor['caller']:,.0f} / {floor['publisher']:,.0f}"
            f" ({floor_total:,.0f}): ours {total / floor_total:.2f}x",
        ],
        [
            "instructions per erroring request, request thread",
            f"{req['monitor'] / req['bare']:.3f}x bare (+{req['monitor'] - req['bare']:,.0f})",
            "-",
            f"bare {req['bare']:,.0f}; Flask's dispatch of our hooks alone"
            f" {req['hooks'] / req['bare']:.3f}x (+{req['hooks'] - req['bare']:,.0f});"
            f" the least capture {req['floor'] / req['bare']:.3f}x"
            f" (+{req['floor'] - req['bare']:,.0f})",
        ],
    ]


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]))
