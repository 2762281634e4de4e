"""Redis Cluster: classic pub/sub (relayed to every node) and sharded pub/sub (SPUBLISH)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from topologies import ClusterGroup, wait_for

from flask_tickstock_monitor.transport import Outgoing, Subscription, connect
from flask_tickstock_monitor.transport.clients import (
    channel_counts,
    describe,
    publish_one,
    subscriber_counts,
)

CHANNELS = ("tickstock:errors", "tickstock:monitoring", "tickstock:cache:invalidation")


@pytest.fixture
def cluster() -> Iterator[ClusterGroup]:
    with ClusterGroup() as group:
        yield group


def generic(channel: str, n: int) -> Outgoing:
    return Outgoing(channel, payload={"type": "probe", "channel": channel, "n": n})


def received_on(messages: list[tuple[str, dict]], channel: str) -> list[dict]:
    return [data for ch, data in messages if ch == channel]


def test_classic_pubsub_reaches_a_subscriber_on_every_node(cluster, make_app, record_channels):
    app, monitor = make_app(cluster.url)
    state = monitor.state(app)
    # one subscriber connected straight to each node: classic messages reach all of them
    recorders = [record_channels(node.client(), *CHANNELS) for node in cluster.nodes]

    error_id = monitor.publish_error("on a cluster", app=app)
    for channel in CHANNELS:
        assert state.submit(generic(channel, 1))
    assert monitor.flush(2.0, app=app)

    for recorder in recorders:
        recorder.wait(lambda r: len(r.messages) == 4)
        [event, probe] = recorder.wait_count(CHANNELS[0], 2)
        assert (event["error_id"], event["message"]) == (error_id, "on a cluster")
        assert probe == {"type": "probe", "channel": CHANNELS[0], "n": 1}
        for channel in CHANNELS[1:]:
            assert recorder.on(channel) == [{"type": "probe", "channel": channel, "n": 1}]
    assert describe(state.client()) == {
        "kind": "cluster",
        "sharded_pubsub": False,
        "nodes": sorted(f"127.0.0.1:{node.port}" for node in cluster.nodes),
    }
    assert channel_counts(state.client(), "tickstock:*") == {channel: 3 for channel in CHANNELS}
    assert subscriber_counts(state.client(), [*CHANNELS, "none"]) == {
        **{channel: 3 for channel in CHANNELS},
        "none": 0,
    }
    # the CLI's test publish: one PUBLISH, the subscribers of every node counted
    assert publish_one(state.client(), CHANNELS[1], json.dumps({"n": 2})) == 3
    for recorder in recorders:
        assert recorder.wait_count(CHANNELS[1], 2)[1] == {"n": 2}


def test_sharded_pubsub_goes_to_the_owner_of_each_channel(cluster, make_app):
    app, monitor = make_app(cluster.url, TICKSTOCK_MONITOR_SHARDED_PUBSUB=True)
    state = monitor.state(app)
    assert state.config.redis_url == cluster.url + "?sharded_pubsub=true"
    got: list[tuple[str, dict]] = []
    subscription = Subscription(
        lambda: connect(cluster.url + "?sharded_pubsub=true"),
        CHANNELS,
        lambda channel, data: got.append((channel, json.loads(data))),
    ).start()
    # and a plain SSUBSCRIBE on the node that owns the errors channel's slot
    owner = cluster.owner(CHANNELS[0]).client().pubsub()
    owner.ssubscribe(CHANNELS[0])
    try:
        assert subscription.wait_connected(5)
        error_id = monitor.publish_error("sharded", app=app)
        for channel in CHANNELS:
            assert state.submit(generic(channel, 1))
        assert monitor.flush(2.0, app=app)
        wait_for(lambda: len(got) == 4, 5, "the sharded messages")
        # the errors channel has two sharded subscribers: ours and the plain one
        assert channel_counts(state.client(), "tickstock:*") == {
            CHANNELS[0]: 2,
            CHANNELS[1]: 1,
            CHANNELS[2]: 1,
        }
        # sharded messages are not relayed to classic subscribers
        assert channel_counts(state.client(), "tickstock:*", sharded=False) == {}
        assert subscriber_counts(state.client(), CHANNELS) == {
            CHANNELS[0]: 2,
            CHANNELS[1]: 1,
            CHANNELS[2]: 1,
        }
        assert publish_one(state.client(), CHANNELS[0], json.dumps({"n": 2})) == 2
        wait_for(lambda: len(got) == 5, 5, "the test message")
        plain = [owner.get_message(timeout=1) for _ in range(4)]
    finally:
        subscription.stop()
        owner.close()

    [event, probe, test] = received_on(got, CHANNELS[0])
    assert test == {"n": 2}
    assert (event["error_id"], event["message"]) == (error_id, "sharded")
    assert probe == {"type": "probe", "channel": CHANNELS[0], "n": 1}
    for channel in CHANNELS[1:]:
        assert received_on(got, channel) == [{"type": "probe", "channel": channel, "n": 1}]
    assert [m["type"] for m in plain] == ["ssubscribe", "smessage", "smessage", "smessage"]
    assert json.loads(plain[1]["data"])["error_id"] == error_id
    assert monitor.stats(app=app)["published"] == 4


def test_sharded_subscription_comes_back_after_its_node_restarts(cluster, make_app):
    url = cluster.url + "?sharded_pubsub=true"
    app, monitor = make_app(url)
    state = monitor.state(app)
    channel = CHANNELS[2]
    got: list[dict] = []
    connects: list[bool] = []
    subscription = Subscription(
        lambda: connect(url),
        [channel],
        lambda _, data: got.append(json.loads(data)),
        on_connect=connects.append,
        backoff_base=0.05,
        backoff_cap=0.5,
    ).start()
    try:
        assert subscription.wait_connected(5)
        assert state.submit(generic(channel, 1))
        wait_for(lambda: len(got) == 1, 5, "the first message")

        owner = cluster.owner(channel)
        owner.restart()
        cluster.wait_ok()
        started = time.monotonic()
        n = 1
        while len(got) < 2:  # publish until the resubscribed subscription hears one
            n += 1
            state.submit(generic(channel, n))
            time.sleep(0.05)
            assert time.monotonic() - started < 10, monitor.stats(app=app)
        print(
            f"\ncluster node restart: sharded messages resumed after "
            f"{time.monotonic() - started:.2f}s once the cluster was ok"
        )
    finally:
        subscription.stop()
    assert connects[:2] == [True, False]
    assert got[0] == {"type": "probe", "channel": channel, "n": 1}
    assert got[1]["n"] > 1
