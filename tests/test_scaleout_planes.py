"""The health and relay planes and MonitoringSubscriber on Sentinel (through a failover) and on
a 3-master Cluster (classic and sharded pub/sub)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from relayutil import CHANNEL as INVALIDATION
from relayutil import invalidation, relay_of
from topologies import SentinelGroup, wait_for

from flask_tickstock_monitor import MonitoringSubscriber, signals
from flask_tickstock_monitor.constants import latest_key
from flask_tickstock_monitor.transport import connect
from flask_tickstock_monitor.transport.clients import publish_one

MONITORING = "tickstock:monitoring"
INTERVAL = 0.2
CACHE = {"k1": 1, "k2": 2, "k3": 3}


class Watcher:
    """A started MonitoringSubscriber that notes when each beat arrived and when it connected."""

    def __init__(self, url: str):
        self.beats: list[tuple[float, str]] = []
        self.connects: list[tuple[float, bool]] = []
        self.subscriber = MonitoringSubscriber(url, default_interval=INTERVAL)
        self.subscriber.subscribe_monitoring(
            health_callback=lambda beat: self.beats.append(
                (time.monotonic(), beat["instance"]["id"])
            )
        )
        subscription = self.subscriber.subscription
        on_connect = subscription.on_connect
        assert on_connect is not None

        def noted(first: bool) -> None:
            self.connects.append((time.monotonic(), first))
            on_connect(first)

        subscription.on_connect = noted
        self.subscriber.start()
        assert self.subscriber.wait_connected(10)

    def states(self) -> dict[str, str]:
        return {view["id"]: view["state"] for view in self.subscriber.view()["instances"]}

    def beating(self, ids: list[str], at_least: int = 2) -> bool:
        counts = {iid: view["beats"] for iid, view in self.subscriber.instances().items()}
        return all(counts.get(iid, 0) >= at_least for iid in ids)

    def beats_after(self, moment: float, instance_id: str) -> list[float]:
        return [at for at, iid in self.beats if at > moment and iid == instance_id]


@pytest.fixture
def watch():
    made: list[Watcher] = []

    def make(url: str) -> Watcher:
        watcher = Watcher(url)
        made.append(watcher)
        return watcher

    yield make
    for watcher in made:
        watcher.subscriber.stop()


def beating_app(make_app, url: str, instance_id: str) -> tuple[Any, Any, dict[str, int]]:
    """An app that beats every INTERVAL and listens for invalidations of its 'relationship'."""
    app, monitor = make_app(
        url,
        TICKSTOCK_MONITOR_HEALTH_ENABLED=True,
        TICKSTOCK_MONITOR_HEALTH_INTERVAL=INTERVAL,
        TICKSTOCK_MONITOR_INSTANCE_ID=instance_id,
    )
    cache = dict(CACHE)
    monitor.register_cache("relationship", cache, app=app)
    assert relay_of(app).wait_connected(10)
    return app, monitor, cache


def invalidation_ms(monitor: Any, app: Any, other_cache: dict[str, int], key: str) -> float:
    """How long ``monitor.invalidate(key)`` in ``app`` takes to reach another app's cache."""
    other_cache[key] = 0
    started = time.perf_counter()
    monitor.invalidate("relationship", keys=[key], app=app)
    while key in other_cache:
        assert time.perf_counter() - started < 10, f"{key} still in the other app's cache"
        time.sleep(0.0002)
    return (time.perf_counter() - started) * 1000


def assert_planes_flow(
    label: str, publisher: Any, watcher: Watcher, apps: list[tuple[Any, Any, dict]]
) -> None:
    """Errors, heartbeats and invalidations reach the watcher and every app's cache."""
    (app_a, monitor_a, cache_a), (app_b, _, cache_b) = apps
    ids = [monitor.state(app).instance_id for app, monitor, _ in apps]
    wait_for(lambda: watcher.beating(ids), 10, "heartbeats of both apps")
    view = watcher.subscriber.view()
    assert view["connected"] is True
    assert watcher.states() == dict.fromkeys(ids, "healthy")

    error_id = monitor_a.publish_error("across the topology", app=app_a, context={"n": 1})
    wait_for(lambda: watcher.subscriber.errors_received, 10, "the error event")
    [error] = watcher.subscriber.error_rate()["recent"]
    assert (error["error_id"], error["message"], error["context"]) == (
        error_id,
        "across the topology",
        {"n": 1},
    )

    # from another service: a plain publish on the invalidation channel
    message = invalidation("relationship", ["k1"])
    publish_one(publisher, INVALIDATION, json.dumps(message))
    wait_for(lambda: "k1" not in cache_a and "k1" not in cache_b, 10, "k1 gone from both caches")
    # from one app to the other
    monitor_a.invalidate("relationship", keys=["k2"], app=app_a)
    assert "k2" not in cache_a  # applied locally at once
    wait_for(lambda: "k2" not in cache_b, 10, "k2 gone from the other app's cache")
    took = sorted(invalidation_ms(monitor_a, app_a, cache_b, f"t{n}") for n in range(20))
    print(
        f"\n{label}: invalidate() in one app → key gone in the other: p50 {took[10]:.1f} ms,"
        f" max {took[-1]:.1f} ms (20 rounds)"
    )
    assert cache_a == cache_b == {"k3": 3}
    assert relay_of(app_b).stats()["rejected_total"] == 0


# --- Sentinel ---------------------------------------------------------------------------------


