"""Small helpers the planes share: throttling, a circuit breaker, rate-limited logging, a
wake-up call, time slices for a monitoring thread's work, and the mark of a monitoring thread
(whose log records are never published)."""

from __future__ import annotations

import contextvars
import logging
import os
import random
import threading
import time
from typing import Any

#: Set in the context of each of the monitor's threads. A context variable, not a
#: ``threading.local``: every thread (and, under eventlet or gevent, every green thread) starts
#: with a context of its own, and reading one is a C call, where eventlet's patched
#: ``threading.local`` runs Python code on every error log record that asks.
_monitoring: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "tickstock_monitoring_thread", default=False
)


def mark_monitoring_thread() -> None:
    """Call first thing on a thread of the monitor's own: what it logs is never published."""
    _monitoring.set(True)


def on_monitoring_thread() -> bool:
    """True on the monitor's own threads (publisher, subscription, applier, writer)."""
    return _monitoring.get()


def thread_report(thread: threading.Thread | None, loop_at: float, stall_after: float) -> dict:
    """The liveness of one of the monitor's threads: not started (which is fine: threads start
    with their first work), or alive and round its loop within ``stall_after`` seconds."""
    if thread is None:
        return {"running": False, "ok": True}
    alive = thread.is_alive()
    age = time.monotonic() - loop_at
    return {"running": alive, "loop_age_s": round(age, 3), "ok": alive and age <= stall_after}


#: The longest a monitoring thread works before it lets the app run (seconds).
SLICE_SECONDS = 0.001


class Slicer:
    """Cuts a monitoring thread's CPU work into slices of at most ``budget`` seconds, so that it
    never holds an eventlet hub (whose request greenlets wait while a green thread computes)
    or, under threads, the GIL for longer. Call :meth:`start` when the work begins and
    :meth:`tick` after each item: once ``budget`` has passed since the last yield it yields
    (:func:`give_way`). ``clock`` and ``pause`` may be replaced (tests)."""

    __slots__ = ("budget", "clock", "pause", "since", "yields")

    def __init__(self, budget: float = SLICE_SECONDS) -> None:
        self.budget = budget
        self.clock = time.perf_counter
        self.pause = give_way
        self.since = 0.0
        self.yields = 0  # how many times the work gave way (for tests and stats)

    def start(self) -> None:
        self.since = self.clock()

    def tick(self) -> None:
        if self.clock() - self.since >= self.budget:
            self.pause()
            self.yields += 1
            self.since = self.clock()


_BUILTIN = type(len)
_sched_yield = getattr(os, "sched_yield", None)


def give_way() -> None:
    """Let the app run: under eventlet's (or gevent's) monkey-patching, ``time.sleep(0)``,
    looked up when called, is a switch to the hub, which runs the request greenlets; under
    threads, ``sched_yield`` releases the GIL to a request thread waiting for it (where
    ``time.sleep(0)`` would also sleep for the kernel's timer slack, 60 us or more)."""
    sleep = time.sleep
    if type(sleep) is not _BUILTIN or _sched_yield is None:
        sleep(0)
    else:
        _sched_yield()


class Throttle:
    """Lets ``limit`` identical errors through per ``window`` seconds and counts the rest."""

    def __init__(self, limit: int, window: float, max_keys: int = 10_000):
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._windows: dict[Any, list[Any]] = {}  # key -> [window start, count, suppressed]

    def admit(self, key: Any) -> tuple[bool, int]:
        """``(allowed, suppressed since the last admitted one)``."""
        if self.limit <= 0:
            return True, 0
        now = time.monotonic()
        with self._lock:
            entry = self._windows.get(key)
            if entry is None:
                if len(self._windows) >= self.max_keys:
                    self._expire(now)
                self._windows[key] = [now, 1, 0]
                return True, 0
            if now - entry[0] >= self.window:
                suppressed = entry[2]
                entry[0], entry[1], entry[2] = now, 1, 0
                return True, suppressed
            if entry[1] < self.limit:
                entry[1] += 1
                return True, 0
            entry[2] += 1
            return False, 0

    def blocked(self, key: Any) -> bool:
        """``admit(key)`` would refuse now (asked without counting: a look, no lock)."""
        entry = self._windows.get(key)
        return (
            entry is not None
            and 0 < self.limit <= entry[1]
            and time.monotonic() - entry[0] < self.window
        )

    def _expire(self, now: float) -> None:
        stale = [k for k, v in self._windows.items() if now - v[0] >= self.window and not v[2]]
        for key in stale:
            del self._windows[key]
        if len(self._windows) >= self.max_keys:  # all busy: forget the oldest half
            oldest = sorted(self._windows.items(), key=lambda kv: kv[1][0])
            for key, _ in oldest[: len(oldest) // 2]:
                del self._windows[key]


class RateLimitedLog:
    """A logger that says each kind of problem once per ``every`` seconds, with how many
    similar ones it kept quiet about since."""

    def __init__(self, logger: logging.Logger, every: float = 60.0):
        self.logger = logger
        self._throttle = Throttle(1, every)

    def log(self, level: int, key: Any, msg: str, *args: Any, exc_info: Any = None) -> bool:
        """Log ``msg % args`` (plus the suppressed count) unless ``key`` was logged lately."""
        allowed, suppressed = self._throttle.admit(key)
        if allowed:
            self.logger.log(
                level, msg + " (%d similar suppressed)", *args, suppressed, exc_info=exc_info
            )
        return allowed

    def warning(self, key: Any, msg: str, *args: Any, exc_info: Any = None) -> bool:
        return self.log(logging.WARNING, key, msg, *args, exc_info=exc_info)

    def error(self, key: Any, msg: str, *args: Any, exc_info: Any = None) -> bool:
        return self.log(logging.ERROR, key, msg, *args, exc_info=exc_info)


class CircuitBreaker:
    """Open after a failure; retry after a jittered exponential backoff."""

    def __init__(self, base: float = 0.1, cap: float = 5.0):
        self.base = base
        self.cap = cap
        self.failures = 0
        self.retry_at = 0.0

    @property
    def is_open(self) -> bool:
        return self.failures > 0

    def ready(self) -> bool:
        return time.monotonic() >= self.retry_at

    def failed(self) -> float:
        self.failures += 1
        delay = min(self.cap, self.base * 2 ** min(self.failures - 1, 16))
        delay *= random.uniform(0.5, 1.5)
        self.retry_at = time.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0.0


class Wakeup:
    """A wake-up call for one waiting thread: ``threading.Event`` semantics (``set``, ``wait``,
    ``clear``) on a bare lock. ``Event.set`` runs a Python-level ``Condition`` under a lock on
    the caller's thread; this is one C call, which matters when a request thread wakes the
    publisher."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # held = not set

    def set(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:  # already set
            pass

    def wait(self, timeout: float) -> bool:
        """Wait until set; clears it (the one waiter consumed the call)."""
        return self._lock.acquire(timeout=timeout)

    def clear(self) -> None:
        self._lock.acquire(blocking=False)
