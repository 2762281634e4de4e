"""The relay plane: cache invalidations from ``tickstock:cache:invalidation`` into local caches.

The subscription thread only hands raw messages to a bounded queue; one applier thread parses,
validates and applies them, so a slow cache never stalls reading. Each applied invalidation is
also sent to browsers over Socket.IO (:mod:`.broadcast`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import events, signals
from ._util import RateLimitedLog, Slicer, mark_monitoring_thread, thread_report
from .broadcast import SocketBroadcaster
from .caches import CacheAdapter, adapt
from .config import RelayConfig, SocketConfig
from .constants import ERROR_EVENT, HEALTH_EVENT
from .state import Plane
from .transport import Outgoing, Subscription

if TYPE_CHECKING:
    from .state import MonitorState

log = logging.getLogger("flask_tickstock_monitor.relay")

_WAKE = object()
OWN_IDS_KEPT = 4_096
RECENT_KEPT = 50


class RelayPlane(Plane):
    """Listens for invalidations and applies them to the caches given to ``register_cache``."""

    # A pre-fork master has no caches serving requests; its forked workers listen for themselves.
    stop_in_forking_parent = True

    def __init__(self, state: MonitorState, config: RelayConfig, socketio: SocketConfig):
        self.state = state
        self.enabled = config.enabled
        self.queue_size = config.queue_size
        self.max_bytes = config.max_message_bytes
        self.max_keys = config.max_keys
        self.clear_on_reconnect = config.clear_on_reconnect
        self.broadcaster = SocketBroadcaster(state, socketio)
        self._adapters: dict[str, CacheAdapter] = {}
        self._lock = threading.Lock()
        self._own_ids: OrderedDict[str, None] = OrderedDict()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_KEPT)
        self._log = RateLimitedLog(log)
        self.received = 0
        self.applied = 0
        self.own_skipped = 0
        self.overflow = 0
        self.gap_clears = 0
        self.rejected: dict[str, int] = {}
        self.cache_errors: dict[str, int] = {}
        self._subscription: Subscription | None = None
        self._applier: threading.Thread | None = None
        self.loop_at = time.monotonic()
        self._queue: queue.Queue[Any] = queue.Queue(self.queue_size)
        self._gap_reason: str | None = None
        self._stopping = threading.Event()
        self._wanted = False  # started by the monitor; listening waits for something to serve

    # registration and local invalidation --------------------------------------------------------

    def register(self, name: str, cache: Any) -> None:
        if not isinstance(name, str) or not name or name == "*" or len(name) > 200:
            raise ValueError(f"a cache name must be a non-empty string, not '*', got {name!r}")
        adapter = adapt(cache, self.state.app)
        with self._lock:
            self._adapters[name] = adapter
            self.state.caches[name] = cache
        if self._wanted and not self.running:
            self.start()

    def invalidate(
        self, name: str, keys: Iterable[str] | str | None = None, scope: str | None = None
    ) -> str:
        """Apply here at once, then publish for every other process. Returns the invalidation_id."""
        if name != "*" and name not in self._adapters:
            raise KeyError(f"no cache registered as {name!r}; see register_cache()")
        if isinstance(keys, str):
            keys = [keys]
        message: dict[str, Any] = {
            "type": "cache_invalidation",
            "cache": name,
            "action": "clear" if keys is None else "invalidate",
            "timestamp": time.time(),
            "invalidation_id": events.new_id(),
            "origin": self.state.instance_id,
        }
        if keys is not None:
            message["keys"] = list(keys)
        if scope is not None:
            message["scope"] = scope
        try:
            events.validate_invalidation(message, max_keys=self.max_keys)
        except events.InvalidMessage as exc:
            raise ValueError(f"invalid invalidation: {exc}") from None
        with self._lock:  # before publishing: our own echo may come back at once
            self._own_ids[message["invalidation_id"]] = None
            while len(self._own_ids) > OWN_IDS_KEPT:
                self._own_ids.popitem(last=False)
        self._apply(message, self._targets(name), local=True)
        self.state.submit(
            Outgoing(
                self.state.config.channel_invalidation,
                payload=message,
                kind="invalidation",
                urgent=True,  # caches elsewhere are stale until it arrives
            )
        )
        return str(message["invalidation_id"])

    def _targets(self, name: str) -> list[str]:
        return list(self._adapters) if name == "*" else [name]

    # threads ------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._applier is not None and self._applier.is_alive()

    def start(self) -> None:
        if not self.enabled or self.running:
            return
        self._wanted = True
        if not self._adapters and self.broadcaster.socketio() is None:
            return  # nothing to apply or relay yet: the first register_cache starts listening
        self.broadcaster.attach()
        self._queue = queue.Queue(self.queue_size)
        self._gap_reason = None
        self._stopping = threading.Event()
        self._applier = threading.Thread(
            target=self._apply_loop,
            args=(self._queue, self._stopping),
            name="tickstock-monitor-relay",
            daemon=True,
        )
        self._applier.start()
        config = self.state.config
        channels = [config.channel_invalidation]
        if self.broadcaster.relays_monitoring:
            channels += [config.channel_monitoring, config.channel_errors]
        self._subscription = Subscription(
            self.state.client,
            channels,
            self._on_message,
            on_connect=self._on_connect,
            # Every second at most while Redis is away: caches serve stale entries until the
            # listener is back (and clears them), so it must be back soon after Redis is.
            backoff_cap=1.0,
            name="tickstock-monitor-relay-listener",
        ).start()

    def stop(self) -> None:
        self._wanted = False
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.stop(timeout=1.0)
        applier, self._applier = self._applier, None
        if applier is not None:
            self._stopping.set()
            self._put_control(_WAKE)
            if applier is not threading.current_thread():
                applier.join(timeout=1.0)

    def after_fork_in_child(self) -> None:
        # The parent's threads did not survive the fork; neither must their queue or subscription.
        self._subscription = None
        self._applier = None
        self.start()

    def liveness(self, stall_after: float) -> dict[str, Any]:
        out = {"relay_applier": thread_report(self._applier, self.loop_at, stall_after)}
        if self._subscription is not None:
            out["relay_listener"] = self._subscription.liveness(stall_after)
        return out

    def wait_connected(self, timeout: float = 5.0) -> bool:
        subscription = self._subscription
        return subscription is not None and subscription.wait_connected(timeout)

    # subscription thread: hand off only -----------------------------------------------------------

    def _on_message(self, channel: str, data: bytes) -> None:
        self.received += 1
        if len(data) > self.max_bytes:
            self._reject("too_large", f"{len(data)} bytes > {self.max_bytes}")
            return
        try:
            self._queue.put_nowait((channel, data))
        except queue.Full:
            if channel == self.state.config.channel_invalidation:
                # A lost invalidation leaves a stale entry somewhere: forget everything instead.
                self._gap_reason = "overflow"
            self.overflow += 1  # counted once its consequence is set, so a reader sees both
            self._log.warning(
                "overflow", "relay queue full (%d); dropped a message", self.queue_size
            )

    def _on_connect(self, first: bool) -> None:
        if not first and self.clear_on_reconnect:
            self._gap_reason = "reconnect"
            self._put_control(_WAKE)

    def _put_control(self, item: object) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # the applier is busy and looks at the flags before its next item
            pass

    # applier thread -----------------------------------------------------------------------------

    def _apply_loop(self, q: queue.Queue[Any], stopping: threading.Event) -> None:
        mark_monitoring_thread()
        slicer = Slicer()  # a burst of messages is applied in slices (see Slicer)
        while not stopping.is_set():
            self.loop_at = time.monotonic()
            try:
                item = q.get_nowait()
                slicer.tick()
            except queue.Empty:
                try:
                    item = q.get(timeout=0.5)
                except queue.Empty:
                    item = _WAKE
                slicer.start()  # it waited: a new slice
            if self._gap_reason is not None:
                reason, self._gap_reason = self._gap_reason, None
                self._clear_for_gap(reason)
            if item is _WAKE:
                continue
            channel, data = item
            try:
                self._handle(channel, data)
            except Exception:  # never let one message end the thread
                log.exception("relay failed to handle a message on %s", channel)

    def _handle(self, channel: str, data: bytes) -> None:
        config = self.state.config
        try:
            message = events.parse(data, self.max_bytes)
            if channel == config.channel_invalidation:
                events.validate_invalidation(message, max_keys=self.max_keys)
            elif channel == config.channel_monitoring:
                if not events.is_health_message(message):
                    return  # other monitoring events (TickStockPL's METRIC_UPDATE, …)
                events.validate_health(message)
            else:
                events.validate_error(message)
        except events.InvalidMessage as exc:
            self._reject(exc.reason, exc.detail, channel)
            return
        if channel == config.channel_monitoring:
            self.broadcaster.emit(HEALTH_EVENT, message, self.broadcaster.monitor_namespace)
        elif channel != config.channel_invalidation:
            self.broadcaster.emit(ERROR_EVENT, message, self.broadcaster.monitor_namespace)
        elif self._is_own(message):
            self.own_skipped += 1
        elif message["cache"] != "*" and message["cache"] not in self._adapters:
            self._reject("unknown_cache", repr(message["cache"])[:100], channel)
        else:
            self._apply(message, self._targets(message["cache"]), local=False)

    def _is_own(self, message: Mapping[str, Any]) -> bool:
        return message.get("origin") == self.state.instance_id and (
            message.get("invalidation_id") in self._own_ids
        )

    def _apply(self, message: Mapping[str, Any], names: list[str], *, local: bool) -> None:
        keys = message.get("keys") or ()
        scope = message.get("scope")
        touched: list[str] = []
        for name in names:
            adapter = self._adapters.get(name)
            if adapter is None:
                continue
            try:
                if message["action"] == "clear":
                    adapter.clear(scope, message)
                else:
                    adapter.invalidate(keys, scope, message)
            except Exception as exc:
                self._cache_failed(name, exc)
                continue
            touched.append(name)
        self.applied += 1
        summary = self._summary(message, touched, local)
        self.recent.appendleft(summary)
        if signals.cache_invalidated.receivers:
            signals.cache_invalidated.send(
                self.state.app, message=dict(message), caches=touched, local=local
            )
        self.broadcaster.invalidated(summary)

    def _summary(
        self, message: Mapping[str, Any], touched: list[str], local: bool
    ) -> dict[str, Any]:
        # Only contract keys reach browsers: extra keys of a received message are not forwarded.
        out = {
            key: message[key]
            for key in (
                "type",
                "cache",
                "action",
                "keys",
                "scope",
                "timestamp",
                "invalidation_id",
                "origin",
                "reason",
            )
            if message.get(key) is not None
        }
        out["caches"] = touched
        out["local"] = local
        return out

    def _clear_for_gap(self, reason: str) -> None:
        message = {
            "type": "cache_invalidation",
            "cache": "*",
            "action": "clear",
            "timestamp": time.time(),
            "reason": reason,
        }
        names = list(self._adapters)
        cleared: list[str] = []
        for name in names:
            try:
                self._adapters[name].clear(None, message)
            except Exception as exc:
                self._cache_failed(name, exc)
                continue
            cleared.append(name)
        self.gap_clears += 1
        log.warning(
            "cache invalidations may have been missed (%s); cleared caches: %s",
            reason,
            ", ".join(cleared) or "none",
        )
        self.recent.appendleft(self._summary(message, cleared, False))
        if signals.cache_gap_cleared.receivers:
            signals.cache_gap_cleared.send(self.state.app, caches=cleared, reason=reason)
        self.broadcaster.invalidated(self._summary(message, cleared, False))

    # counting and rate-limited logging ----------------------------------------------------------

    def _reject(self, reason: str, detail: str = "", channel: str = "") -> None:
        with self._lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self._log.warning(
            reason,
            "rejected a message on %s: %s %s",
            channel or self.state.config.channel_invalidation,
            reason,
            detail,
        )

    def _cache_failed(self, name: str, exc: Exception) -> None:
        with self._lock:
            self.cache_errors[name] = self.cache_errors.get(name, 0) + 1
        self._log.error(
            ("cache", name), "cache %r raised while being invalidated", name, exc_info=exc
        )

    def stats(self) -> dict[str, Any]:
        subscription = self._subscription
        with self._lock:
            rejected = dict(self.rejected)
            cache_errors = dict(self.cache_errors)
            caches = {name: adapter.kind for name, adapter in self._adapters.items()}
        return {
            "listening": self.running,
            "connected": bool(subscription and subscription.connected),
            "reconnects": subscription.reconnects if subscription else 0,
            "received": self.received,
            "applied": self.applied,
            "own_skipped": self.own_skipped,
            "rejected": rejected,
            "rejected_total": sum(rejected.values()),
            "overflow": self.overflow,
            "queued": self._queue.qsize(),
            "gap_clears": self.gap_clears,
            "cache_errors": cache_errors,
            "caches": caches,
            "socketio": self.broadcaster.stats(),
        }
