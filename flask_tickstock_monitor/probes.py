"""HTTP probes for an orchestrator (Kubernetes, a load balancer), each off until its key names a
URL rule:

- ``HEALTH_ENDPOINT``: the latest heartbeat; 503 while unhealthy. Not for liveness: Redis being
  down makes a beat unhealthy, and a liveness probe would then restart every pod.
- ``LIVENESS_ENDPOINT``: this process only: the monitor's own threads alive and going round
  their loops. Never Redis, never a check.
- ``READINESS_ENDPOINT``: the checks; 503 when a check that is critical for readiness
  (``@monitor.health_check(name, critical=True)`` or ``READINESS_CHECKS``; Redis is not, by
  default) is unhealthy, and from the moment shutdown began (``monitor.shutdown()``, or
  SIGTERM with ``DRAIN_ON_SIGTERM``), so a rolling deploy drains the pod.

Host, pid, metrics and check details are in the bodies only for callers the dashboard's auth
check admits; others get the statuses.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask, jsonify

from .events import component_state

if TYPE_CHECKING:
    from flask import Response

    from .health import HealthPlane
    from .state import MonitorState

log = logging.getLogger("flask_tickstock_monitor.probes")


def install(app: Flask, state: MonitorState, health: HealthPlane) -> None:
    """Add the configured probes to ``app``."""
    config = health.config
    probes: list[tuple[str | None, str, Callable[..., Any]]] = [
        (config.endpoint, "health", latest_beat),
        (config.liveness_endpoint, "liveness", liveness),
        (config.readiness_endpoint, "readiness", readiness),
    ]
    for rule, name, probe in probes:
        if rule is not None:
            view = functools.partial(probe, state, health)
            app.add_url_rule(rule, endpoint=f"tickstock_monitor_{name}", view_func=view)
    if config.readiness_endpoint and config.drain_on_sigterm:
        drain_on_sigterm(state)


def admitted(state: MonitorState) -> bool:
    """The caller passes the dashboard's auth check; with no check configured, no one does."""
    check = state.auth_check()
    try:
        return check is not None and bool(check())
    except Exception:  # a failing auth check admits no one
        log.debug("the auth check raised", exc_info=True)
        return False


def _respond(body: dict[str, Any], ok: bool) -> tuple[Response, int]:
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response, 200 if ok else 503


def latest_beat(state: MonitorState, health: HealthPlane) -> tuple[Response, int]:
    snapshot = health.latest or health.beat()
    ok = snapshot["status"] != "unhealthy"
    if admitted(state):
        return _respond(snapshot, ok)
    public: dict[str, Any] = {
        key: snapshot[key]
        for key in ("type", "component", "status", "timestamp", "event_type")
        if key in snapshot
    }
    public["health"] = {
        "status": snapshot["status"],
        "components": _statuses(snapshot["health"]["components"]),
    }
    return _respond(public, ok)


def liveness(state: MonitorState, health: HealthPlane) -> tuple[Response, int]:
    stall = health.config.liveness_stall
    threads: dict[str, dict[str, Any]] = {"publisher": state.publisher.liveness(stall)}
    if state.started:  # before start (autostart off), no plane is expected to run
        threads["health_scheduler"] = health.liveness(stall)
        threads.update(state.relay.liveness(stall))
        if state.errorlog is not None:
            threads["errorlog_writer"] = state.errorlog.liveness(stall)
    ok = all(report["ok"] for report in threads.values())
    body: dict[str, Any] = {"status": "alive" if ok else "wedged"}
    if admitted(state):
        body.update(threads=threads, instance=_instance(state))
    else:
        body["threads"] = {name: report["ok"] for name, report in threads.items()}
    return _respond(body, ok)


def readiness(state: MonitorState, health: HealthPlane) -> tuple[Response, int]:
    if state.shutting_down:
        return _respond({"status": "shutting_down"}, False)
    latest = health.latest
    if latest is not None and time.time() - latest["timestamp"] <= health.poll:
        components = latest["health"]["components"]
    else:
        components = health.run_checks()[1]
    critical = health.registry.critical | set(health.config.readiness_checks)
    failed = sorted(n for n in critical if component_state(components.get(n)) == "unhealthy")
    body: dict[str, Any] = {"status": "not_ready" if failed else "ready"}
    if failed:
        body["failed"] = failed
    body["checks"] = {
        name: {"status": component_state(c), "critical": name in critical}
        for name, c in components.items()
    }
    if admitted(state):
        body["components"] = components
        body["instance"] = _instance(state)
    return _respond(body, not failed)


def _statuses(components: dict[str, Any]) -> dict[str, Any]:
    return {name: {"status": component_state(c)} for name, c in components.items()}


def _instance(state: MonitorState) -> dict[str, Any]:
    return {"id": state.instance_id, "host": state.host, "pid": state.pid}


def drain_on_sigterm(state: MonitorState) -> None:
    """On SIGTERM, answer readiness with 503 first, then do what SIGTERM did before (call the
    handler that was there: gunicorn's worker exits gracefully; with the default, the process
    ends as it would have). Only from the main thread, where signal handlers are set."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        state.shutting_down = True
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
