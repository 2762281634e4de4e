"""What the monitor keeps for one app in one process, and the base of its planes.

This module sits under the planes: it knows the transport (the publisher every plane submits
to, the app's Redis client) and the configuration, and names the planes only for typing. The
extension makes the planes and sets them here in ``init_app``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask

from . import signals
from .config import MonitorConfig
from .constants import EXTENSION_KEY
from .scrub import Scrubber
from .transport import Outgoing, Published, Publisher, clients

if TYPE_CHECKING:
    from .capture import ErrorCapture
    from .dashboard import DashboardPlane
    from .errorlog import ErrorLog
    from .exporter import MetricsPlane
    from .extension import TickStockMonitor
    from .health import HealthPlane
    from .relay import RelayPlane

log = logging.getLogger("flask_tickstock_monitor")

_LIVE_STATES: weakref.WeakSet[MonitorState] = weakref.WeakSet()


class Plane:
    """A part of the monitor with background work (health scheduler, relay listener, …)."""

    #: Stop in a process that forks workers (a pre-fork server's master must not heartbeat).
    stop_in_forking_parent = False

    def start(self) -> None:  # pragma: no cover - interface
        pass

    def stop(self) -> None:  # pragma: no cover - interface
        pass

    def after_fork_in_child(self) -> None:
        """Threads do not survive a fork: start again in the child if we were running."""
        self.start()

    def stats(self) -> dict[str, Any]:
        return {}


class MonitorState:
    """Everything the monitor keeps for one app in one process (``app.extensions``)."""

    #: The planes, set by the extension in ``init_app`` (``None``: that part is off).
    capture: ErrorCapture
    relay: RelayPlane
    errorlog: ErrorLog | None = None
    health: HealthPlane | None = None
    dashboard: DashboardPlane | None = None
    metrics: MetricsPlane | None = None

    def __init__(
        self,
        monitor: TickStockMonitor,
        app: Flask,
        config: MonitorConfig,
        redis_client: Any = None,
    ):
        self.monitor = monitor
        self.app = app
        self.config = config
        self.active = config.enabled
        self._client: Any = redis_client
        self._owns_client = redis_client is None  # a client the app passed in stays open
        self._client_lock = threading.Lock()
        self._client_closed = False  # stop() closed it: no new one (nobody would close it)
        self._new_identity()
        self.scrubber = Scrubber(
            config.scrub_keys,
            config.scrub_headers,
            max_depth=config.max_context_depth,
            max_items=config.max_context_items,
            max_bytes=config.max_context_bytes,
        )
        self.publisher = Publisher(
            self.client,
            queue_size=config.queue_size,
            batch_size=config.batch_size,
            exit_flush_timeout=config.exit_flush_timeout,
            linger=config.publish_linger,
            on_published=self._on_published,
            heard=self._heard,
            on_dropped=self._on_dropped,
        )
        #: name -> a cache given to ``register_cache`` (the relay invalidates, health reads hits)
        self.caches: dict[str, object] = {}
        self.started = False
        #: shutdown began: the readiness probe refuses traffic from now on
        self.shutting_down = False
        _LIVE_STATES.add(self)

    @property
    def planes(self) -> dict[str, Plane]:
        """The planes with background work, by name, in the order they start."""
        named = {
            "relay": getattr(self, "relay", None),
            "errorlog": self.errorlog,
            "health": self.health,
            "dashboard": self.dashboard,
            "metrics": self.metrics,
        }
        return {name: plane for name, plane in named.items() if plane is not None}

    def _new_identity(self) -> None:
        self.boot_id = uuid.uuid4().hex
        self.started_at = time.time()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.instance_id = self.config.instance_id or f"{self.host}:{self.pid}"

    @property
    def uptime(self) -> float:
        return time.time() - self.started_at

    def auth_check(self) -> Callable[[], bool] | None:
        """The app's check of who may see the dashboard, the probes' details and the metrics:
        ``TICKSTOCK_MONITOR_DASHBOARD_AUTH``, else ``@monitor.dashboard_auth``, else none."""
        return self.config.dashboard_auth or self.monitor.dashboard_auth_check

    def client(self) -> Any:
        """The Redis client of this app, made on first use (in this process).

        After :meth:`stop` there is none: a health check or a listener still running then (each
        waits at most its timeout) gets ``RuntimeError`` rather than a client nobody closes."""
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    if self._client_closed:
                        raise RuntimeError("the monitor was shut down: no Redis client")
                    self._client = clients.connect(
                        self.config.redis_url, socket_timeout=self.config.socket_timeout
                    )
                client = self._client
        return client

    def submit(self, item: Outgoing) -> bool:
        return self.active and self.publisher.submit(item)

    def _heard(self) -> bool:
        """Someone listens to what is published: the seed card's log lines or a signal."""
        return (
            log.isEnabledFor(logging.INFO)
            or bool(signals.error_published.receivers)
            or bool(signals.health_published.receivers)
        )

    def _on_published(self, published: list[Published]) -> None:
        """After each batch reached Redis (and :meth:`_heard`): the seed card's log lines and
        the signals."""
        logging_info = log.isEnabledFor(logging.INFO)
        errors_heard = bool(signals.error_published.receivers)
        for kind, event in published:
            if kind == "error":
                if logging_info:
                    log.info(
                        "ERROR-TRACKING: Published error to Redis: %s",
                        event.get("error_type") or "error",
                    )
                if errors_heard:
                    signals.error_published.send(self.app, event=event)
            elif kind == "health":
                log.info("MONITORING: Health metrics published: %s", event.get("metrics"))
                if signals.health_published.receivers:
                    signals.health_published.send(self.app, event=event)

    def _on_dropped(self, reason: str, count: int) -> None:
        if signals.event_dropped.receivers:
            signals.event_dropped.send(self.app, reason=reason, count=count)

    def start(self) -> None:
        if self.started or not self.active:
            return
        self.started = True
        for plane in self.planes.values():
            plane.start()

    def stop(self, timeout: float = 2.0) -> bool:
        self.shutting_down = True
        for plane in self.planes.values():
            plane.stop()
        self.capture.detach()
        flushed = self.publisher.close(timeout)
        self.active = False
        self.started = False
        if self._owns_client:
            with self._client_lock:
                client, self._client = self._client, None
                self._client_closed = True
            if client is not None:  # its sockets now, not when the collector gets to the pool
                try:
                    clients.close(client)
                except Exception:
                    log.debug("closing the Redis client failed", exc_info=True)
        return flushed

    def stats(self) -> dict[str, Any]:
        out = self.publisher.stats()
        out["enabled"] = self.active
        out["instance_id"] = self.instance_id
        for name, plane in self.planes.items():
            out[name] = plane.stats()
        return out

    # fork handling ------------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        # the client is kept: redis-py's pools drop a parent's connections on a pid change
        self._new_identity()
        if self.started:
            for plane in self.planes.values():
                plane.after_fork_in_child()

    def _after_fork_in_parent(self) -> None:
        for plane in self.planes.values():
            if plane.stop_in_forking_parent:
                plane.stop()


def registered_state(app: Flask) -> MonitorState:
    """The state of ``app``, or ``RuntimeError`` saying that ``init_app`` was not called."""
    state = app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise RuntimeError(
            "The TickStockMonitor is not registered on this app. Did you forget to call 'init_app'?"
        )
    return state  # type: ignore[no-any-return]


def _after_fork_in_child() -> None:
    for state in list(_LIVE_STATES):
        state._after_fork_in_child()


def _after_fork_in_parent() -> None:
    for state in list(_LIVE_STATES):
        state._after_fork_in_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child, after_in_parent=_after_fork_in_parent)
