"""Prometheus metrics (the ``prometheus`` extra): this process's counters, and how to serve them.

- :class:`ProcessCollector` turns ``monitor.stats()`` (and the last heartbeat this process sent)
  into counters and gauges, each labelled with the process's ``instance_id``.
- :class:`~.cluster_metrics.ClusterCollector` (its own module) exports every instance's latest
  beat and the error groups, for a scrape that must not see one random worker.
- :func:`new_registry`, :func:`render` and :func:`metrics_view` serve them in the text format.

Every metric name starts with ``tickstock_``, carries its unit (``_seconds``, ``_bytes``) and a
counter ends in ``_total``. Collectors live in registries of their own, never in
prometheus_client's global one, so two apps in one process never collide.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeGuard

try:
    from prometheus_client.exposition import choose_encoder, generate_latest
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        InfoMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector, CollectorRegistry
    from prometheus_client.samples import Sample
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "Prometheus metrics need prometheus_client:"
        " pip install 'flask-tickstock-monitor[prometheus]'"
    ) from exc

from .events import component_state
from .staleness import LIVE_STATUSES

log = logging.getLogger("flask_tickstock_monitor.metrics")

PREFIX = "tickstock_"

_Kind = type[CounterMetricFamily] | type[GaugeMetricFamily]
Stats = Callable[[], Mapping[str, Any]]
Snapshot = Callable[[], Mapping[str, Any] | None]


class Labels(dict[str, str]):
    """A sample's labels that carry their text-format rendering (``k="v",…``, no braces), made
    once per scope and extended per sample, so :func:`text_format` need not make it again."""

    __slots__ = ("text",)

    text: str


class Families:
    """Metric families by name, made on first use, yielded in the order they were made.

    Every sample added through one ``Families`` carries its base ``labels``; :meth:`scoped`
    gives another set of base labels over the same families. Samples are appended directly,
    sharing one labels dict per scope (prometheus_client's ``add_metric`` makes one each).
    """

    def __init__(self, labels: Sequence[str] = (), values: Sequence[str] = ()) -> None:
        self._made: dict[str, tuple[CounterMetricFamily | GaugeMetricFamily, str]] = {}
        self.base = Labels(zip(labels, values, strict=True))
        self.base.text = _pairs(self.base.items())
        self._extras: dict[tuple[tuple[str, str], ...], str] = {}  # the same few, repeated

    def scoped(self, labels: Sequence[str], values: Sequence[str]) -> Families:
        scoped = Families(labels, values)
        scoped._made = self._made
        scoped._extras = self._extras
        return scoped

    def gauge(self, name: str, doc: str, value: Any, **extra: str) -> None:
        self._add(GaugeMetricFamily, name, doc, value, extra)

    def counter(self, name: str, doc: str, value: Any, **extra: str) -> None:
        self._add(CounterMetricFamily, name, doc, value, extra)

    def _add(self, kind: _Kind, name: str, doc: str, value: Any, extra: dict[str, str]) -> None:
        """One sample; ``None`` (or not a finite number) is left out, a bool is 0/1."""
        if not is_number(value):
            return
        made = self._made.get(name)
        if made is None:
            family = kind(PREFIX + name, doc, labels=[*self.base, *extra])
            made = self._made[name] = (family, PREFIX + name)  # a counter's ends in _total
        labels = self.base
        if extra:
            labels = Labels(self.base)
            labels.update(extra)
            key = tuple(extra.items())
            more = self._extras.get(key)
            if more is None:
                more = self._extras[key] = _pairs(key)
            labels.text = f"{self.base.text},{more}" if self.base.text else more
        made[0].samples.append(Sample(made[1], labels, float(value)))

    def __iter__(self) -> Iterator[Metric]:
        return (family for family, _ in self._made.values())


# --- one process -------------------------------------------------------------------------------

C, G = "counter", "gauge"

#: (section of stats() or None for the top level, key, kind, name, help, scale)
_SCALARS: tuple[tuple[str | None, str, str, str, str, float], ...] = (
    (None, "enabled", G, "monitor_enabled", "Whether the monitor publishes (1) or not (0).", 1),
    (None, "published", C, "events_published_total", "Messages published to Redis.", 1),
    (None, "queued", G, "events_queued", "Messages waiting for the publisher thread.", 1),
    (None, "connected", G, "publisher_connected", "Whether the publisher reaches Redis.", 1),
    (None, "breaker_open", G, "publisher_breaker_open", "Whether publishing is backing off.", 1),
    (None, "last_latency_ms", G, "publisher_last_batch_seconds", "The last batch's round trip.",
     1e-3),
    ("health", "beats", C, "heartbeats_published_total", "Heartbeats queued for publishing.", 1),
    ("health", "running", G, "health_scheduler_running", "Whether the heartbeat thread runs.", 1),
    ("health", "interval_s", G, "health_interval_seconds", "The heartbeat interval.", 1),
    ("relay", "listening", G, "relay_listening", "Whether the invalidation listener runs.", 1),
    ("relay", "connected", G, "relay_connected", "Whether the listener is subscribed.", 1),
    ("relay", "reconnects", C, "relay_reconnects_total", "Listener reconnections.", 1),
    ("relay", "received", C, "relay_received_total", "Invalidation messages received.", 1),
    ("relay", "applied", C, "relay_applied_total", "Invalidations applied to local caches.", 1),
    ("relay", "own_skipped", C, "relay_own_skipped_total", "This process's own, skipped.", 1),
    ("relay", "overflow", C, "relay_overflow_total", "Invalidations lost to a full queue.", 1),
    ("relay", "queued", G, "relay_queued", "Invalidations waiting to be applied.", 1),
    ("relay", "gap_clears", C, "relay_gap_clears_total", "Caches cleared after a gap.", 1),
    ("errorlog", "written", C, "errorlog_written_total", "Errors written to the database.", 1),
    ("errorlog", "buffered", G, "errorlog_buffered", "Errors waiting to be written.", 1),
    ("errorlog", "connected", G, "errorlog_connected", "Whether the database is reachable.", 1),
    ("dashboard", "connected", G, "subscriber_connected", "Whether the dashboard listens.", 1),
    ("dashboard", "reconnects", C, "subscriber_reconnects_total", "Subscriber reconnections.", 1),
    ("dashboard", "health_received", C, "subscriber_heartbeats_received_total",
     "Heartbeats the dashboard's subscriber received.", 1),
    ("dashboard", "errors_received", C, "subscriber_errors_received_total",
     "Error events the dashboard's subscriber received.", 1),
)  # fmt: skip
#: (section, key, name, label, help, known): a dict of counts, one sample per key; the ``known``
#: keys are exported as 0 before they happen, so ``increase()`` sees the first one
_BY_LABEL: tuple[tuple[str | None, str, str, str, str, tuple[str, ...]], ...] = (
    (None, "dropped", "events_dropped_total", "reason", "Messages dropped, by reason.",
     ("queue_full", "publish_failed", "throttled", "format_error", "shutdown")),
    ("relay", "rejected", "relay_rejected_total", "reason", "Invalidations rejected.", ()),
    ("relay", "cache_errors", "relay_cache_errors_total", "cache", "Failed invalidations.", ()),
    ("errorlog", "dropped", "errorlog_dropped_total", "reason", "Errors not written, by reason.",
     ("buffer_full", "rejected", "format_error", "shutdown")),
    ("dashboard", "rejected", "subscriber_rejected_total", "reason", "Messages rejected.", ()),
)  # fmt: skip


class ProcessCollector(Collector):
    """This process's counters, from a callable returning ``monitor.stats()``.

    ``snapshot`` returns the last heartbeat this process published (``monitor.health_snapshot``)
    for the overall status and each check's status and latency; ``identity`` returns more
    labels for ``tickstock_monitor_info`` (release, environment, …).
    """

    def __init__(
        self,
        stats: Stats,
        snapshot: Snapshot | None = None,
        *,
        identity: Callable[[], Mapping[str, Any]] | None = None,
    ):
        self.stats = stats
        self.snapshot = snapshot
        self.identity = identity

    def describe(self) -> Iterable[Metric]:
        return ()  # nothing is read at registration

    def collect(self) -> Iterable[Metric]:
        stats = self.stats()
        instance = str(stats.get("instance_id", ""))
        out = Families(("instance_id",), (instance,))
        for section, key, kind, name, doc, scale in _SCALARS:
            value = _section(stats, section).get(key)
            if is_number(value):
                out._add(_KINDS[kind], name, doc, float(value) * scale, {})
        for section, key, name, label, doc, known in _BY_LABEL:
            found = _section(stats, section)
            if section is not None and not found:
                continue  # no such plane in this app
            counts = {item: 0 for item in known} | dict(found.get(key) or {})
            for item, count in counts.items():
                out.counter(name, doc, count, **{label: str(item)})
        socketio = _section(stats, "relay").get("socketio") or {}
        for key in ("emitted", "failed"):
            out.counter(f"relay_socketio_{key}_total", f"Socket.IO broadcasts {key}.",
                        socketio.get(key))  # fmt: skip
        beat = self.snapshot() if self.snapshot is not None else None
        if beat:
            beat_health(out, beat, "health")
            out.gauge("health_last_beat_timestamp_seconds", "When the last beat was collected.",
                      beat.get("timestamp"))  # fmt: skip
        yield from out
        info = {"instance_id": instance, **identity(beat or {})}
        if self.identity is not None:
            info.update({k: str(v) for k, v in self.identity().items() if v is not None})
        family = InfoMetricFamily(PREFIX + "monitor", "This process's monitor.")
        family.add_metric([], info)
        yield family


_KINDS: dict[str, _Kind] = {C: CounterMetricFamily, G: GaugeMetricFamily}


def _section(stats: Mapping[str, Any], name: str | None) -> Mapping[str, Any]:
    found = stats if name is None else stats.get(name)
    return found if isinstance(found, Mapping) else {}


def beat_health(out: Families, beat: Mapping[str, Any], prefix: str) -> None:
    """A beat's overall status and score, and each check's status and latency."""
    status = beat.get("status")
    for value in LIVE_STATUSES:
        out.gauge(f"{prefix}_status", "1 for the status of the last beat.", value == status,
                  status=value)  # fmt: skip
    health = _section(beat, "health")
    out.gauge(f"{prefix}_score", "The 0-100 health score of the last beat.",
              health.get("overall_score"))  # fmt: skip
    for check, result in _section(health, "components").items():
        if not isinstance(result, Mapping):
            continue
        for value in LIVE_STATUSES:
            out.gauge(f"{prefix}_check_status", "1 for the status a check reported.",
                      component_state(result) == value, check=str(check), status=value)  # fmt: skip
        latency = result.get("latency_ms")
        if is_number(latency):
            out.gauge(f"{prefix}_check_latency_seconds", "The latency a check measured.",
                      float(latency) / 1000, check=str(check))  # fmt: skip


def identity(beat: Mapping[str, Any]) -> dict[str, str]:
    """The labels that say which instance sent ``beat`` (those it has)."""
    instance = _section(beat, "instance")
    found = {
        "component": beat.get("component"),
        "release": beat.get("release"),
        "environment": beat.get("environment"),
        "host": instance.get("host"),
        "pid": instance.get("pid"),
        "boot_id": instance.get("boot_id"),
    }
    return {k: str(v) for k, v in found.items() if v is not None}


# --- serving -----------------------------------------------------------------------------------


def new_registry(*collectors: Collector) -> CollectorRegistry:
    """A registry of its own (never prometheus_client's global one) holding ``collectors``."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def render(registry: Collector, accept: str | None = None) -> tuple[bytes, str]:
    """The exposition of ``registry`` and its content type; OpenMetrics when ``accept`` asks."""
    encoder, content_type = choose_encoder(accept or "")
    with collections_paused():
        if content_type.startswith("text/plain"):
            return text_format(registry), content_type
        return encoder(registry), content_type


_gc_lock = threading.Lock()
_gc_paused_by = 0  # scrapes running now
_gc_was_enabled = False


@contextlib.contextmanager
def collections_paused() -> Iterator[None]:
    """No garbage collection while a scrape runs.

    A scrape of 200 instances makes some 60 000 short-lived objects, all freed by reference
    counting when it returns; left on, the collector counts them and runs full collections of
    the host's whole heap (16 ms each in the bench, one scrape in eight: the p95 doubled).
    """
    global _gc_paused_by, _gc_was_enabled
    with _gc_lock:
        if _gc_paused_by == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_paused_by += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_paused_by -= 1
            if _gc_paused_by == 0 and _gc_was_enabled:
                gc.enable()


#: the types :func:`text_format` writes itself, and their name in the text format
_TEXT_TYPES = {"counter": "counter", "gauge": "gauge", "info": "gauge", "unknown": "untyped"}


def text_format(registry: Collector) -> bytes:
    """The Prometheus text format (0.0.4) of ``registry``, as ``generate_latest`` writes it.

    The samples :class:`Families` makes carry their labels' text (:class:`Labels`); the label
    sets of others are written once each.
    A registry with other types (histograms, summaries) is left to ``generate_latest``.
    """
    families = list(registry.collect())
    if any(f.type not in _TEXT_TYPES for f in families):
        return generate_latest(registry)
    out: list[str] = []
    written: dict[tuple[tuple[str, str], ...], str] = {}
    for family in families:
        name = family.name + {"counter": "_total", "info": "_info"}.get(family.type, "")
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {_TEXT_TYPES[family.type]}\n")
        for sample in family.samples:
            if sample.timestamp is not None or sample.name.endswith("_created"):
                return generate_latest(registry)
            text = getattr(sample.labels, "text", None)
            if text is None:  # another collector's sample
                key = tuple(sample.labels.items())
                text = written.get(key)
                if text is None:
                    text = written[key] = _pairs(sorted(sample.labels.items()))
            labels = "{" + text + "}" if text else ""
            out.append(f"{sample.name}{labels} {_value_text(sample.value)}\n")
    return "".join(out).encode()


def _pairs(items: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in items)


def _escape(value: str) -> str:
    """A label value as the text format quotes it: backslash, double quote, newline escaped."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _value_text(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def metrics_view(
    registry: Collector, auth_check: Callable[[], bool] | None = None
) -> Callable[[], Any]:
    """A Flask view serving ``registry``; 403 when ``auth_check()`` is false."""
    from flask import Response, abort, request

    def view() -> Response:
        if auth_check is not None and not auth_check():
            abort(403)
        try:
            body, content_type = render(registry, request.headers.get("Accept"))
        except Exception:
            log.exception("collecting the metrics failed")
            return Response("collecting the metrics failed\n", 500, mimetype="text/plain")
        response = Response(body, content_type=content_type)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            # level 1: 200 instances' scrape compresses in 1 ms, the default level's in 7 (bench)
            response.set_data(gzip.compress(body, compresslevel=1))
            response.headers["Content-Encoding"] = "gzip"
        response.headers["Cache-Control"] = "no-store"
        response.vary.add("Accept-Encoding")
        return response

    return view


def is_number(value: Any) -> TypeGuard[float]:
    """A finite int or float (a bool counts as 0/1)."""
    return isinstance(value, (int, float)) and math.isfinite(value)
