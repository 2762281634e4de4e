"""Prometheus metrics: this process's counters, the cluster view from real monitors' beats in
processes of their own, the endpoint and ``flask tickstock metrics``, on a real redis-server.

Expositions are read back with prometheus_client's own parser.
"""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import pytest
from beaters import latest_key, wait_latest
from conftest import wait_for
from prometheus_client.parser import text_string_to_metric_families

from flask_tickstock_monitor.cluster_metrics import ClusterCollector, instance_metric_name
from flask_tickstock_monitor.config import ConfigurationError
from flask_tickstock_monitor.exporter import metrics_command
from flask_tickstock_monitor.metrics import ProcessCollector, new_registry, render

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str | bytes) -> Samples:
    """Every sample by its name (``_total`` included), with its labels."""
    if isinstance(text, bytes):
        text = text.decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels``."""
    found = [v for got, v in samples.get(name, []) if labels.items() <= got.items()]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def scrape(*collectors: Any) -> Samples:
    body, content_type = render(new_registry(*collectors))
    assert content_type.startswith("text/plain; version=0.0.4")
    return parse(body)


def cluster(redis_server, **options: Any) -> ClusterCollector:
    client = redis_server.client()
    return ClusterCollector(lambda: client, **options)


# --- one process -------------------------------------------------------------------------------


def test_a_real_monitors_counters_as_counters(make_app, redis_server):
    app, monitor = make_app(
        redis_server.url,
        TICKSTOCK_MONITOR_THROTTLE_LIMIT=2,  # no scheduled beats: the one below only
    )
    with app.app_context():
        for _ in range(5):  # the same message: two published, three throttled
            monitor.publish_error("Failed to calculate threshold bars")
    beat = monitor.publish_health(app=app)
    assert monitor.flush(5.0, app=app)
    collector = ProcessCollector(
        lambda: monitor.stats(app), lambda: monitor.health_snapshot(app=app)
    )
    samples = scrape(collector)
    instance = monitor.stats(app)["instance_id"]
    assert value(samples, "tickstock_events_published_total", instance_id=instance) == 3
    assert value(samples, "tickstock_events_dropped_total", reason="throttled") == 3
    # a known reason is exported before it happens, so increase() sees its first drop
    assert value(samples, "tickstock_events_dropped_total", reason="queue_full") == 0
    assert value(samples, "tickstock_events_queued") == 0
    assert value(samples, "tickstock_publisher_connected") == 1
    assert value(samples, "tickstock_publisher_breaker_open") == 0
    assert value(samples, "tickstock_heartbeats_published_total") == 1
    assert value(samples, "tickstock_relay_applied_total") == 0
    assert value(samples, "tickstock_health_status", status="healthy") == 1
    assert value(samples, "tickstock_health_status", status="unhealthy") == 0
    latency = beat["health"]["components"]["redis"]["latency_ms"] / 1000
    assert value(samples, "tickstock_health_check_latency_seconds", check="redis") == latency
    assert value(samples, "tickstock_health_check_status", check="redis", status="healthy") == 1
    info = value(
        samples, "tickstock_monitor_info", instance_id=instance, component="test_component"
    )
    assert info == 1
    # the families are typed: counters as counters
    types = {
        f.name: f.type
        for f in text_string_to_metric_families(render(new_registry(collector))[0].decode())
    }
    assert types["tickstock_events_published"] == "counter"
    assert types["tickstock_events_queued"] == "gauge"


def test_every_section_of_stats_is_exported():
    """The shape of ``monitor.stats()`` with every plane, the durable log and dashboard too."""
    stats = {
        "instance_id": "web-1", "enabled": True, "published": 10, "queued": 2,
        "dropped": {"queue_full": 4, "publish_failed": 1}, "connected": False,
        "breaker_open": True, "last_latency_ms": 2.5,
        "health": {"beats": 7, "running": True, "interval_s": 30.0},
        "relay": {"listening": True, "connected": True, "reconnects": 1, "received": 9,
                  "applied": 8, "own_skipped": 1, "rejected": {"bad_json": 2}, "overflow": 0,
                  "queued": 0, "gap_clears": 3, "cache_errors": {"relationship": 1},
                  "socketio": {"emitted": 5, "failed": 1}},
        "errorlog": {"written": 6, "buffered": 1, "dropped": {"database_down": 2},
                     "connected": True},
        "dashboard": {"connected": True, "reconnects": 0, "health_received": 11,
                      "errors_received": 12, "rejected": {"too_large": 1}},
    }  # fmt: skip
    samples = scrape(ProcessCollector(lambda: stats))
    expected = {
        ("tickstock_events_dropped_total", "queue_full"): 4,
        ("tickstock_events_dropped_total", "publish_failed"): 1,
        ("tickstock_relay_rejected_total", "bad_json"): 2,
        ("tickstock_errorlog_dropped_total", "database_down"): 2,
        ("tickstock_subscriber_rejected_total", "too_large"): 1,
    }
    for (name, reason), count in expected.items():
        assert value(samples, name, instance_id="web-1", reason=reason) == count
    assert value(samples, "tickstock_publisher_breaker_open") == 1
    assert value(samples, "tickstock_publisher_last_batch_seconds") == 0.0025
    assert value(samples, "tickstock_relay_gap_clears_total") == 3
    assert value(samples, "tickstock_relay_cache_errors_total", cache="relationship") == 1
    assert value(samples, "tickstock_relay_socketio_failed_total") == 1
    assert value(samples, "tickstock_errorlog_written_total") == 6
    assert value(samples, "tickstock_subscriber_errors_received_total") == 12
    assert "tickstock_health_status" not in samples  # no beat yet: no status to report


def test_two_apps_in_one_process_keep_registries_of_their_own(make_app, redis_server):
    apps = [make_app(redis_server.url, TICKSTOCK_MONITOR_INSTANCE_ID=f"app-{i}") for i in (1, 2)]
    registries = [new_registry(ProcessCollector(lambda m=m, a=a: m.stats(a))) for a, m in apps]
    for i, registry in enumerate(registries, 1):
        samples = parse(render(registry)[0])
        assert [
            labels["instance_id"] for labels, _ in samples["tickstock_events_published_total"]
        ] == [f"app-{i}"]


# --- the cluster view --------------------------------------------------------------------------


def test_the_cluster_view_shows_every_process_and_loses_a_dead_one(beaters, redis_server):
    procs = [beaters("web-1"), beaters("web-2"), beaters("worker-1", component="worker")]
    client = redis_server.client()
    assert wait_latest(client, [p.name for p in procs])
    procs[1].send("symbols 42")
    procs[2].send("status degraded")  # a status change beats at once
    collector = cluster(redis_server, offline_ttl=5.0)

    def degraded() -> bool:
        samples = scrape(collector)
        return (
            value(samples, "tickstock_instance_status", instance_id="worker-1", status="degraded")
            == 1
        )

    assert wait_for(degraded, 5)
    assert wait_for(
        lambda: (
            value(scrape(collector), "tickstock_instance_symbols_tracked", instance_id="web-2")
            == 42
        ),
        5,
    )
    samples = scrape(collector)
    assert value(samples, "tickstock_cluster_up") == 1
    for proc in procs:
        labels = {
            "instance_id": proc.name,
            "component": proc.component,
            "release": "",
            "environment": "production",  # every beat says its environment now
        }
        assert value(samples, "tickstock_instance_up", **labels) == 1
        assert value(samples, "tickstock_instance_state", state="up", **labels) == 1
        assert value(samples, "tickstock_instance_heartbeat_interval_seconds", **labels) == 0.2
        assert 0 <= value(samples, "tickstock_instance_last_beat_age_seconds", **labels) < 5
        assert (
            value(samples, "tickstock_instance_check_latency_seconds", check="database", **labels)
            == 0.004
        )
        assert value(samples, "tickstock_instance_memory_usage_bytes", **labels) > 1_000_000
    assert value(samples, "tickstock_instance_symbols_tracked", instance_id="web-1") == 70
    assert (
        value(
            samples,
            "tickstock_instance_check_status",
            instance_id="worker-1",
            check="database",
            status="degraded",
        )
        == 1
    )
    assert (
        value(samples, "tickstock_instance_status", instance_id="worker-1", status="degraded") == 1
    )

    # a worker dies: its key outlives it; read at later times, it is stale, offline, then gone
    procs[0].kill()
    last = json.loads(client.get(latest_key("web-1")))["timestamp"]
    at = {"stale": last + 0.5, "offline": last + 0.7, "gone": last + 0.6 + 5.1}
    for state, when in at.items():
        collector.clock = lambda when=when: when
        samples = scrape(collector)
        if state == "gone":
            assert "web-1" not in {
                labels["instance_id"] for labels, _ in samples.get("tickstock_instance_up", [])
            }
            assert value(samples, "tickstock_cluster_expired_instances") >= 1
        else:
            assert value(samples, "tickstock_instance_state", instance_id="web-1", state=state) == 1
            assert value(samples, "tickstock_instance_up", instance_id="web-1") == 0
    collector.clock = time.time
    assert value(scrape(collector), "tickstock_instance_up", instance_id="web-2") == 1


def test_a_dead_workers_gauges_go_with_its_key(beaters, redis_server):
    short = beaters("short-lived", latest_ttl=0.6)
    client = redis_server.client()
    assert wait_latest(client, ["short-lived"])
    collector = cluster(redis_server)
    assert value(scrape(collector), "tickstock_instance_up", instance_id="short-lived") == 1
    short.kill()
    assert wait_for(lambda: not client.exists(latest_key("short-lived")), 5)
    assert "tickstock_instance_up" not in scrape(collector)


def test_release_environment_and_bad_beats(redis_server):
    client = redis_server.client()
    beat = {
        "type": "health_check", "component": "api", "status": "unhealthy", "timestamp": time.time(),
        "release": "1.3.0", "environment": "staging", "interval_s": 10,
        "instance": {"id": "api-7", "host": "h1", "pid": 7, "boot_id": "b", "uptime_s": 12.0},
        "metrics": {"queue_depth": 3, "db_latency_ms": 12.5, "cpu_pct": 50, "up": 1,
                    "weird name!": 2, "flag": True, "label": "text"},
    }  # fmt: skip
    client.set(latest_key("api-7"), json.dumps(beat), px=60_000)
    client.set(latest_key("broken"), b"{not json", px=60_000)
    client.set(latest_key("no-status"), json.dumps({**beat, "status": "fine"}), px=60_000)
    samples = scrape(cluster(redis_server))
    labels = {
        "instance_id": "api-7",
        "component": "api",
        "release": "1.3.0",
        "environment": "staging",
    }
    assert value(samples, "tickstock_instance_status", status="unhealthy", **labels) == 1
    assert value(samples, "tickstock_instance_up", **labels) == 1  # unhealthy, but beating
    assert value(samples, "tickstock_instance_queue_depth", **labels) == 3
    assert value(samples, "tickstock_instance_db_latency_seconds", **labels) == 0.0125
    assert value(samples, "tickstock_instance_cpu_ratio", **labels) == 0.5
    assert value(samples, "tickstock_instance_metric_up", **labels) == 1
    assert value(samples, "tickstock_instance_weird_name", **labels) == 2
    assert "tickstock_instance_flag" not in samples and "tickstock_instance_label" not in samples
    assert (
        value(samples, "tickstock_instance_start_time_seconds", **labels) == beat["timestamp"] - 12
    )
    assert value(samples, "tickstock_instance_info", host="h1", pid="7", **labels) == 1
    assert value(samples, "tickstock_cluster_invalid_beats") == 2


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("memory_usage_mb", ("memory_usage_bytes", 1024 * 1024)),
        ("cache_hit_rate", ("cache_hit_ratio", 1.0)),
        ("active_websockets", ("active_websockets", 1.0)),
        ("p99_latency_ms", ("p99_latency_seconds", 0.001)),
        ("Uptime-S", ("uptime_seconds", 1.0)),
        ("disk_free_gb", ("disk_free_bytes", 1024.0**3)),
        ("success_percent", ("success_ratio", 0.01)),
        ("state", ("metric_state", 1.0)),
        ("5xx_count", ("metric_5xx_count", 1.0)),
        ("_s", ("s", 1.0)),
        ("!!!", None),
    ],
)
def test_beat_metric_names_get_base_units(name, expected):
    assert instance_metric_name(name) == expected


def test_error_groups_per_group_and_severity(redis_server):
    now = time.time()
    groups = [
        {"fingerprint": f"{i:016x}", "error_type": "ZeroDivisionError", "count": 3 + i,
         "severities": {"error": 2 + i, "critical": 1}, "series": [0] * 54 + [9, 0, 0, 1, 1, 1],
         "first_seen": now - 100, "last_seen": now - i, "status": "open", "new": i == 0,
         "regression": i == 1}
        for i in range(4)
    ]  # fmt: skip
    samples = scrape(cluster(redis_server, groups=lambda: groups, max_groups=3))
    assert value(samples, "tickstock_error_groups") == 4
    first = {"fingerprint": f"{0:016x}", "error_type": "ZeroDivisionError"}
    assert value(samples, "tickstock_error_group_events_total", severity="error", **first) == 2
    assert value(samples, "tickstock_error_group_events_total", severity="critical", **first) == 1
    assert value(samples, "tickstock_error_group_events_last_5m", **first) == 3  # the 9 is older
    # anchored 62 minutes back, so its last entry is of three minutes ago: two of its minutes
    # (1 + 1) are in the last five
    anchored = {**groups[0], "series_start": (now // 60 - 62) * 60}
    later = scrape(cluster(redis_server, groups=lambda: [anchored]))
    assert value(later, "tickstock_error_group_events_last_5m", **first) == 2
    assert value(samples, "tickstock_error_group_new", **first) == 1
    assert value(samples, "tickstock_error_group_regression", fingerprint=f"{1:016x}") == 1
    assert value(samples, "tickstock_error_group_status", status="open", **first) == 1
    # the three last seen only
    exported = {labels["fingerprint"] for labels, _ in samples["tickstock_error_group_new"]}
    assert exported == {f"{i:016x}" for i in range(3)}


def test_redis_down_the_scrape_still_answers(make_app, redis_server):
    app, monitor = make_app(redis_server.url)
    state = app.extensions["tickstock_monitor"]
    registry = new_registry(
        ProcessCollector(lambda: monitor.stats(app)),
        ClusterCollector(state.client),
    )
    redis_server.kill()
    with app.app_context():
        monitor.publish_error("while Redis is down")
    assert wait_for(lambda: monitor.stats(app)["breaker_open"], 5)
    started = time.monotonic()
    samples = parse(render(registry)[0])
    assert time.monotonic() - started < 3  # the client's socket timeout, not a hang
    assert value(samples, "tickstock_cluster_up") == 0
    assert value(samples, "tickstock_publisher_breaker_open") == 1
    assert "tickstock_instance_up" not in samples


# --- the endpoint ------------------------------------------------------------------------------


def endpoint_app(make_app, redis_server, **config: Any):
    app, monitor = make_app(
        redis_server.url, TICKSTOCK_MONITOR_METRICS_ENDPOINT="/metrics", **config
    )
    plane = app.extensions["tickstock_monitor"].metrics
    return app, monitor, plane


def test_the_endpoint_serves_this_process_and_the_cluster(make_app, redis_server, beaters):
    beaters("web-1")
    assert wait_latest(redis_server.client(), ["web-1"])
    app, monitor, plane = endpoint_app(make_app, redis_server)
    client = app.test_client()
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response.headers["Cache-Control"] == "no-store"
    samples = parse(response.data)
    assert value(samples, "tickstock_instance_up", instance_id="web-1") == 1
    assert (
        value(
            samples,
            "tickstock_events_published_total",
            instance_id=monitor.stats(app)["instance_id"],
        )
        == 0
    )
    zipped = client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert (
        value(parse(gzip.decompress(zipped.data)), "tickstock_instance_up", instance_id="web-1")
        == 1
    )
    openmetrics = client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.data.endswith(b"# EOF\n")
    assert plane.stats() == {"endpoint": "/metrics", "served": 3, "refused": 0}


def test_the_endpoint_token_and_auth_checks(make_app, redis_server):
    app, _, plane = endpoint_app(
        make_app, redis_server, TICKSTOCK_MONITOR_METRICS_TOKEN="s3cret",
        TICKSTOCK_MONITOR_METRICS_AUTH=lambda: __import__("flask").request.args.get("ok") == "1",
    )  # fmt: skip
    client = app.test_client()
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/metrics?ok=1").status_code == 200
    assert plane.stats()["refused"] == 2


def test_the_endpoint_falls_back_on_the_dashboards_check(make_app, redis_server):
    app, monitor, _ = endpoint_app(make_app, redis_server)
    allowed = {"yes": False}
    monitor.dashboard_auth(lambda: allowed["yes"])
    client = app.test_client()
    assert client.get("/metrics").status_code == 403
    allowed["yes"] = True
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("METRICS_ENDPOINT", "metrics", "TICKSTOCK_MONITOR_METRICS_ENDPOINT must start with '/'"),
        ("METRICS_ENDPOINT", "/", "TICKSTOCK_MONITOR_METRICS_ENDPOINT must not be '/'"),
        ("METRICS_AUTH", "nowhere:check", "TICKSTOCK_MONITOR_METRICS_AUTH: cannot import"),
        ("METRICS_TOKEN", "", "TICKSTOCK_MONITOR_METRICS_TOKEN must be a non-empty string"),
        ("OFFLINE_TTL", -1, "TICKSTOCK_MONITOR_OFFLINE_TTL must be at least 0"),
        ("METRICS_CLUSTER", "maybe", "TICKSTOCK_MONITOR_METRICS_CLUSTER must be a boolean"),
    ],
)
def test_bad_metrics_config_names_the_key(make_app, redis_server, key, value, message):
    with pytest.raises(ConfigurationError, match=message):
        make_app(
            redis_server.url,
            **{"TICKSTOCK_MONITOR_METRICS_ENDPOINT": "/metrics", f"TICKSTOCK_MONITOR_{key}": value},
        )


# --- flask tickstock metrics ---------------------------------------------------------------------


def test_the_command_prints_the_cluster_view(make_app, redis_server, beaters, tmp_path):
    beaters("web-1")
    beaters("web-2")
    assert wait_latest(redis_server.client(), ["web-1", "web-2"])
    app, _ = make_app(redis_server.url)
    runner = app.test_cli_runner()
    result = runner.invoke(metrics_command)
    assert result.exit_code == 0, result.output
    samples = parse(result.output)
    assert {labels["instance_id"] for labels, _ in samples["tickstock_instance_up"]} == {
        "web-1",
        "web-2",
    }
    assert "tickstock_events_published_total" not in samples  # the CLI's own process: nothing
    target = tmp_path / "tickstock.prom"
    assert runner.invoke(metrics_command, ["--output", str(target)]).exit_code == 0
    assert value(parse(target.read_text()), "tickstock_instance_up", instance_id="web-2") == 1
    redis_server.kill()
    result = runner.invoke(metrics_command)
    assert result.exit_code == 1
    assert value(parse(result.stdout), "tickstock_cluster_up") == 0
    assert "could not be read from Redis" in result.output


# --- the text format ---------------------------------------------------------------------------


def test_the_text_format_reads_back_as_generate_latests(redis_server):
    from prometheus_client import Counter, Histogram
    from prometheus_client.exposition import generate_latest

    client = redis_server.client()
    odd = 'a "quoted" back\\slash\nnewline'
    now = time.time()
    beat = {
        "type": "health_check", "component": odd, "status": "healthy", "timestamp": now,
        "release": "1.0", "instance": {"id": "w-1", "host": "h", "pid": 1, "uptime_s": 1e9},
        "metrics": {"huge": 1.5e300, "tiny": 1e-300, "negative": -3},
    }  # fmt: skip
    client.set(latest_key("w-1"), json.dumps(beat), px=60_000)
    registry = new_registry(
        cluster(redis_server, clock=lambda: now + 1),  # the same ages in both
        ProcessCollector(lambda: {"instance_id": odd, "published": 2}),
    )
    counter = Counter("other_requests", "Another collector's counter.", ["path"], registry=registry)
    counter.labels(path="/x").inc()
    ours, theirs = render(registry)[0], generate_latest(registry)

    def comparable(text: bytes) -> dict[tuple[str, frozenset], float]:
        return {
            (name, frozenset(labels.items())): v
            for name, samples in parse(text).items()
            for labels, v in samples
            if name != "tickstock_cluster_scrape_duration_seconds"
        }

    assert comparable(ours) == comparable(theirs)
    assert value(parse(ours), "tickstock_instance_up", component=odd) == 1
    assert value(parse(ours), "tickstock_instance_huge", instance_id="w-1") == 1.5e300
    # a type it does not write itself: prometheus_client writes the whole scrape
    Histogram("other_seconds", "A histogram.", registry=registry).observe(0.1)
    assert comparable(render(registry)[0]) == comparable(generate_latest(registry))


@pytest.mark.parametrize("enabled", [True, False])
def test_a_scrape_pauses_garbage_collection_and_restores_it(redis_server, enabled):
    import gc

    seen: list[bool] = []

    def stats() -> dict[str, Any]:
        seen.append(gc.isenabled())
        return {"instance_id": "w-1"}

    (gc.enable if enabled else gc.disable)()
    try:
        render(new_registry(ProcessCollector(stats)))
        assert seen == [False] and gc.isenabled() is enabled
    finally:
        gc.enable()
