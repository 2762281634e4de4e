"""The Flask extension: ``TickStockMonitor(app)`` or ``TickStockMonitor()`` + ``init_app(app)``.

It sits on top: ``init_app`` reads the whole configuration, makes the per-app state and the
planes on it (errors, health, relay, and the optional error log and dashboard), wires them to
each other, and only then touches the app.
"""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import click
from flask import Flask

from . import probes
from ._compat import cv_app
from .capture import ErrorCapture
from .cli import tickstock
from .config import load_config
from .constants import EXTENSION_KEY
from .dashboard import DashboardPlane
from .exporter import MetricsPlane
from .fingerprint import fingerprint_parts
from .finish import BeforeSend
from .health import HealthPlane, HealthRegistry
from .relay import RelayPlane
from .state import MonitorState, registered_state

MetricProvider = Callable[[], Any]
HealthCheck = Callable[[], Any]


def _register(registry: dict[str, Any], name: str) -> Callable[[Any], Any]:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a health check or metric needs a non-empty name, got {name!r}")

    def decorator(func: Any) -> Any:
        registry[name] = func
        return func

    return decorator


def _loaded_by_our_cli() -> bool:
    """``flask tickstock …`` loads the app to read its config: that process must not heartbeat
    or listen, or every diagnostic would show up as a short-lived instance."""
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.command is tickstock:
            return True
        ctx = ctx.parent
    return False


