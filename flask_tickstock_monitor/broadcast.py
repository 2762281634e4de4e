"""Socket.IO side of the relay: invalidations to browsers, health and errors to dashboards.

Exactly once per browser with several workers: every worker hears every Redis message, so each
worker emits only to the clients connected to itself (``ignore_queue=True``), never through the
Socket.IO message queue, which would deliver it again from every other worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._util import RateLimitedLog
from .config import SocketConfig
from .constants import INVALIDATION_EVENT

if TYPE_CHECKING:
    from .state import MonitorState

log = logging.getLogger("flask_tickstock_monitor.relay")


class SocketBroadcaster:
    """Emits to the clients of this process's Flask-SocketIO server, when there is one."""

    def __init__(self, state: MonitorState, config: SocketConfig):
        self.state = state
        self.enabled = config.enabled
        self.namespace = config.namespace
        self.monitor_namespace = config.monitor_namespace
        self.relay_monitoring = config.relay_monitoring
        #: Decides whether a client may join the monitoring namespace (runs in its request context).
        self.connect_guard: Callable[[], bool] | None = None
        self.emitted = 0
        self.failed = 0
        self._guarded: set[int] = set()
        self._log = RateLimitedLog(log)

    def socketio(self) -> Any:
        if not self.enabled:
            return None
        return self.state.monitor.socketio or self.state.app.extensions.get("socketio")

    @property
    def relays_monitoring(self) -> bool:
        return self.relay_monitoring and self.socketio() is not None

    def attach(self) -> None:
        """Guard the monitoring namespace of the Socket.IO server (once per server)."""
        sio = self.socketio()
        if sio is None or id(sio) in self._guarded:
            return
        self._guarded.add(id(sio))
        sio.on_event("connect", self._on_monitor_connect, namespace=self.monitor_namespace)

    def _on_monitor_connect(self, auth: Any = None) -> bool:
        guard = self.connect_guard
        return True if guard is None else bool(guard())

    def invalidated(self, message: dict[str, Any]) -> None:
        self.emit(INVALIDATION_EVENT, message, self.namespace)
        if self.monitor_namespace != self.namespace and self.relay_monitoring:
            self.emit(INVALIDATION_EVENT, message, self.monitor_namespace)

    def emit(self, event: str, data: dict[str, Any], namespace: str) -> bool:
        sio = self.socketio()
        if sio is None:
            return False
        try:
            sio.emit(event, data, namespace=namespace, ignore_queue=True)
        except Exception as exc:
            self.failed += 1
            self._log.warning(type(exc), "Socket.IO emit of %r failed (%s)", event, exc)
            return False
        self.emitted += 1
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "attached": self.socketio() is not None,
            "namespace": self.namespace,
            "monitor_namespace": self.monitor_namespace,
            "emitted": self.emitted,
            "failed": self.failed,
        }