def test_planes_flow_on_sentinel(sentinel_group, make_app, watch):
    url = sentinel_group.url
    apps = [beating_app(make_app, url, "web-a"), beating_app(make_app, url, "web-b")]
    watcher = watch(url)
    assert_planes_flow("sentinel", connect(url), watcher, apps)
    late = MonitoringSubscriber(url)
    assert late.load_latest() == 2
    assert set(late.instances()) == {"web-a", "web-b"}


@pytest.fixture
def sentinels() -> Iterator[SentinelGroup]:
    """A group of this test's own: a failover changes it (set up before, torn down after, the
    apps and watchers)."""
    with SentinelGroup() as group:
        yield group


def test_heartbeats_and_invalidations_follow_a_failover(sentinels, make_app, watch):
    url = sentinels.url
    apps = [beating_app(make_app, url, "web-a"), beating_app(make_app, url, "web-b")]
    watcher = watch(url)
    gaps: list[tuple[Any, list[str], str]] = []

    def on_gap(sender: Any, caches: list[str], reason: str) -> None:
        if any(sender is app for app, _, _ in apps):
            gaps.append((sender, caches, reason))

    with signals.cache_gap_cleared.connected_to(on_gap):
        wait_for(lambda: watcher.beating(["web-a", "web-b"]), 10, "heartbeats")
        started = time.monotonic()
        new_master = sentinels.failover()
        wait_for(
            lambda: any(not first for _, first in watcher.connects),
            10,
            "the watcher to resubscribe",
        )
        resubscribed_at = next(at for at, first in watcher.connects if not first)
        wait_for(
            lambda: watcher.beats_after(resubscribed_at, "web-a"),
            10,
            "a heartbeat through the new master",
        )
        resumed_s = watcher.beats_after(resubscribed_at, "web-a")[0] - started
        arrivals = [at for at, iid in watcher.beats if iid == "web-a"]
        silence_s = max(b - a for a, b in zip(arrivals, arrivals[1:], strict=False))
        print(
            f"\nsentinel failover: heartbeats resumed {resumed_s:.2f}s after SENTINEL"
            f" FAILOVER (longest silence {silence_s:.2f}s)"
        )
        assert resumed_s < 5.0
        # each relay listener reconnected and, having maybe missed invalidations, cleared
        for app, _, _ in apps:
            stats = relay_of(app).stats
            wait_for(
                lambda s=stats: s()["reconnects"] >= 1 and s()["connected"],
                10,
                "the relay listener to resubscribe",
            )
        wait_for(
            lambda: {sender for sender, _, _ in gaps} == {a for a, _, _ in apps},
            10,
            "both caches cleared after the reconnect gap",
        )
    assert {(tuple(caches), reason) for _, caches, reason in gaps} == {
        (("relationship",), "reconnect")
    }
    for _, _, cache in apps:
        cache.update(CACHE)
    assert sentinels.master_port() == new_master.port
    # the subscriber's own subscriptions are on the new master now
    wait_for(
        lambda: new_master.client().pubsub_numsub(MONITORING)[0][1] == 1,
        10,
        "the watcher on the new master",
    )
    assert_planes_flow("sentinel, after the failover", connect(url), watcher, apps)


# --- Cluster ----------------------------------------------------------------------------------


def ids_on_distinct_nodes(cluster: Any, count: int) -> list[str]:
    """Instance ids whose latest-beat keys live on ``count`` different nodes."""
    by_port: dict[int, str] = {}
    n = 0
    while len(by_port) < count:
        n += 1
        instance_id = f"web-{n}"
        by_port.setdefault(cluster.owner(latest_key(MONITORING, instance_id)).port, instance_id)
    return list(by_port.values())


@pytest.mark.parametrize("sharded", [False, True], ids=["classic", "sharded"])
def test_planes_flow_on_a_cluster(cluster_group, make_app, watch, sharded):
    ids = ids_on_distinct_nodes(cluster_group, 2)
    # each app, and the watcher, knows a different node to start from
    apps = [
        beating_app(make_app, cluster_group.node_url(i, sharded=sharded), instance_id)
        for i, instance_id in enumerate(ids)
    ]
    watcher_url = cluster_group.node_url(2, sharded=sharded)
    watcher = watch(watcher_url)
    label = f"cluster, {'sharded' if sharded else 'classic'} pub/sub"
    client = connect(watcher_url)
    try:
        assert_planes_flow(label, client, watcher, apps)
    finally:
        client.close()
    # a subscriber that starts late finds the latest beats, kept on two different nodes
    late = MonitoringSubscriber(watcher_url)
    try:
        assert late.load_latest() == 2
        assert set(late.instances()) == set(ids)
    finally:
        late.stop()


def test_classic_messages_reach_a_plain_subscriber_on_another_node(
    cluster_group, make_app, record_channels
):
    app, monitor, _ = beating_app(make_app, cluster_group.node_url(0), "web-a")
    client = monitor.state(app).client()
    publishing_port = client.get_default_node().port
    other = next(node for node in cluster_group.nodes if node.port != publishing_port)
    recorder = record_channels(other.client(), "tickstock:errors", MONITORING, INVALIDATION)
    error_id = monitor.publish_error("heard elsewhere", app=app)
    invalidation_id = monitor.invalidate("relationship", keys=["k1"], app=app)
    [error] = recorder.wait_count("tickstock:errors", 1, timeout=10)
    [sent] = recorder.wait_count(INVALIDATION, 1, timeout=10)
    beats = recorder.wait_count(MONITORING, 2, timeout=10)
    assert error["error_id"] == error_id
    assert (sent["invalidation_id"], sent["keys"]) == (invalidation_id, ["k1"])
    assert {beat["instance"]["id"] for beat in beats} == {"web-a"}
