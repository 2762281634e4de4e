"""Instructions a real server's erroring request costs, bare and monitored (throttling off),
counted by ``valgrind --tool=callgrind``: the figure the wall clock of ``bench.realserver``
cannot resolve on this VM (its CPU time a request strays 5 % between two bare runs).

The request is the realserver bench's ``/fail`` as a WSGI server calls it (the app called with
an environ, its body iterated and closed), with Flask's default logging on (the traceback
written to /dev/null), under threads and under eventlet's monkey-patching. Two counts:

- ``request``: the thread that serves the request (the monitor's publisher is not running:
  its items are let go), bare and monitored;
- ``publisher``: the publisher's work for one event, the same events published in batches of
  ``BATCH`` to a redis-server of this bench's own (real sends, replies read), slices not
  yielded (under valgrind the clock runs ~50x slow: the slicer would yield every few events);
  ``publisher-varied`` the same with a message of its own in each event (an id in it).

Each figure is the difference of two runs that differ only in how many requests (events) they
make, divided by that difference; ``PYTHONHASHSEED=0``. The heap alive after the warm-up is
frozen (``gc.freeze``), so the counted requests pay for collecting what they make, not for
walking the startup heap whenever a full collection happens to fall in one run and not the
other (that moved the threads figures by ~50k).
``python -m bench --only realpath`` (about 3 minutes); ``python -m bench.realpath WHAT N`` is
what each counted run executes.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .common import NoThread, callgrind_total, redis_server

FEW, MANY = 100, 500
BATCH = 16  # ~ what the publisher sends at a time at 900 errors/s with its 20 ms linger
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _app(monitored: bool, redis_url: str) -> tuple[Any, Any]:
    import logging

    import flask.logging
    from flask import Flask

    app = Flask("realpath")

    @app.route("/fail")
    def fail() -> str:
        raise ZeroDivisionError("realserver bench")

    flask.logging.default_handler.stream = open(os.devnull, "w")  # noqa: SIM115
    logging.getLogger("flask_tickstock_monitor").setLevel(logging.CRITICAL)
    if not monitored:
        return app, None
    from flask_tickstock_monitor import TickStockMonitor

    app.config.update(
        TICKSTOCK_MONITOR_REDIS_URL=redis_url,
        TICKSTOCK_MONITOR_THROTTLE_LIMIT=0,
        TICKSTOCK_MONITOR_HEALTH_ENABLED=False,
        TICKSTOCK_MONITOR_RELAY_ENABLED=False,
    )
    publisher = TickStockMonitor(app).state(app).publisher
    publisher._thread = NoThread()  # this thread does the publisher's work, when asked to
    publisher.slicer.budget = float("inf")
    return app, publisher


def _call(app: Any, environ: dict[str, Any]) -> None:
    body = app(dict(environ), lambda *args: None)
    for _ in body:
        pass
    body.close()


def child(what: str, count: int) -> None:
    """``what``: ``request-bare``, ``request-monitored``, ``publisher`` or
    ``publisher-varied`` (each event's message its own, as when an id is in it)."""
    from werkzeug.test import EnvironBuilder

    redis_url = os.environ.get("REALPATH_REDIS_URL", "redis://127.0.0.1:9/0")
    app, publisher = _app(what != "request-bare", redis_url)
    environ = EnvironBuilder(path="/fail").get_environ()
    for _ in range(50):  # warm-up: imports, caches, the first connection
        _call(app, environ)
    # What is alive now (modules, the app, the monitor) is left out of later collections: a
    # full collection walks it all (~20M instructions, 50k a request of the 400 counted), and
    # whether one falls in the run of FEW or of MANY requests swung a figure by that much.
    gc.collect()
    gc.freeze()
    if what.startswith("publisher"):
        from flask_tickstock_monitor import events

        queue = publisher._queue
        item = queue.pop()
        queue.clear()
        ((kind, message, frames, note),) = item[1]
        made = 0
        for n in (BATCH * 4, count):  # a warm-up round, then the counted one
            for _ in range(0, n, BATCH):
                if what == "publisher-varied":  # each error with a message of its own
                    for _ in range(BATCH):
                        made += 1
                        chain = ((kind, f"{message} {made}", frames, note),)
                        queue.append((events.id_number(), chain, *item[2:]))
                else:
                    queue.extend((events.id_number(), *item[1:]) for _ in range(BATCH))
                publisher._publish_batch()
        assert not publisher.dropped, publisher.stats()
    else:
        for _ in range(count):
            _call(app, environ)
            if publisher is not None:
                publisher._queue.clear()
    if publisher is not None:
        publisher._thread = None
    os._exit(0)  # no exit flush: nothing is left to send


def count(what: str, n: int, eventlet: bool, redis_url: str) -> int:
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "callgrind.out")
        code = "import eventlet; eventlet.monkey_patch()\n" if eventlet else ""
        code += f"from bench.realpath import child; child({what!r}, {n})"
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
            + [sys.executable, "-W", "ignore", "-c", code],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": "0", "REALPATH_REDIS_URL": redis_url},
        )
        return callgrind_total(out)


def run() -> dict[str, Any]:
    if shutil.which("valgrind") is None:
        return {"skipped": "valgrind is not installed (Debian package valgrind)"}
    whats = ("request-bare", "request-monitored", "publisher", "publisher-varied")
    jobs = [(w, n, ev) for ev in (False, True) for w in whats for n in (FEW, MANY)]
    with redis_server() as server, ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        counts = list(pool.map(lambda job: count(*job, server.url), jobs))
    by_job = dict(zip(jobs, counts, strict=True))
    results: dict[str, Any] = {}
    for ev in (False, True):
        per = {w: (by_job[(w, MANY, ev)] - by_job[(w, FEW, ev)]) / (MANY - FEW) for w in whats}
        results["eventlet" if ev else "threads"] = per
    return results


def rows(results: dict[str, Any]) -> list[list[str]]:
    if "skipped" in results:
        return [["instructions per real-server erroring request", results["skipped"], "-", "-"]]
    out = []
    for mode in ("threads", "eventlet"):
        per = results[mode]
        bare, request, publisher = per["request-bare"], per["request-monitored"], per["publisher"]
        total = request - bare + publisher
        out.append(
            [
                f"instructions per erroring request, Flask's logging on, {mode}:"
                " monitored (throttling off: every error published) / bare",
                f"{(bare + total) / bare:.3f}x (+{total:,.0f})",
                "-",
                f"bare {bare:,.0f}; request thread +{request - bare:,.0f};"
                f" publisher {publisher:,.0f} an event in batches of {BATCH}"
                f" ({per['publisher-varied']:,.0f} when each message is its own)",
            ]
        )
    return out


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]))