def _make_state(monitor: TickStockMonitor, app: Flask, redis_client: Any) -> MonitorState:
    """The state of ``app`` with its planes, wired to each other; nothing is attached to the app
    yet. Every key was read and checked before (a bad value raises here and leaves nothing)."""
    config = load_config(app.config, app.import_name)
    state = MonitorState(monitor, app, config, redis_client)
    state.capture = ErrorCapture(state)
    assert config.relay is not None and config.socketio is not None
    state.relay = RelayPlane(state, config.relay, config.socketio)  # even off: caches register
    if not config.enabled:
        return state
    if config.errorlog is not None:
        from .errorlog import ErrorLog  # imports SQLAlchemy: only when a database is configured

        state.errorlog = ErrorLog(state, config.errorlog)
        state.capture.sinks.append(state.errorlog.accept)
    assert config.health is not None
    state.health = HealthPlane(state, config.health, monitor.health)
    if config.dashboard is not None:
        state.dashboard = DashboardPlane(state, config.dashboard)
        state.relay.broadcaster.connect_guard = state.dashboard.authorized
    assert config.metrics is not None
    state.metrics = MetricsPlane(state, config.metrics)
    return state


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
        self.before_send_hook: BeforeSend | None = None
        self.health = HealthRegistry()
        #: the apps this monitor serves (one, outside any app context, is the one meant)
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, redis_client: Any = None) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'TickStockMonitor' instance has already been registered on this Flask app."
                " Import and use that instance instead."
            )
        state = _make_state(self, app, redis_client or self.redis_client)
        if state.health is not None:
            probes.install(app, state, state.health)
        if state.dashboard is not None:
            state.dashboard.install(app)
        if state.metrics is not None and state.metrics.endpoint:
            state.metrics.install(app)
        app.extensions[EXTENSION_KEY] = state
        self._apps.add(app)
        if not state.config.enabled:
            return
        state.capture.attach_to_app(app)
        state.capture.attach_logging()
        if self.autostart and not _loaded_by_our_cli():
            state.start()

    # state lookup -----------------------------------------------------------------------------

    def state(self, app: Flask | None = None) -> MonitorState:
        """The per-app state of ``app``: by default the current app, or, outside any app
        context (a background thread or greenlet), the one app this monitor serves."""
        if app is None:
            ctx = cv_app.get(None)  # what current_app looks up, without its proxy's calls
            app = ctx.app if ctx is not None else self._only_app()
        try:
            state = app.extensions[EXTENSION_KEY]
        except KeyError:
            state = registered_state(app)  # raises, saying what is missing
        if state.monitor is not self:
            raise RuntimeError("This app is registered with another TickStockMonitor instance.")
        return state  # type: ignore[no-any-return]

    def _only_app(self) -> Flask:
        apps = list(self._apps)
        if len(apps) == 1:
            return apps[0]
        raise RuntimeError(
            "Working outside of application context: pass app= or push a context"
            + (f" (this monitor serves {len(apps)} apps)." if apps else ".")
        )

    # errors -----------------------------------------------------------------------------------

    def capture_exception(
        self,
        exc: BaseException | None = None,
        *,
        severity: str = "error",
        context: Mapping[str, Any] | None = None,
        component: str | None = None,
        category: str | None = None,
        fingerprint: Sequence[str] | None = None,
        app: Flask | None = None,
    ) -> str | None:
        """Publish ``exc`` (default: the one being handled). Returns the event's ``error_id``.

        ``fingerprint``: the parts of this event's group key instead of the default one (the
        exception type and the app's frames); ``"{{ default }}"`` stands for that default.
        """
        if exc is None:
            exc = sys.exc_info()[1]
            if exc is None:
                raise ValueError("capture_exception() needs an exception or an active 'except'")
        capture = self.state(app).capture
        if fingerprint is None and category is None:
            return capture.capture(None, exc, severity, component, context)
        parts = None if fingerprint is None else fingerprint_parts(fingerprint)
        return capture.capture(
            None, exc, severity, component, context, None, category, "explicit", None, True,
            None, parts,
        )  # fmt: skip

    def publish_error(
        self,
        message: str,
        *,
        severity: str = "error",
        component: str | None = None,
        context: Mapping[str, Any] | None = None,
        category: str | None = None,
        fingerprint: Sequence[str] | None = None,
        app: Flask | None = None,
    ) -> str | None:
        """Publish an error event with ``message``; its ``error_id`` (``None`` if dropped)."""
        capture = self.state(app).capture
        if fingerprint is None:
            return capture.capture(message, None, severity, component, context, None, category)
        return capture.capture(
            message, None, severity, component, context, None, category, "explicit", None,
            True, None, fingerprint_parts(fingerprint),
        )  # fmt: skip

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
        self.state(app).relay.register(name, cache)

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
        return self.state(app).relay.invalidate(name, keys, scope)

    def before_send(self, func: BeforeSend) -> BeforeSend:
        """Decorate ``func(event) -> event | None``: it sees every error event before it is
        sent, on the thread that builds it (never the request's), and may edit or drop it.
        ``TICKSTOCK_MONITOR_BEFORE_SEND`` takes precedence in an app that sets it."""
        self.before_send_hook = func
        return func

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

    def health_check(
        self, name: str, *, critical: bool = False
    ) -> Callable[[HealthCheck], HealthCheck]:
        """Register a check returning ``"healthy"``, ``"degraded"`` or ``"unhealthy"``.

        It may also return a dict with ``status`` and details. Raising means unhealthy; one that
        outlives ``TICKSTOCK_MONITOR_HEALTH_CHECK_TIMEOUT`` is degraded. ``critical``: while it
        is unhealthy, the readiness probe refuses traffic (``TICKSTOCK_MONITOR_READINESS_CHECKS``
        names more, the built-in ``redis`` among them).
        """
        if critical:
            self.health.critical.add(name)
        else:
            self.health.critical.discard(name)
        return _register(self.health.checks, name)

    def publish_health(self, *, app: Flask | None = None) -> dict[str, Any] | None:
        """Run the checks now and publish a heartbeat at once; return it (``None`` if disabled).

        Runs on the calling thread, for at most the check timeout.
        """
        plane = self.state(app).health
        return plane.beat() if plane is not None else None

    def health_snapshot(self, *, app: Flask | None = None) -> dict[str, Any] | None:
        """The last heartbeat this process published (``None`` before the first)."""
        plane = self.state(app).health
        return plane.latest if plane is not None else None

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
        if state.errorlog is not None:
            flushed = state.errorlog.flush(max(0.0, deadline - time.monotonic())) and flushed
        return flushed

    def shutdown(self, timeout: float = 2.0, *, app: Flask | None = None) -> bool:
        """Flush within ``timeout``, stop every thread and detach the hooks."""
        return self.state(app).stop(timeout)
