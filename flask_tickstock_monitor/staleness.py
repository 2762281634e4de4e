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
