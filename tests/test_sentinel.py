"""Redis Sentinel: the transport follows a failover (publisher and subscription)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from topologies import SERVICE, SentinelGroup, wait_for

from flask_tickstock_monitor.transport import Subscription, connect
from flask_tickstock_monitor.transport.clients import channel_counts, describe

ERRORS = "tickstock:errors"


@pytest.fixture
def sentinels() -> Iterator[SentinelGroup]:
    with SentinelGroup() as group:
        yield group


class Received:
    """What a :class:`Subscription` delivered, with the time each message arrived."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, str, dict]] = []
        self.connects: list[tuple[float, bool]] = []

    def on_message(self, channel: str, data: bytes) -> None:
        self.messages.append((time.monotonic(), channel, json.loads(data)))

    def on_connect(self, first: bool) -> None:
        self.connects.append((time.monotonic(), first))

    def after(self, moment: float) -> list[dict]:
        return [message for at, _, message in self.messages if at > moment]


def test_error_events_and_the_subscription_follow_a_failover(sentinels, make_app):
    app, monitor = make_app(sentinels.url)
    received = Received()
    subscription = Subscription(
        lambda: connect(sentinels.url),
        [ERRORS],
        received.on_message,
        on_connect=received.on_connect,
        backoff_base=0.05,
        backoff_cap=0.5,
    ).start()
    stop = threading.Event()

    def publish_forever() -> None:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            monitor.publish_error(f"tick {sequence}", app=app, context={"seq": sequence})
            time.sleep(0.02)

    publisher = threading.Thread(target=publish_forever, daemon=True)
    try:
        assert subscription.wait_connected(5)
        publisher.start()
        wait_for(lambda: len(received.messages) >= 5, 5, "errors before the failover")
        old_port = sentinels.master_port()

        started = time.monotonic()
        new_master = sentinels.failover()
        # resumed = the first error that reached the resubscribed subscription
        wait_for(lambda: any(not first for _, first in received.connects), 10, "a resubscribe")
        resubscribed_at = next(at for at, first in received.connects if not first)
        wait_for(lambda: received.after(resubscribed_at), 10, "errors after the failover")
        resumed_s = next(at for at, _, _ in received.messages if at > resubscribed_at) - started
        print(f"\nsentinel failover: error events resumed after {resumed_s:.2f}s")
        assert resumed_s < 5.0

        wait_for(lambda: len(received.after(resubscribed_at)) >= 20, 5, "errors to keep flowing")
        # the subscription lives on the new master, and what it heard came through it
        assert channel_counts(new_master.client(), ERRORS) == {ERRORS: 1}
    finally:
        stop.set()
        publisher.join(2)
        subscription.stop()

    assert new_master.port != old_port
    assert sentinels.master_port() == new_master.port
    assert subscription.reconnects >= 1
    sequences = [event["context"]["seq"] for event in received.after(resubscribed_at)]
    assert sequences == sorted(sequences)
    state = monitor.state(app)
    assert describe(state.client()) == {
        "kind": "sentinel",
        "sharded_pubsub": False,
        "service": SERVICE,
        "master": f"127.0.0.1:{new_master.port}",
    }
    # what was lost while the master changed is counted, never silently gone
    assert monitor.flush(2.0, app=app)
    stats = monitor.stats(app=app)
    sent = stats["published"] + stats["dropped_total"]
    assert sent >= len(received.messages)


def test_config_keys_name_the_sentinels(sentinels, make_app, record_channels):
    hosts = [f"127.0.0.1:{s.port}" for s in sentinels.sentinels]
    app, monitor = make_app(
        "redis://127.0.0.1:1/0",  # a plain URL's database is kept, its host is not used
        TICKSTOCK_MONITOR_SENTINELS=hosts,
        TICKSTOCK_MONITOR_SENTINEL_SERVICE=SERVICE,
    )
    state = monitor.state(app)
    assert state.config.redis_url == f"redis+sentinel://{','.join(hosts)}/{SERVICE}/0"
    recorder = record_channels(sentinels.master.client(), ERRORS)
    error_id = monitor.publish_error("via the sentinels", app=app)
    [event] = recorder.wait_count(ERRORS, 1)
    assert (event["error_id"], event["message"]) == (error_id, "via the sentinels")
