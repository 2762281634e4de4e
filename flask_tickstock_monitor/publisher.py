"""``MonitoringPublisher``: the seed card's publisher API, on the monitor's transport.

For scripts and services without Flask. Calls return at once; a background thread publishes,
and what could not be delivered is counted in :meth:`stats` instead of raising.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from . import categories, events
from .constants import CHANNEL_ERRORS, CHANNEL_MONITORING, DEFAULT_REDIS_URL, DEFAULT_SOURCE
from .scrub import Scrubber
from .transport import Outgoing, Publisher, clients


class MonitoringPublisher:
    """Publishes health metrics and error events for internal monitoring."""

    def __init__(
        self,
        redis_url: str = DEFAULT_REDIS_URL,
        *,
        redis_client: Any = None,
        source: str = DEFAULT_SOURCE,
        errors_channel: str = CHANNEL_ERRORS,
        monitoring_channel: str = CHANNEL_MONITORING,
        queue_size: int = 10_000,
        socket_timeout: float = 0.5,
    ):
        self.redis_client = redis_client or clients.connect(
            redis_url, socket_timeout=socket_timeout
        )
        self._owns_client = redis_client is None  # one passed in stays open
        self.source = source
        self.errors_channel = errors_channel
        self.monitoring_channel = monitoring_channel
        self.scrubber = Scrubber()
        self.transport = Publisher(lambda: self.redis_client, queue_size=queue_size)
        #: health metrics accepted for publishing (see :meth:`stats` for what reached Redis)
        self.metrics_published = 0
        self.errors_published = 0

    def publish_health_metric(self, metric_data: Mapping[str, Any]) -> bool:
        """Queue a health metric (``component``, ``status``, ``timestamp``, ``metrics``)."""
        _require(metric_data, "component", "status")
        if metric_data["status"] not in events.STATUSES:
            raise ValueError(
                f"status must be one of {events.STATUSES}, got {metric_data['status']!r}"
            )
        metrics = metric_data.get("metrics") or {}
        if not isinstance(metrics, Mapping):
            raise ValueError("metrics must be a mapping")
        health_event = {
            **{k: v for k, v in metric_data.items() if k not in ("metrics",)},
            "type": "health_check",
            "component": metric_data["component"],
            "status": metric_data["status"],
            "timestamp": float(metric_data.get("timestamp") or time.time()),
            "metrics": dict(metrics),
        }
        accepted = self.transport.submit(
            Outgoing(self.monitoring_channel, payload=health_event, kind="health")
        )
        self.metrics_published += accepted
        return accepted

    def publish_error(self, error_data: Mapping[str, Any]) -> bool:
        """Queue an error event (``severity``, ``message``; ``component``, ``timestamp``,
        ``context``, ``category`` optional)."""
        _require(error_data, "severity", "message")
        if error_data["severity"] not in events.SEVERITIES:
            raise ValueError(
                f"severity must be one of {events.SEVERITIES}, got {error_data['severity']!r}"
            )
        known = {"severity", "component", "message", "timestamp", "context", "error_id", "source"}
        extra = {k: v for k, v in error_data.items() if k not in known}
        event = events.error_event(
            error_id=error_data.get("error_id"),
            source=error_data.get("source") or self.source,
            component=error_data.get("component") or "unknown",
            severity=error_data["severity"],
            message=str(error_data["message"]),
            timestamp=float(error_data.get("timestamp") or time.time()),
            error_type=extra.pop("error_type", None),
            traceback_text=extra.pop("traceback_text", None),
            context=self.scrubber.scrub(dict(error_data.get("context") or {})),
        )
        event.update(extra)
        if not event.get("category"):  # TickStockAppV2 files it under error_logs.category
            event["category"] = categories.derive((), event["component"])
        accepted = self.transport.submit(Outgoing(self.errors_channel, payload=event, kind="error"))
        self.errors_published += accepted
        return accepted

    def stats(self) -> dict[str, Any]:
        return self.transport.stats()

    def flush(self, timeout: float = 2.0) -> bool:
        return self.transport.flush(timeout)

    def close(self, timeout: float = 2.0) -> bool:
        flushed = self.transport.close(timeout)
        if self._owns_client:  # its connections now, not when the collector gets to them
            clients.close(self.redis_client)
        return flushed


def _require(data: Mapping[str, Any], *keys: str) -> None:
    missing = [key for key in keys if data.get(key) in (None, "")]
    if missing:
        raise ValueError(f"missing required field(s): {', '.join(missing)}")
