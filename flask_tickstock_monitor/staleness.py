"""When an instance that beats counts as up, stale or offline, and when it is forgotten.

One rule for every view of the heartbeats (the subscriber, the cluster metrics, the alerts):
an instance silent for more than ``stale_after`` of its own intervals is *stale*, for more than
``offline_after`` intervals *offline*; an offline instance is *purged* (dropped from views and
gauges) once it has been offline for ``offline_ttl`` seconds, so the workers a pre-fork server
recycles do not pile up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeGuard

#: the statuses a beat reports (events.STATUSES); an instance reporting one is *up*
LIVE_STATUSES = ("healthy", "degraded", "unhealthy")
#: what is known of an instance's beats, whatever it reported
CONDITIONS = ("up", "stale", "offline")

DEFAULT_STALE_AFTER = 2.0
DEFAULT_OFFLINE_AFTER = 3.0
#: seconds an offline instance stays in views before it is purged
DEFAULT_OFFLINE_TTL = 600.0


def state_of(
    age_s: float,
    interval_s: float,
    status: Any,
    stale_after: float = DEFAULT_STALE_AFTER,
    offline_after: float = DEFAULT_OFFLINE_AFTER,
) -> str:
    """The status an instance reported, or ``stale``/``offline`` when its beats stopped."""
    if age_s > offline_after * interval_s:
        return "offline"
    if age_s > stale_after * interval_s:
        return "stale"
    return str(status) if status in LIVE_STATUSES else "unknown"


def condition(state: str) -> str:
    """``up``, ``stale`` or ``offline`` for a state of :func:`state_of` (or the subscriber's)."""
    return state if state in ("stale", "offline") else "up"


def expired(
    age_s: float,
    interval_s: float,
    offline_ttl: float = DEFAULT_OFFLINE_TTL,
    offline_after: float = DEFAULT_OFFLINE_AFTER,
) -> bool:
    """Whether an instance has been offline for longer than ``offline_ttl`` seconds."""
    return age_s > offline_after * interval_s + offline_ttl


def purgeable(
    instances: Mapping[str, Mapping[str, Any]],
    offline_ttl: float = DEFAULT_OFFLINE_TTL,
    offline_after: float = DEFAULT_OFFLINE_AFTER,
) -> list[str]:
    """The ids of the instances (``MonitoringSubscriber.instances()``) to purge now."""
    out = []
    for instance_id, view in instances.items():
        age = view.get("age_s")
        interval = view.get("interval_s")
        if (
            _number(age)
            and _number(interval)
            and expired(age, interval, offline_ttl, offline_after)
        ):
            out.append(instance_id)
    return out


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
        self.interval_s = (
            float(interval) if _number(interval) and interval > 0 else default_interval
        )
        self.last_seen = max(self.last_seen, seen_at)
        self.beat = dict(beat)
        self.beats += 1

    def state(self, now: float, stale_after: float, offline_after: float) -> str:
        """The reported status, or ``stale``/``offline`` when beats stopped arriving."""
        status = self.beat.get("status", "unknown")
        return state_of(now - self.last_seen, self.interval_s, status, stale_after, offline_after)

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
            "release": self.beat.get("release"),
            "metrics": self.beat.get("metrics", {}),
            "components": (self.beat.get("health") or {}).get("components", {}),
        }
