"""The publisher's connection, held between batches: taken from the pool once per busy spell,
given back when idle, after an error and at close; a Redis restarted between two batches
loses nothing, and a batch a paused Redis may still read is never written twice."""

from __future__ import annotations

import time

import pytest
import redis

from flask_tickstock_monitor.transport import wire
from flask_tickstock_monitor.transport.wire import HeldConnection, publish_batch

CHANNEL = "tickstock:errors"


class CountingPool:
    """Counts what the publisher takes from the real pool of ``client``."""

    def __init__(self, client: redis.Redis):
        self.pool = client.connection_pool
        self.taken = 0
        take = self.pool.get_connection

        def counted(*args, **kwargs):
            self.taken += 1
            return take(*args, **kwargs)

        self.pool.get_connection = counted


def listen(server):
    client = server.client()
    sub = client.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(CHANNEL)
    deadline = time.monotonic() + 5.0
    while client.pubsub_numsub(CHANNEL)[0][1] < 1:  # subscribed before anything is sent
        assert time.monotonic() < deadline, "the subscription did not take"
        sub.get_message(timeout=0.05)
    return sub


def received(sub, count, timeout=5.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        message = sub.get_message(timeout=0.1)
        if message is not None:
            got.append(message["data"])
    return got


def batch(label, n=3):
    return [(CHANNEL, f'{{"n": "{label}-{i}"}}'.encode()) for i in range(n)]


def test_batches_in_a_row_share_one_connection(redis_server):
    client = redis_server.client()
    counting = CountingPool(client)
    sub = listen(redis_server)
    held = HeldConnection()
    for round_ in range(5):
        publish_batch(client, batch(round_), (), held)
    assert counting.taken == 1
    assert len(received(sub, 15)) == 15
    assert held.conn is not None
    held.release()
    assert held.conn is None and client.connection_pool._in_use_connections == set()


def test_an_idle_held_connection_goes_back_to_the_pool(redis_server, monkeypatch):
    monkeypatch.setattr(wire, "HOLD_IDLE_SECONDS", 0.0)  # every batch comes after an idle spell
    client = redis_server.client()
    counting = CountingPool(client)
    held = HeldConnection()
    for round_ in range(3):
        publish_batch(client, batch(round_), (), held)
    assert counting.taken == 3
    assert len(client.connection_pool._in_use_connections) == 1  # the one held now
    held.release()


def test_a_redis_restarted_between_batches_loses_nothing(redis_server):
    client = redis_server.client()
    counting = CountingPool(client)
    held = HeldConnection()
    publish_batch(client, batch("before"), (), held)
    redis_server.restart()  # same port; the held connection is now closed at the far end
    sub = listen(redis_server)
    publish_batch(client, batch("after"), (), held)  # no exception: once more, on a new one
    assert [m.decode() for m in received(sub, 3)] == [m.decode() for _, m in batch("after")]
    assert counting.taken == 2  # the held one failed; the pool's checked one took the batch


def test_a_paused_redis_is_not_written_to_twice(redis_server):
    client = redis.Redis.from_url(redis_server.url, socket_timeout=0.3)
    sub = listen(redis_server)
    held = HeldConnection()
    publish_batch(client, batch("warm", 1), (), held)
    assert len(received(sub, 1)) == 1
    redis_server.pause()
    try:
        with pytest.raises((redis.TimeoutError, TimeoutError, OSError)):
            publish_batch(client, batch("paused", 1), (), held)
        assert held.conn is None  # given back (disconnected) after the error
    finally:
        redis_server.resume()
    # the paused server reads what was written once it runs again, once
    got = received(sub, 2, timeout=2.0)
    assert len(got) <= 1
    client.close()
