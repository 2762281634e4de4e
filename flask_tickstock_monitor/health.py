"""The health plane: a heartbeat on ``tickstock:monitoring`` (see DESIGN.md, "Health").

A :class:`HealthScheduler` thread beats every interval (± jitter), soon after start, and at once
when the status changes. Checks and metric providers run in their own threads with a timeout, so
a slow or raising one is reported in the beat, never fatal. Each beat is also kept in Redis under
``<channel>:latest:<instance id>`` for a few intervals so a dashboard that starts late sees it.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import events
from ._util import thread_report
from .builtin_metrics import active_websockets, cache_hit_rate
from .config import HealthConfig
from .constants import latest_key
from .state import Plane
from .transport import Outgoing

if TYPE_CHECKING:
    from .state import MonitorState

log = logging.getLogger("flask_tickstock_monitor.health")

STATUS_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}
#: the 0–100 score TickStockAppV2's admin dashboard draws for a component
STATUS_SCORE = {"healthy": 100, "degraded": 50, "unhealthy": 0}
MIB = 1024 * 1024


def worst(statuses: list[str]) -> str:
    return max(statuses, key=STATUS_RANK.__getitem__, default="healthy")


class HealthRegistry:
    """The checks and metric providers registered with ``@monitor.health_check/health_metric``."""

    def __init__(self) -> None:
        self.checks: dict[str, Callable[[], Any]] = {}
        self.metrics: dict[str, Callable[[], Any]] = {}
        #: checks whose "unhealthy" makes the readiness probe refuse traffic
        self.critical: set[str] = set()


class _Call:
    """One run of a check or provider in its own thread, so a hung one cannot stall the beat."""

    def __init__(self, name: str, func: Callable[[], Any]):
        self.started = time.monotonic()
        self.done = threading.Event()
        self.value: Any = None
        self.error: str | None = None
        self._func = func
        threading.Thread(target=self._run, name=f"tickstock-health-{name}", daemon=True).start()

    def _run(self) -> None:
        try:
            self.value = self._func()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()


class TimedCalls:
    """Runs named callables concurrently with one deadline.

    A call still running from an earlier beat is not started again: it is reported as timed out
    until it returns, so a check that hangs for ever costs one thread, not one per beat.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, _Call] = {}

    def run(self, funcs: Mapping[str, Callable[[], Any]], timeout: float) -> dict[str, _Call]:
        calls: dict[str, _Call] = {}
        with self._lock:
            for name, func in funcs.items():
                call = self._running.get(name)
                if call is None or call.done.is_set():
                    call = self._running[name] = _Call(name, func)
                calls[name] = call
        deadline = time.monotonic() + timeout
        for call in calls.values():
            call.done.wait(max(0.0, deadline - time.monotonic()))
        return calls

    def reset(self) -> None:
        with self._lock:
            self._running.clear()


