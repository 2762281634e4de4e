"""The Flask extension: ``TickStockMonitor(app)`` or ``TickStockMonitor()`` + ``init_app(app)``."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Flask
from flask.globals import _cv_app

from . import signals, topology
from .capture import ErrorCapture
from .config import ConfigReader, MonitorConfig, load_config
from .events import Scrubber
from .transport import Outgoing, Published, Publisher, connect

log = logging.getLogger("flask_tickstock_monitor")

EXTENSION_KEY = "tickstock_monitor"

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

    def __init__(
        self,
        monitor: TickStockMonitor,
        app: Flask,
        config: MonitorConfig,
        reader: ConfigReader,
        redis_client: Any = None,
    ):
        self.monitor = monitor
        self.app = app
        self.config = config
        self.reader = reader
        self.active = config.enabled
        self._client: Any = redis_client
        self._owns_client = redis_client is None  # a client the app passed in stays open
        self._client_lock = threading.Lock()
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
        self.capture = ErrorCapture(self)
        self.planes: dict[str, Plane] = {}
        #: name -> a cache given to ``register_cache`` (the relay invalidates, health reads hits)
        self.caches: dict[str, object] = {}
        self.started = False
        _LIVE_STATES.add(self)

    def _new_identity(self) -> None:
        self.boot_id = uuid.uuid4().hex
        self.started_at = time.time()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        configured = self.app.config.get("TICKSTOCK_MONITOR_INSTANCE_ID")
        self.instance_id = str(configured) if configured else f"{self.host}:{self.pid}"

    @property
    def uptime(self) -> float:
        return time.time() - self.started_at

    def client(self) -> Any:
        """The Redis client of this app, made on first use (in this process)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = connect(
                        self.config.redis_url, socket_timeout=self.config.socket_timeout
                    )
        return self._client

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
        for plane in self.planes.values():
            plane.stop()
        self.capture.detach()
        flushed = self.publisher.close(timeout)
        self.active = False
        self.started = False
        client = self._client
        if self._owns_client and client is not None:
            # Release its sockets now rather than when the collector gets to the pool.
            self._client = None
            try:
                topology.close(client)
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


def _after_fork_in_child() -> None:
    for state in list(_LIVE_STATES):
        state._after_fork_in_child()


def _after_fork_in_parent() -> None:
    for state in list(_LIVE_STATES):
        state._after_fork_in_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child, after_in_parent=_after_fork_in_parent)


def _relay_plane(state: MonitorState) -> Plane:
    from .relay import RelayPlane  # the relay builds on this module

    return RelayPlane(state)


def _install_dashboard(state: MonitorState) -> None:
    from .dashboard import install  # the dashboard builds on this module

    install(state)


MetricProvider = Callable[[], Any]
HealthCheck = Callable[[], Any]


def _register(registry: dict[str, Any], name: str) -> Callable[[Any], Any]:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a health check or metric needs a non-empty name, got {name!r}")

    def decorator(func: Any) -> Any:
        registry[name] = func
        return func

    return decorator


def _health_plane(state: MonitorState, registry: Any) -> Plane:
    from .health import HealthPlane  # health builds on this module

    return HealthPlane(state, registry)


def _loaded_by_our_cli() -> bool:
    """``flask tickstock …`` loads the app to read its config: that process must not heartbeat
    or listen, or every diagnostic would show up as a short-lived instance."""
    import click

    from .cli import tickstock

    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.command is tickstock:
            return True
        ctx = ctx.parent
    return False


