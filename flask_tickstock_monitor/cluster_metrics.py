"""A cluster-wide view for Prometheus: every instance's latest beat, and the error groups.

Each instance keeps its latest beat in Redis under ``<monitoring channel>:latest:<instance id>``
(see :func:`~.health.latest_key`). :class:`ClusterCollector` reads them all at each scrape (SCAN
on every primary, then MGET), so whichever worker answers the scrape exports the same gauges for
every instance and no ``PROMETHEUS_MULTIPROC_DIR`` is needed: a dead worker's gauges go when its
key expires, or once it has been offline for the offline TTL.

Per-instance gauges are labelled ``instance_id``, ``component``, ``release``, ``environment``
(``""`` when a beat has none); ``instance`` is left to Prometheus's own target label.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from . import events
from .constants import CHANNEL_MONITORING, latest_key
from .metrics import PREFIX, Families, beat_health, identity, is_number
from .staleness import (
    CONDITIONS,
    DEFAULT_OFFLINE_AFTER,
    DEFAULT_OFFLINE_TTL,
    DEFAULT_STALE_AFTER,
    condition,
    expired,
    state_of,
)
from .transport import clients

log = logging.getLogger("flask_tickstock_monitor.metrics")

INSTANCE_LABELS = ("instance_id", "component", "release", "environment")
GROUP_STATUSES = ("open", "resolved", "ignored")
MIB = 1024 * 1024

Groups = Callable[[], Sequence[Mapping[str, Any]]]

#: a beat's metric names whose unit is known: the gauge's name and the factor to base units
KNOWN_METRICS = {
    "memory_usage_mb": ("memory_usage_bytes", float(MIB)),  # health.py's RSS in MiB
    "cache_hit_rate": ("cache_hit_ratio", 1.0),  # a 0-1 fraction (DESIGN.md)
}
#: unit suffixes turned into Prometheus's base units (bytes, seconds, ratios), first match wins
UNIT_SUFFIXES = (
    ("_kb", "_bytes", 1024.0),
    ("_mb", "_bytes", float(MIB)),
    ("_gb", "_bytes", float(MIB * 1024)),
    ("_us", "_seconds", 1e-6),
    ("_ms", "_seconds", 1e-3),
    ("_secs", "_seconds", 1.0),
    ("_sec", "_seconds", 1.0),
    ("_s", "_seconds", 1.0),
    ("_pct", "_ratio", 0.01),
    ("_percent", "_ratio", 0.01),
)
#: names of the collector's own gauges that a beat's metric may not take (see below)
_RESERVED = {
    "info", "up", "state", "status", "score", "last_beat_age_seconds",
    "last_beat_timestamp_seconds", "heartbeat_interval_seconds", "start_time_seconds",
    "check_status", "check_latency_seconds",
}  # fmt: skip
_NOT_NAME = re.compile(r"[^a-z0-9_]+")


@functools.lru_cache(maxsize=4096)
def instance_metric_name(name: str) -> tuple[str, float] | None:
    """The gauge of a beat's metric (after ``tickstock_instance_``) and its scale factor.

    Lower-cased, each run of characters other than ``a-z0-9_`` made one ``_``; a known unit
    suffix becomes its base unit (``_mb`` -> ``_bytes`` x 2**20, ``_ms`` -> ``_seconds`` x 0.001,
    ``_pct`` -> ``_ratio`` x 0.01: :data:`UNIT_SUFFIXES`); a name the collector's own gauges use
    (or one starting with a digit) gets ``metric_`` in front. ``None`` when nothing is left.
    """
    if name in KNOWN_METRICS:
        return KNOWN_METRICS[name]
    clean = _NOT_NAME.sub("_", name.lower()).strip("_")
    if not clean:
        return None
    scale = 1.0
    for suffix, unit, factor in UNIT_SUFFIXES:
        if clean.endswith(suffix) and len(clean) > len(suffix):
            clean, scale = clean[: -len(suffix)] + unit, factor
            break
    if clean in _RESERVED or clean[0].isdigit():
        clean = "metric_" + clean
    return clean, scale


class ClusterCollector(Collector):
    """Every instance's latest beat, and the error groups, as gauges.

    :param client: returns the Redis client to read with (e.g. ``state.client``).
    :param channel: the monitoring channel whose ``<channel>:latest:*`` keys hold the beats.
    :param groups: returns the error groups in the form of docs/error-groups.md (e.g.
        ``MonitoringSubscriber.groups``); the ``max_groups`` last seen are exported.
    :param offline_ttl: seconds an instance is still exported once offline.
    """

    def __init__(
        self,
        client: Callable[[], Any],
        channel: str = CHANNEL_MONITORING,
        *,
        groups: Groups | None = None,
        stale_after: float = DEFAULT_STALE_AFTER,
        offline_after: float = DEFAULT_OFFLINE_AFTER,
        offline_ttl: float = DEFAULT_OFFLINE_TTL,
        default_interval: float = 30.0,
        max_instances: int = 5_000,
        max_groups: int = 500,
        max_bytes: int = 1_048_576,
        clock: Callable[[], float] = time.time,
    ):
        self.client = client
        self.channel = channel
        self.groups = groups
        self.stale_after = stale_after
        self.offline_after = offline_after
        self.offline_ttl = offline_ttl
        self.default_interval = default_interval
        self.max_instances = max_instances
        self.max_groups = max_groups
        self.max_bytes = max_bytes
        self.clock = clock
        self._pattern = latest_key(re.sub(r"([*?\[\]\\])", r"\\\1", channel), "*")
        self._prefix = latest_key(channel, "")
        self._last_logged: dict[str, float] = {}
        #: whether the last scrape could read Redis (``None`` before the first)
        self.readable: bool | None = None

    def describe(self) -> Iterable[Metric]:
        return ()  # a scrape reads Redis; registering must not

    def latest_beats(self) -> tuple[list[tuple[str, dict[str, Any]]], int]:
        """``(instance id, beat)`` of each latest beat in Redis, and how many were invalid."""
        client = self.client()
        keys = sorted(set(client.scan_iter(match=self._pattern, count=1000)))[: self.max_instances]
        beats: list[tuple[str, dict[str, Any]]] = []
        invalid = 0
        for key, raw in zip(keys, clients.get_many(client, keys) if keys else [], strict=True):
            if raw is None:  # expired between SCAN and MGET
                continue
            try:
                beat = events.parse(raw, self.max_bytes)
                events.validate_health(beat)
            except events.InvalidMessage:
                invalid += 1
                continue
            instance = identity_block(beat)
            fallback = clients.as_text(key)[len(self._prefix) :]
            beats.append((str(instance.get("id") or fallback), beat))
        return beats, invalid

    def collect(self) -> Iterable[Metric]:
        started = time.perf_counter()
        out = Families()
        try:
            beats, invalid = self.latest_beats()
            readable = True
        except Exception as exc:  # Redis down: the scrape still answers, and says so
            self._log_limited("beats", "cannot read the latest beats: %s", exc)
            beats, invalid, readable = [], 0, False
        self.readable = readable
        out.gauge("cluster_up", "Whether the latest beats could be read from Redis.", readable)
        now = self.clock()
        infos = InfoMetricFamily(
            PREFIX + "instance", "An instance that beats.", labels=list(INSTANCE_LABELS)
        )
        left_out = sum(not self._instance(out, infos, iid, beat, now) for iid, beat in beats)
        out.gauge("cluster_invalid_beats", "Latest beats in Redis failing validation.", invalid)
        out.gauge("cluster_expired_instances", "Beats left out: offline past the TTL.", left_out)
        if self.groups is not None:
            try:
                export_groups(out, self.groups(), self.max_groups, now)
            except Exception as exc:
                self._log_limited("groups", "cannot read the error groups: %s", exc)
        yield from out
        if infos.samples:
            yield infos
        took = GaugeMetricFamily(
            PREFIX + "cluster_scrape_duration_seconds", "How long collecting the cluster took."
        )
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _instance(
        self,
        out: Families,
        infos: InfoMetricFamily,
        instance_id: str,
        beat: dict[str, Any],
        now: float,
    ) -> bool:
        """Export one beat; ``False`` when it is left out (offline for longer than the TTL)."""
        interval: Any = beat.get("interval_s")
        interval = float(interval) if is_number(interval) and interval > 0 else None
        interval = interval or self.default_interval
        timestamp = float(beat["timestamp"])
        age = max(0.0, now - timestamp)  # another host's clock may be ahead of ours
        if expired(age, interval, self.offline_ttl, self.offline_after):
            return False
        state = condition(state_of(age, interval, beat["status"], self.stale_after,
                                   self.offline_after))  # fmt: skip
        labels = identity(beat)
        values = (instance_id, *(labels.get(k, "") for k in INSTANCE_LABELS[1:]))
        details: dict[str, str] = {k: labels[k] for k in ("host", "pid", "boot_id") if k in labels}
        infos.add_metric(list(values), {"source": str(beat.get("source", "")), **details})
        one = out.scoped(INSTANCE_LABELS, values)
        one.gauge("instance_up", "1 while the instance beats in time.", state == "up")
        for value in CONDITIONS:
            one.gauge("instance_state", "1 for the instance's state (up, stale, offline).",
                      state == value, state=value)  # fmt: skip
        one.gauge("instance_last_beat_age_seconds", "Seconds since the last beat.", age)
        one.gauge("instance_last_beat_timestamp_seconds", "When the last beat was made.", timestamp)
        one.gauge("instance_heartbeat_interval_seconds", "The heartbeat interval.", interval)
        uptime = identity_block(beat).get("uptime_s")
        if is_number(uptime):
            one.gauge("instance_start_time_seconds", "When the instance's monitor started.",
                      timestamp - float(uptime))  # fmt: skip
        beat_health(one, beat, "instance")
        metrics = beat.get("metrics") or {}
        for name, value in metrics.items():
            named = instance_metric_name(str(name))
            if named is not None and is_number(value) and not isinstance(value, bool):
                one.gauge(f"instance_{named[0]}", f"The beat's metric {name}.", value * named[1])
        return True

    def _log_limited(self, key: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_logged.get(key, -60.0) >= 60.0:
            self._last_logged[key] = now
            log.warning(message, *args)


def export_groups(
    out: Families, groups: Sequence[Mapping[str, Any]], limit: int, now: float
) -> None:
    """The ``limit`` error groups last seen, with their counts per severity."""
    out.gauge("error_groups", "Error groups known to the view.", len(groups))
    ordered = sorted(groups, key=lambda g: g.get("last_seen") or 0, reverse=True)
    for group in ordered[:limit]:
        values = (str(group.get("fingerprint", "")), str(group.get("error_type") or ""))
        one = out.scoped(("fingerprint", "error_type"), values)
        for severity, count in (group.get("severities") or {}).items():
            one.counter("error_group_events_total", "Events of a group, by severity.", count,
                        severity=str(severity))  # fmt: skip
        recent = events_last_5m(group, now)
        if recent is not None:
            one.gauge(
                "error_group_events_last_5m", "A group's events in the last 5 minutes.", recent
            )
        for key in ("first_seen", "last_seen"):
            one.gauge(f"error_group_{key}_timestamp_seconds", f"The group's {key}.",
                      group.get(key))  # fmt: skip
        for key in ("new", "regression"):
            one.gauge(f"error_group_{key}", f"1 while the group is flagged {key}.",
                      bool(group.get(key)))  # fmt: skip
        for status in GROUP_STATUSES:
            one.gauge("error_group_status", "1 for the group's status.",
                      group.get("status") == status, status=status)  # fmt: skip


def events_last_5m(group: Mapping[str, Any], now: float) -> float | None:
    """The events of the minute ``now`` is in and the four before, from the group's per-minute
    ``series`` (a source that did not roll it since it was last seen has no entry for now)."""
    series = group.get("series")
    if not isinstance(series, list) or not all(is_number(n) for n in series):
        return None
    start = group.get("series_start")
    if not is_number(start):  # no anchor: series[-1] is the current minute (docs/error-groups.md)
        return float(sum(series[-5:]))
    current = int((now - start) // 60)
    return float(sum(series[max(0, current - 4) : max(0, current + 1)]))


def identity_block(beat: Mapping[str, Any]) -> Mapping[str, Any]:
    """A beat's ``instance`` block (``{}`` when it has none)."""
    found = beat.get("instance")
    return found if isinstance(found, Mapping) else {}