class HealthPlane(Plane):
    """Collects checks and metrics and publishes the heartbeat of one app."""

    stop_in_forking_parent = True  # a pre-fork master must not heartbeat for its workers

    def __init__(self, state: MonitorState, config: HealthConfig, registry: HealthRegistry):
        self.state = state
        self.config = config
        self.registry = registry
        self.interval: float = config.interval
        self.enabled: bool = config.enabled
        self.check_timeout: float = config.check_timeout
        self.poll: float = config.poll
        self.jitter: float = config.jitter
        self.latest_ttl: float = config.latest_ttl
        self.endpoint: str | None = config.endpoint
        self.beats = 0
        self.latest: dict[str, Any] | None = None
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._calls = TimedCalls()
        self._process: Any = None
        self._last_status: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.loop_at = time.monotonic()

    # the scheduler ----------------------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="tickstock-monitor-health", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        self._thread = None

    def after_fork_in_child(self) -> None:
        # a new boot (the state gave the child a new identity): its own sequence and threads
        self._thread = None
        self._seq = 0
        self.beats = 0
        self.latest = None
        self._last_status = None
        self._process = None
        self._calls = TimedCalls()
        self.start()

    def _jittered(self) -> float:
        return self.interval * random.uniform(1 - self.jitter, 1 + self.jitter)

    def _run(self) -> None:
        now = time.monotonic()
        next_beat = now + min(0.5, self.interval) * random.uniform(0.5, 1.0)
        next_poll = now + self.poll
        while not self._stop.is_set():
            self.loop_at = time.monotonic()
            self._wake.wait(max(0.0, min(next_beat, next_poll) - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                return
            now = time.monotonic()
            try:
                if now >= next_beat:
                    self.beat()
                elif now >= next_poll:
                    status, components = self.run_checks()
                    if status != self._last_status:
                        log.info("health status changed to %s: publishing at once", status)
                        self.beat((status, components))
                    else:
                        next_poll = now + self.poll
                        continue
            except Exception:  # the scheduler must outlive any bug in a beat
                log.exception("health beat failed")
            next_beat = now + self._jittered()
            next_poll = now + self.poll

    # one beat ---------------------------------------------------------------------------------

    def beat(self, checked: tuple[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """Collect a snapshot now and queue it for publishing; return it."""
        snapshot = self.collect(checked)
        self.latest = snapshot
        self._last_status = snapshot["status"]
        self.beats += 1
        config = self.state.config
        self.state.submit(
            Outgoing(
                config.channel_monitoring,
                build=lambda: snapshot,
                kind="health",
                store_key=latest_key(config.channel_monitoring, self.state.instance_id),
                ttl=self.latest_ttl,
                urgent=True,  # rare, and a status change must show at once
            )
        )
        return snapshot

    def collect(self, checked: tuple[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        status, components = checked or self.run_checks()
        metrics, metric_errors = self.collect_metrics()
        state = self.state
        uptime = round(state.uptime, 3)
        with self._seq_lock:
            self._seq += 1
            seq = self._seq
        snapshot: dict[str, Any] = {
            "type": "health_check",
            "component": state.config.component,
            "source": state.config.source,
            "status": status,
            "timestamp": time.time(),
            "metrics": metrics,
            "instance": {
                "id": state.instance_id,
                "host": state.host,
                "pid": state.pid,
                "boot_id": state.boot_id,
                "uptime_s": uptime,
            },
            "seq": seq,
            "interval_s": self.interval,
            "environment": state.config.environment,
            "event_type": "HEALTH_CHECK",
            "health": {
                "overall_score": _score(components),
                "status": status,
                "components": components,
                "uptime_seconds": uptime,
            },
        }
        if state.config.release is not None:
            snapshot["release"] = state.config.release
        if metric_errors:
            snapshot["metric_errors"] = metric_errors
        return snapshot

    def run_checks(self) -> tuple[str, dict[str, Any]]:
        funcs: dict[str, Callable[[], Any]] = {"redis": self._check_redis}
        funcs.update({name: self._in_app(f) for name, f in self.registry.checks.items()})
        calls = self._calls.run(funcs, self.check_timeout)
        components = {name: _component(call, self.check_timeout) for name, call in calls.items()}
        return worst([c["state"] for c in components.values()]), components

    def _check_redis(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.state.client().ping()
        return {"status": "healthy", "latency_ms": round((time.perf_counter() - started) * 1000, 3)}

    def collect_metrics(self) -> tuple[dict[str, Any], dict[str, str]]:
        metrics: dict[str, Any] = {}
        errors: dict[str, str] = {}
        builtin: dict[str, Callable[[], Any]] = {
            "memory_usage_mb": self._memory_mb,
            "active_websockets": lambda: active_websockets(self._socketio()),
            "cache_hit_rate": lambda: cache_hit_rate(getattr(self.state, "caches", {})),
        }
        for name, func in builtin.items():
            if name in self.registry.metrics:
                continue
            try:
                value = func()
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            if value is not None:
                metrics[name] = value
        calls = self._calls.run(
            {f"metric:{n}": self._in_app(f) for n, f in self.registry.metrics.items()},
            self.check_timeout,
        )
        for key, call in calls.items():
            name = key.removeprefix("metric:")
            if not call.done.is_set():
                errors[name] = f"timed out after {self.check_timeout:g}s"
            elif call.error is not None:
                errors[name] = call.error
            elif call.value is None:
                continue
            elif isinstance(call.value, (int, float)) and not isinstance(call.value, bool):
                metrics[name] = call.value
            else:
                errors[name] = f"returned {type(call.value).__name__}, not a number"
        return metrics, errors

    def _in_app(self, func: Callable[[], Any]) -> Callable[[], Any]:
        """Checks run on their own threads, in an app context like a view (database, config)."""
        app = self.state.app

        def call() -> Any:
            with app.app_context():
                return func()

        return call

    def _memory_mb(self) -> float:
        import psutil

        if self._process is None or self._process.pid != os.getpid():
            self._process = psutil.Process()
        return round(self._process.memory_info().rss / MIB, 1)

    def _socketio(self) -> Any:
        return self.state.monitor.socketio or self.state.app.extensions.get("socketio")

    def liveness(self, stall_after: float) -> dict[str, Any]:
        # a round waits up to a poll, and runs checks up to their timeout
        wait = stall_after + self.poll + 2 * self.check_timeout
        return thread_report(self._thread, self.loop_at, wait)

    def stats(self) -> dict[str, Any]:
        return {
            "running": self._thread is not None and self._thread.is_alive(),
            "beats": self.beats,
            "seq": self._seq,
            "status": self._last_status,
            "interval_s": self.interval,
        }


def _component(call: _Call, timeout: float) -> dict[str, Any]:
    if not call.done.is_set():
        running = time.monotonic() - call.started
        return _shaped("degraded", {}, f"timed out after {timeout:g}s (running for {running:.1f}s)")
    if call.error is not None:
        return _shaped("unhealthy", {}, call.error)
    value = call.value
    extra: dict[str, Any] = {}
    if isinstance(value, Mapping):
        extra = {k: v for k, v in value.items() if k not in ("status", "state", "score")}
        value = value.get("status")
    if value not in STATUS_RANK:
        return _shaped("unhealthy", {}, f"invalid check result {value!r}")
    return _shaped(value, extra)


def _shaped(state: str, extra: dict[str, Any], details: Any = None) -> dict[str, Any]:
    """A component of the ``health`` block: our lowercase status in ``state``, and what
    TickStockAppV2's monitoring subscriber reads (``status`` "OK" when healthy, else it warns
    with ``details``; see events.COMPONENT_STATUS)."""
    if details is None:
        details = extra.get("details")
    if details is None:
        shown = ", ".join(f"{key}={value}" for key, value in extra.items())
        details = f"{state} ({shown})" if shown else state
    return {
        **extra,
        "status": events.COMPONENT_STATUS[state],
        "state": state,
        "score": STATUS_SCORE[state],
        "details": details,
    }


def _score(components: Mapping[str, Mapping[str, Any]]) -> int:
    if not components:
        return 100
    return round(sum(c["score"] for c in components.values()) / len(components))
