"""Under eventlet: how long each green thread holds the hub at a time, in CPU time (which the
machine's other load moves far less than the wall clock), from a greenlet switch trace. The
monitor's publisher's green thread is reported apart from the request green threads.

Installed by the real-server bench's eventlet servers (``bench.realserver``), bare and
monitored alike; ``/probe`` on the app returns the figures since the last call and resets."""

from __future__ import annotations

import time
from typing import Any

import greenlet


class HubProbe:
    def __init__(self) -> None:
        self.marked: set[int] = set()  # the ids of the monitor's green threads
        self.monitor: list[float] = []  # each run of a monitor green thread, CPU seconds
        self.requests: list[float] = []  # each run of another green thread (requests)
        self.since = time.thread_time()
        self.hub: Any = None
        greenlet.settrace(self._trace)

    def _trace(self, event: str, args: Any) -> None:
        if event not in ("switch", "throw"):
            return
        origin = args[0]
        now = time.thread_time()
        run, self.since = now - self.since, now
        if id(origin) in self.marked:
            self.monitor.append(run)
        elif self.hub is not None and origin.parent is self.hub:
            self.requests.append(run)

    def mark_publisher(self) -> None:
        """Wrap the monitor's publisher loop: its green thread is marked when it starts."""
        from flask_tickstock_monitor.transport import publisher

        loop = publisher.Publisher._run

        def run(this: Any) -> None:
            self.marked.add(id(greenlet.getcurrent()))
            loop(this)

        publisher.Publisher._run = run  # type: ignore[method-assign]

    def take(self) -> dict[str, Any]:
        from eventlet import hubs

        self.hub = hubs.get_hub().greenlet
        monitor, requests = sorted(self.monitor), sorted(self.requests)
        self.monitor, self.requests = [], []
        return {"monitor": _figures(monitor), "requests": _figures(requests)}


def _figures(runs: list[float]) -> dict[str, float]:
    if not runs:
        return {"n": 0, "max_ms": 0.0, "p99_ms": 0.0, "total_ms": 0.0}
    return {
        "n": len(runs),
        "max_ms": runs[-1] * 1000,
        "p99_ms": runs[min(len(runs) - 1, int(len(runs) * 0.99))] * 1000,
        "total_ms": sum(runs) * 1000,
    }