class TickStockMonitor:
    """Publishes an app's errors and health to Redis and relays cache invalidations.

    :param app: the app to register with now; or call :meth:`init_app` later.
    :param redis_client: an existing ``redis.Redis`` to use instead of one made from the URL.
    :param socketio: a ``flask_socketio.SocketIO``; by default the one in ``app.extensions``.
    :param autostart: start the heartbeat and the relay listener in ``init_app`` (else call
        :meth:`start`); the publisher always starts with the first event.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        redis_client: Any = None,
        socketio: Any = None,
        autostart: bool = True,
    ):
        self.redis_client = redis_client
        self.socketio = socketio
        self.autostart = autostart
        self.dashboard_auth_check: Callable[[], bool] | None = None
        from .health import HealthRegistry

        self.health = HealthRegistry()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, redis_client: Any = None) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'TickStockMonitor' instance has already been registered on this Flask app."
                " Import and use that instance instead."
            )
        reader = ConfigReader(app.config)
        config = load_config(app.config, app.import_name)
        state = MonitorState(self, app, config, reader, redis_client or self.redis_client)
        app.extensions[EXTENSION_KEY] = state
        try:
            # Every plane reads (and validates) its config before any hook is attached, so a
            # bad value leaves nothing behind.
            state.planes["relay"] = _relay_plane(state)  # even disabled: caches still register
            if not config.enabled:
                return
            if reader.raw("DATABASE_URI") is not None:
                from .errorlog import init_errorlog  # imports SQLAlchemy: only when configured

                if (errorlog := init_errorlog(state)) is not None:
                    state.planes["errorlog"] = errorlog
            state.planes["health"] = _health_plane(state, self.health)
            _install_dashboard(state)
        except BaseException:
            del app.extensions[EXTENSION_KEY]
            raise
        state.capture.attach_to_app(app)
        state.capture.attach_logging()
        if self.autostart and not _loaded_by_our_cli():
            state.start()

    # state lookup -----------------------------------------------------------------------------

    def state(self, app: Flask | None = None) -> MonitorState:
        """The per-app state of ``app`` (default: the current app)."""
        if app is None:
            ctx = _cv_app.get(None)  # what current_app looks up, without its proxy's calls
            if ctx is None:
                raise RuntimeError(
                    "Working outside of application context: pass app= or push a context."
                )
            app = ctx.app
        try:
            state = app.extensions[EXTENSION_KEY]
        except KeyError:
            raise RuntimeError(
                "The TickStockMonitor is not registered on this app. Did you forget to call"
                " 'init_app'?"
            ) from None
        if state.monitor is not self:
            raise RuntimeError("This app is registered with another TickStockMonitor instance.")
        return state  # type: ignore[no-any-return]

    # errors -----------------------------------------------------------------------------------

    def capture_exception(
        self,
        exc: BaseException | None = None,
        *,
        severity: str = "error",
        context: Mapping[str, Any] | None = None,
        component: str | None = None,
        app: Flask | None = None,
    ) -> str | None:
        """Publish ``exc`` (default: the one being handled). Returns the event's ``error_id``."""
        if exc is None:
            exc = sys.exc_info()[1]
            if exc is None:
                raise ValueError("capture_exception() needs an exception or an active 'except'")
        return self.state(app).capture.capture(None, exc, severity, component, context)

    def publish_error(
        self,
        message: str,
        *,
        severity: str = "error",
        component: str | None = None,
        context: Mapping[str, Any] | None = None,
        category: str | None = None,
        app: Flask | None = None,
    ) -> str | None:
        """Publish an error event with ``message``; its ``error_id`` (``None`` if dropped)."""
        return self.state(app).capture.capture(
            message, None, severity, component, context, None, category
        )

    def track_signal(
        self,
        signal: Any,
        *,
        severity: str = "error",
        message: str | None = None,
        component: str | None = None,
        app: Flask | None = None,
    ) -> Callable[..., None]:
        """Publish an error event each time ``signal`` is sent, its kwargs as ``context``."""
        return self.state(app).capture.track_signal(
            signal, severity=severity, message=message, component=component
        )

    # caches -----------------------------------------------------------------------------------

    def register_cache(self, name: str, cache: Any, *, app: Flask | None = None) -> None:
        """Let invalidations named ``name`` (or ``"*"``) reach ``cache``.

        ``cache``: a dict or ``MutableMapping``, a Flask-Caching ``Cache``, an object with
        ``invalidate(cache_type=None, key=None)``, ``reset_cache()`` or ``clear()``, or a
        callable that takes the message.
        """
        self.state(app).planes["relay"].register(name, cache)  # type: ignore[attr-defined]

    def invalidate(
        self,
        name: str,
        keys: Iterable[str] | str | None = None,
        scope: str | None = None,
        *,
        app: Flask | None = None,
    ) -> str:
        """Invalidate ``keys`` (all keys when ``None``) of cache ``name`` here and in every
        process listening on the invalidation channel. Returns the ``invalidation_id``."""
        relay = self.state(app).planes["relay"]
        return relay.invalidate(name, keys, scope)  # type: ignore[attr-defined,no-any-return]

    def dashboard_auth(self, func: Callable[[], bool]) -> Callable[[], bool]:
        """Decorate the check that guards the dashboard and its Socket.IO namespace.

        It runs in the request context; a false result refuses (403, or a refused connect).
        ``TICKSTOCK_MONITOR_DASHBOARD_AUTH`` takes precedence in an app that sets it.
        """
        self.dashboard_auth_check = func
        return func

    # health -----------------------------------------------------------------------------------

    def health_metric(self, name: str) -> Callable[[MetricProvider], MetricProvider]:
        """Register a metric provider: it returns a number, or ``None`` to leave it out."""
        return _register(self.health.metrics, name)

    def health_check(self, name: str) -> Callable[[HealthCheck], HealthCheck]:
        """Register a check returning ``"healthy"``, ``"degraded"`` or ``"unhealthy"``.

        It may also return a dict with ``status`` and details. Raising means unhealthy; one that
        outlives ``TICKSTOCK_MONITOR_HEALTH_CHECK_TIMEOUT`` is degraded.
        """
        return _register(self.health.checks, name)

    def publish_health(self, *, app: Flask | None = None) -> dict[str, Any] | None:
        """Run the checks now and publish a heartbeat at once; return it (``None`` if disabled).

        Runs on the calling thread, for at most the check timeout.
        """
        plane = self.state(app).planes.get("health")
        return plane.beat() if plane is not None else None  # type: ignore[attr-defined]

    def health_snapshot(self, *, app: Flask | None = None) -> dict[str, Any] | None:
        """The last heartbeat this process published (``None`` before the first)."""
        plane = self.state(app).planes.get("health")
        return plane.latest if plane is not None else None  # type: ignore[attr-defined]

    # operations -------------------------------------------------------------------------------

    def start(self, app: Flask | None = None) -> None:
        """Start background work now (``autostart=False`` leaves it to the first use)."""
        self.state(app).start()

    def stats(self, app: Flask | None = None) -> dict[str, Any]:
        return self.state(app).stats()

    def flush(self, timeout: float = 2.0, *, app: Flask | None = None) -> bool:
        """Wait until every queued event was published (or stored) or dropped; ``False`` on
        timeout. Covers the publisher and every plane that queues (the durable error log)."""
        state = self.state(app)
        deadline = time.monotonic() + timeout
        flushed = state.publisher.flush(timeout)
        for plane in state.planes.values():
            plane_flush = getattr(plane, "flush", None)
            if plane_flush is not None:
                flushed = plane_flush(max(0.0, deadline - time.monotonic())) and flushed
        return bool(flushed)

    def shutdown(self, timeout: float = 2.0, *, app: Flask | None = None) -> bool:
        """Flush within ``timeout``, stop every thread and detach the hooks."""
        return self.state(app).stop(timeout)
