"""``MonitoringSubscriber``: the dashboard side of the seed card, on the monitor's transport.

It listens to ``tickstock:monitoring`` and ``tickstock:errors`` through one
:class:`~.transport.subscription.Subscription` (reconnects, resubscribes, probes a silent
connection), validates every message, and keeps a live view of the instances that beat:
stale after two missed intervals, offline after three, restarts (a new ``boot_id``) and lost
beats (gaps in ``seq``) counted, plus the error rate over a window.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from . import events
from ._util import RateLimitedLog
from .constants import CHANNEL_ERRORS, CHANNEL_MONITORING, DEFAULT_REDIS_URL, latest_key
from .transport import Subscription, clients

log = logging.getLogger("flask_tickstock_monitor.subscriber")

Callback = Callable[[dict[str, Any]], Any]


class InstanceView:
    """What is known of one instance from its beats."""

    def __init__(self, instance_id: str):
        self.id = instance_id
        self.boot_id: str | None = None
        self.seq: int | None = None
        self.beats = 0
        self.lost_beats = 0
        self.restarts = 0
        self.last_seen = 0.0
        self.interval_s = 30.0
        self.beat: dict[str, Any] = {}

    def update(self, beat: Mapping[str, Any], seen_at: float, default_interval: float) -> None:
        instance = beat.get("instance") or {}
        boot_id = instance.get("boot_id")
        seq = beat.get("seq")
        seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        if boot_id is not None and self.boot_id is not None and boot_id != self.boot_id:
            self.restarts += 1
            self.seq = None
        elif seq is not None and self.seq is not None:
            if seq <= self.seq:  # a duplicate or a beat older than one we have: not news
                return
            self.lost_beats += seq - self.seq - 1
        self.boot_id = boot_id if boot_id is not None else self.boot_id
        self.seq = seq if seq is not None else self.seq
        interval: Any = beat.get("interval_s")
        self.interval_s = float(interval) if _positive(interval) else default_interval
        self.last_seen = max(self.last_seen, seen_at)
        self.beat = dict(beat)
        self.beats += 1

    def state(self, now: float, stale_after: float, offline_after: float) -> str:
        """The reported status, or ``stale``/``offline`` when beats stopped arriving."""
        silent = now - self.last_seen
        if silent > offline_after * self.interval_s:
            return "offline"
        if silent > stale_after * self.interval_s:
            return "stale"
        return str(self.beat.get("status", "unknown"))

    def to_dict(self, now: float, stale_after: float, offline_after: float) -> dict[str, Any]:
        instance = self.beat.get("instance") or {}
        return {
            "id": self.id,
            "component": self.beat.get("component"),
            "host": instance.get("host"),
            "pid": instance.get("pid"),
            "boot_id": self.boot_id,
            "state": self.state(now, stale_after, offline_after),
            "status": self.beat.get("status"),
            "last_seen": self.last_seen,
            "age_s": round(now - self.last_seen, 3),
            "interval_s": self.interval_s,
            "seq": self.seq,
            "beats": self.beats,
            "lost_beats": self.lost_beats,
            "restarts": self.restarts,
            "uptime_s": instance.get("uptime_s"),
            "metrics": self.beat.get("metrics", {}),
            "components": (self.beat.get("health") or {}).get("components", {}),
        }


class MonitoringSubscriber:
    """Subscribes to monitoring events for dashboard display (the seed card's names)."""

    def __init__(
        self,
        redis_url: str = DEFAULT_REDIS_URL,
        *,
        redis_client: Any = None,
        monitoring_channel: str = CHANNEL_MONITORING,
        errors_channel: str = CHANNEL_ERRORS,
        stale_after: float = 2,
        offline_after: float = 3,
        default_interval: float = 30.0,
        error_window: float = 300.0,
        recent_errors: int = 100,
        max_instances: int = 1_000,
        max_bytes: int = 1_048_576,
        log_every: float = 60.0,
        probe_interval: float = 5.0,
        socket_timeout: float = 2.0,
        clock: Callable[[], float] = time.time,
    ):
        self.redis_client = redis_client or clients.connect(
            redis_url, socket_timeout=socket_timeout
        )
        self._owns_client = redis_client is None  # one passed in stays open
        self.monitoring_channel = monitoring_channel
        self.errors_channel = errors_channel
        self.stale_after = stale_after
        self.offline_after = offline_after
        self.default_interval = default_interval
        self.error_window = error_window
        self.max_instances = max_instances
        self.max_bytes = max_bytes
        self.log_every = log_every
        self.clock = clock
        self.health_callback: Callback | None = None
        self.error_callback: Callback | None = None
        self.rejected: dict[str, int] = {}
        self.ignored = 0
        self.callback_errors = 0
        self.health_received = 0
        self.errors_received = 0
        self._instances: dict[str, InstanceView] = {}
        self._error_times: deque[float] = deque()
        self._recent_errors: deque[dict[str, Any]] = deque(maxlen=recent_errors)
        self._log = RateLimitedLog(log, log_every)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.subscription = Subscription(
            lambda: self.redis_client,
            [monitoring_channel, errors_channel],
            self.handle_message,
            on_connect=self._on_connect,
            probe_interval=probe_interval,
            name="tickstock-monitoring-subscriber",
        )

    # the seed card's API ----------------------------------------------------------------------

    def subscribe_monitoring(
        self, health_callback: Callback | None = None, error_callback: Callback | None = None
    ) -> MonitoringSubscriber:
        """Call ``health_callback(event)`` / ``error_callback(event)`` for each valid message."""
        self.health_callback = health_callback
        self.error_callback = error_callback
        return self

    def listen(self) -> None:
        """Listen until :meth:`stop` (or Ctrl-C); callbacks handle the messages."""
        self.start()
        try:
            while not self._stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def start(self) -> MonitoringSubscriber:
        """Listen in a background thread."""
        self._stopped.clear()
        self.subscription.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stopped.set()
        self.subscription.stop(timeout)
        if self._owns_client:  # its connections now, not when the collector gets to them
            clients.close(self.redis_client)

    def wait_connected(self, timeout: float = 5.0) -> bool:
        return self.subscription.wait_connected(timeout)

    # receiving --------------------------------------------------------------------------------

    def _on_connect(self, first: bool) -> None:
        if not first:
            # beats missed while *we* were away are not the instances' lost beats
            with self._lock:
                for view in self._instances.values():
                    view.seq = None
        self.load_latest()

    def load_latest(self) -> int:
        """Read the latest beat each instance keeps in Redis; return how many were loaded.

        On a cluster the keys are spread over the primaries: SCAN visits each of them.
        """
        keys = list(self.redis_client.scan_iter(match=latest_key(self.monitoring_channel, "*")))
        if not keys:
            return 0
        loaded = 0
        for raw in clients.get_many(self.redis_client, keys):
            if raw is not None and self._accept_health(raw, loaded=True):
                loaded += 1
        return loaded

    def handle_message(self, channel: str, data: bytes | str) -> None:
        """Validate and apply one message; a bad one is counted and logged, never raised."""
        if channel == self.monitoring_channel:
            self._accept_health(data)
        elif channel == self.errors_channel:
            self._accept_error(data)

    def _accept_health(self, data: bytes | str, *, loaded: bool = False) -> bool:
        try:
            beat = events.parse(data, self.max_bytes)
            if not events.is_health_message(beat):
                self.ignored += 1  # other monitoring events (TickStockPL's METRIC_UPDATE, …)
                return False
            events.validate_health(beat)
        except events.InvalidMessage as exc:
            self._reject("health", exc)
            return False
        now = self.clock()
        instance = beat.get("instance") or {}
        instance_id = str(instance.get("id") or f"component:{beat['component']}")
        seen_at = min(float(beat["timestamp"]), now) if loaded else now
        with self._lock:
            view = self._instances.get(instance_id)
            if view is None:
                if len(self._instances) >= self.max_instances:
                    oldest = min(self._instances.values(), key=lambda v: v.last_seen)
                    del self._instances[oldest.id]
                view = self._instances[instance_id] = InstanceView(instance_id)
            view.update(beat, seen_at, self.default_interval)
        if not loaded:
            self.health_received += 1
            self._call(self.health_callback, beat)
        return True

    def _accept_error(self, data: bytes | str) -> None:
        try:
            event = events.validate_error(events.parse(data, self.max_bytes))
        except events.InvalidMessage as exc:
            self._reject("error", exc)
            return
        now = self.clock()
        with self._lock:
            self.errors_received += 1
            self._error_times.append(now)
            self._trim_errors(now)
            self._recent_errors.appendleft({**event, "received_at": now})
        self._call(self.error_callback, event)  # _call hands the callback a copy

    def _trim_errors(self, now: float) -> None:
        cutoff = now - self.error_window
        while self._error_times and self._error_times[0] < cutoff:
            self._error_times.popleft()

    def _reject(self, what: str, exc: events.InvalidMessage) -> None:
        reason = exc.reason
        with self._lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            count = self.rejected[reason]
        self._log.warning(
            reason,
            "rejected a %s message (%s); %d rejected for this reason so far",
            what,
            exc,
            count,
        )

    def _call(self, callback: Callback | None, event: Mapping[str, Any]) -> None:
        if callback is None:
            return
        try:
            callback(dict(event))
        except Exception:
            self.callback_errors += 1
            self._log.warning(
                "callback",
                "a monitoring callback failed (%d so far)",
                self.callback_errors,
                exc_info=True,
            )

    # the live view ----------------------------------------------------------------------------

    def instances(self) -> dict[str, dict[str, Any]]:
        """Every instance seen, by id, with its ``state`` (its status, or stale/offline)."""
        now = self.clock()
        with self._lock:
            return {
                iid: view.to_dict(now, self.stale_after, self.offline_after)
                for iid, view in sorted(self._instances.items())
            }

    def error_rate(self) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            self._trim_errors(now)
            count = len(self._error_times)
            recent = list(self._recent_errors)
        return {
            "window_s": self.error_window,
            "count": count,
            "per_min": round(count * 60.0 / self.error_window, 3),
            "recent": recent,
        }

    def view(self) -> dict[str, Any]:
        """A JSON-able picture of everything this subscriber knows (what a dashboard serves)."""
        return {
            "generated_at": self.clock(),
            "connected": self.subscription.connected,
            "instances": list(self.instances().values()),
            "errors": self.error_rate(),
            "stats": self.stats(),
        }

    def stats(self) -> dict[str, Any]:
        sub = self.subscription
        with self._lock:
            rejected = dict(self.rejected)
        return {
            "connected": sub.connected,
            "reconnects": sub.reconnects,
            "health_received": self.health_received,
            "errors_received": self.errors_received,
            "ignored": self.ignored,
            "rejected": rejected,
            "rejected_total": sum(rejected.values()),
            "callback_errors": self.callback_errors,
        }


def _positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
