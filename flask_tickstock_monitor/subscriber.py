"""``MonitoringSubscriber``: the dashboard side of the seed card, on the monitor's transport.

It listens to ``tickstock:monitoring`` and ``tickstock:errors`` through one
:class:`~.transport.subscription.Subscription` (reconnects, resubscribes, probes a silent
connection), validates every message, and keeps a live view of the instances that beat:
stale after two missed intervals, offline after three, restarts (a new ``boot_id``) and lost
beats (gaps in ``seq``) counted, plus the error rate over a window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from . import events
from ._util import RateLimitedLog
from .alerts import Alert, AlertTracker
from .constants import CHANNEL_ERRORS, CHANNEL_MONITORING, DEFAULT_REDIS_URL, latest_key
from .echo import handling
from .groups import GroupBook
from .recent import RecentErrors
from .series import SeriesStore
from .staleness import DEFAULT_OFFLINE_TTL, InstanceView, purgeable
from .transport import Subscription, clients

log = logging.getLogger("flask_tickstock_monitor.subscriber")

Callback = Callable[[dict[str, Any]], Any]


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
        history_errors: int = 2_000,
        max_instances: int = 1_000,
        max_bytes: int = 1_048_576,
        log_every: float = 60.0,
        probe_interval: float = 5.0,
        socket_timeout: float = 2.0,
        max_groups: int = 1_000,
        on_alert: Callable[[Alert], Any] | AlertTracker | None = None,
        offline_ttl: float | None = DEFAULT_OFFLINE_TTL,
        clock: Callable[[], float] = time.time,
    ):
        """``on_alert``: called (on a thread of the subscriber's) with an :class:`~.alerts.Alert`
        for a new error group, a regression, an instance going stale or offline and coming
        back; a :class:`~.webhook.WebhookNotifier` posts them. An :class:`~.alerts.AlertTracker`
        of your own sets the limits (and a ``claim`` when several subscribers run).
        ``offline_ttl``: seconds an offline instance stays in the view (``None``: for ever).
        ``history_errors``: errors kept for paging back (:class:`~.recent.RecentErrors`); the
        view shows the newest ``recent_errors``. Each instance's numeric metrics are kept for
        an hour (:class:`~.series.SeriesStore`)."""
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
        self.recent_errors = recent_errors
        self.history = RecentErrors(max(history_errors, recent_errors))
        self.series = SeriesStore(max_instances=max_instances)
        self._log = RateLimitedLog(log, log_every)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.book = GroupBook(max_groups=max_groups, clock=clock)
        self.alerts = (
            on_alert
            if on_alert is None or isinstance(on_alert, AlertTracker)
            else AlertTracker(on_alert, clock=clock)
        )
        self.offline_ttl = offline_ttl
        self._watcher: threading.Thread | None = None
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
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(
                target=self._watch, name="tickstock-monitoring-watcher", daemon=True
            )
            self._watcher.start()
        return self

    def _watch(self) -> None:
        """Once a second: stale and offline happen without a message. Alert what changed and
        purge instances offline for longer than ``offline_ttl``."""
        while not self._stopped.wait(1.0):
            try:
                self.tick()
            except Exception:
                self._log.warning("watch", "the subscriber's watcher failed", exc_info=True)

    def tick(self) -> None:
        """What the watcher does each second (callable directly, e.g. in tests)."""
        instances = self.instances()
        if self.offline_ttl is not None:
            gone = purgeable(instances, self.offline_ttl, self.offline_after)
            if gone:
                with self._lock:
                    for instance_id in gone:
                        self._instances.pop(instance_id, None)
                        instances.pop(instance_id, None)
                        self.series.forget(instance_id)
        if self.alerts is not None:
            self.alerts.observe_instances(instances)

    def stop(self, timeout: float = 2.0) -> None:
        self._stopped.set()
        self.subscription.stop(timeout)
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout)
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
        if first and self.alerts is not None:  # what is known at start-up is no news
            self.alerts.observe_instances(self.instances(), notify=False)

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
                    self.series.forget(oldest.id)
                view = self._instances[instance_id] = InstanceView(instance_id)
            view.update(beat, seen_at, self.default_interval)
        self.series.add(instance_id, seen_at, beat)
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
        added = self.book.add(event, now)
        self.history.add(event, now, added.fingerprint, len(data))
        if self.alerts is not None and (added.new or added.regression):
            group = self.book.get(added.fingerprint)
            if group is not None:
                self.alerts.observe_group(group)
        with handling(event):  # what the callback logs about it is no new error (echo.py)
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
        recent = self.history.newest(self.recent_errors)
        return {
            "window_s": self.error_window,
            "count": count,
            "per_min": round(count * 60.0 / self.error_window, 3),
            "recent": recent,
        }

    def groups(self, **query: Any) -> list[dict[str, Any]]:
        """The error groups seen (``sort``, ``status``, ``limit``: see ``GroupBook.groups``)."""
        return self.book.groups(**query)

    def view(self) -> dict[str, Any]:
        """A JSON-able picture of everything this subscriber knows (what a dashboard serves)."""
        return {
            "generated_at": self.clock(),
            "connected": self.subscription.connected,
            "instances": list(self.instances().values()),
            "errors": self.error_rate(),
            "groups": self.book.groups(limit=100),
            "errors_per_minute": self.book.errors_per_minute(),
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
            "groups": self.book.stats(),
            "recent_errors": self.history.stats(),
            "series": self.series.stats(),
            **({"alerts": self.alerts.stats()} if self.alerts is not None else {}),
        }
