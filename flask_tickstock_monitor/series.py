"""Each instance's numeric metrics over the last hour, for the dashboard's charts.

What a beat carries (``metrics``: memory, custom gauges; each health component's
``latency_ms``) is kept per instance in rings of fixed-size buckets (the latest beat of each
bucket: 720 buckets of 5 s by default). Bounded whatever arrives: at most ``max_metrics``
metrics per instance (the first seen), ``max_series`` metrics over all instances, and
``max_instances`` instances (the least recently updated goes first). Memory is about
``8 * points`` bytes per metric, so the defaults hold at most about 30 MB.
"""

from __future__ import annotations

import math
import threading
from array import array
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, TypeGuard

from .tallies import MAX_KEY_CHARS

NAN = math.nan


def numbers_of(beat: Mapping[str, Any]) -> dict[str, float]:
    """A beat's numeric values by name: its ``metrics`` and ``<component>_latency_ms``."""
    out: dict[str, float] = {}
    metrics = beat.get("metrics")
    if isinstance(metrics, Mapping):
        for name, value in metrics.items():
            if _finite(value):
                out[str(name)[:MAX_KEY_CHARS]] = float(value)
    health = beat.get("health")
    components = health.get("components") if isinstance(health, Mapping) else None
    if isinstance(components, Mapping):
        for name, component in components.items():
            latency = component.get("latency_ms") if isinstance(component, Mapping) else None
            if _finite(latency):
                out[f"{str(name)[:MAX_KEY_CHARS]}_latency_ms"] = float(latency)
    return out


def _finite(value: Any) -> TypeGuard[float]:
    kind = type(value)
    return (kind is int or kind is float) and math.isfinite(value)


class _Rings:
    """One instance's buckets: the time of the beat kept in each, and a ring per metric."""

    __slots__ = ("times", "values")

    def __init__(self, points: int):
        self.times = array("d", [NAN]) * points
        self.values: dict[str, array[float]] = {}


class SeriesStore:
    """Per-instance metric series; thread-safe (one lock)."""

    def __init__(
        self,
        *,
        window_s: float = 3600.0,
        bucket_s: float = 5.0,
        max_metrics: int = 32,
        max_series: int = 4_096,
        max_instances: int = 1_000,
    ):
        if bucket_s <= 0 or window_s < bucket_s or max_metrics < 1 or max_instances < 1:
            raise ValueError("bucket_s, window_s, max_metrics and max_instances must be positive")
        self.bucket_s = bucket_s
        self.window_s = window_s
        self.points = int(window_s // bucket_s)
        self.max_metrics = max_metrics
        self.max_series = max_series
        self.max_instances = max_instances
        self._instances: OrderedDict[str, _Rings] = OrderedDict()
        self._series = 0
        self._lock = threading.Lock()
        #: metrics not kept because an instance, or the store, had as many as it may keep
        self.refused = 0

    def add(self, instance_id: str, at: float, beat: Mapping[str, Any]) -> None:
        """Keep the numbers of ``beat``, received at ``at``, in that time's bucket."""
        numbers = numbers_of(beat)
        bucket = int(at // self.bucket_s)
        slot = bucket % self.points
        with self._lock:
            rings = self._instances.get(instance_id)
            if rings is None:
                if len(self._instances) >= self.max_instances:
                    _, oldest = self._instances.popitem(last=False)
                    self._series -= len(oldest.values)
                rings = self._instances[instance_id] = _Rings(self.points)
            else:
                self._instances.move_to_end(instance_id)
            kept = rings.times[slot]
            if kept != kept or int(kept // self.bucket_s) != bucket:  # NaN, or an older bucket
                for ring in rings.values.values():
                    ring[slot] = NAN
            elif at < kept:
                return  # the bucket keeps its latest beat
            rings.times[slot] = at
            for name, value in numbers.items():
                found = rings.values.get(name)
                if found is not None:
                    ring = found
                else:
                    if len(rings.values) >= self.max_metrics or self._series >= self.max_series:
                        self.refused += 1
                        continue
                    ring = rings.values[name] = array("d", [NAN]) * self.points
                    self._series += 1
                ring[slot] = value

    def forget(self, instance_id: str) -> None:
        with self._lock:
            rings = self._instances.pop(instance_id, None)
            if rings is not None:
                self._series -= len(rings.values)

    def series(self, instance_id: str, now: float) -> dict[str, list[list[float]]] | None:
        """``{metric: [[t, value], …]}`` over the window ending ``now``, oldest first;
        ``None`` for an instance with no beat kept."""
        newest = int(now // self.bucket_s)
        with self._lock:
            rings = self._instances.get(instance_id)
            if rings is None:
                return None
            times = rings.times
            slots = sorted(
                (t, slot)
                for slot, t in enumerate(times)
                if t == t and newest - self.points < int(t // self.bucket_s) <= newest
            )
            out: dict[str, list[list[float]]] = {}
            for name, ring in rings.values.items():
                points = [[t, ring[slot]] for t, slot in slots if ring[slot] == ring[slot]]
                if points:
                    out[name] = points
            return out

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "instances": len(self._instances),
                "series": self._series,
                "refused": self.refused,
            }
