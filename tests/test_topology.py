"""Topology URLs and config keys; sharded pub/sub, channel counts and the subscription's
receiver on one redis-server."""

from __future__ import annotations

import json
import time

import pytest
import redis
from topologies import wait_for

from flask_tickstock_monitor.config import ConfigurationError
from flask_tickstock_monitor.transport import Subscription, clients, connect
from flask_tickstock_monitor.transport.clients import channel_counts, describe
from flask_tickstock_monitor.transport.pubsub import HEARD, receiver
from flask_tickstock_monitor.transport.urls import Topology, parse_url, without_topology_options


def test_sentinel_url():
    assert parse_url("redis+sentinel://:s3cret@10.0.0.1:26380,10.0.0.2/mymaster/2") == Topology(
        "sentinel",
        hosts=(("10.0.0.1", 26380), ("10.0.0.2", 26379)),
        service="mymaster",
        db=2,
        password="s3cret",
    )
    assert parse_url("redis+sentinel://h:1/svc?sentinel_password=x&sharded_pubsub=yes") == Topology(
        "sentinel", True, (("h", 1),), "svc", sentinel_password="x"
    )


def test_cluster_url():
    assert parse_url("redis+cluster://user:pw@a:7000,b:7001?sharded_pubsub=true") == Topology(
        "cluster", True, (("a", 7000), ("b", 7001)), username="user", password="pw"
    )
    assert parse_url("redis://localhost:6379/0?sharded_pubsub=1") == Topology("single", True)
    assert without_topology_options("redis://h:1/0?sharded_pubsub=1&health_check_interval=5") == (
        "redis://h:1/0?health_check_interval=5"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h:1", "a sentinel URL ends in /service_name or /service_name/db"),
        ("redis+sentinel://h:1/svc/x", "database 'x' in a sentinel URL is not a number"),
        ("redis+sentinel:///svc", "no host:port in redis+sentinel URL"),
        ("redis+cluster://h:port", "port 'port' of 'h:port' is not a number"),
        ("redis+cluster://h:1/0", "a cluster has no databases: drop the path from the URL"),
        ("redis+cluster://h:1?db=3", "unknown option(s) db in redis+cluster URL"),
    ],
)
def test_bad_urls_name_the_problem_and_the_key(make_app, url, message):
    with pytest.raises(ConfigurationError) as info:
        make_app(url)
    assert str(info.value) == f"TICKSTOCK_MONITOR_REDIS_URL: {message}"


def test_sentinel_keys_need_a_service(make_app):
    with pytest.raises(ConfigurationError, match="^TICKSTOCK_MONITOR_SENTINEL_SERVICE: set the"):
        make_app("redis://localhost/0", TICKSTOCK_MONITOR_SENTINELS="h1:26379,h2:26379")


def test_sentinel_keys_keep_the_password_and_database(make_app):
    app, monitor = make_app(
        "redis://:pw@ignored:6379/3",
        TICKSTOCK_MONITOR_SENTINELS="h1:26379, h2",
        TICKSTOCK_MONITOR_SENTINEL_SERVICE="mymaster",
        TICKSTOCK_MONITOR_SHARDED_PUBSUB=True,
        TICKSTOCK_MONITOR_ENABLED=False,
    )
    url = "redis+sentinel://:pw@h1:26379,h2/mymaster/3?sharded_pubsub=true"
    assert monitor.state(app).config.redis_url == url


def test_the_embedded_server_has_no_sharded_pubsub(make_app):
    with pytest.raises(ConfigurationError, match="^TICKSTOCK_MONITOR_SHARDED_PUBSUB: the embedded"):
        make_app("memory://x", TICKSTOCK_MONITOR_SHARDED_PUBSUB="true")


def test_sharded_pubsub_on_one_server(redis_server, make_app):
    url = redis_server.url + "?sharded_pubsub=true"
    app, monitor = make_app(url)
    got: list[tuple[str, dict]] = []
    subscription = Subscription(
        lambda: connect(url),
        ["tickstock:errors"],
        lambda channel, data: got.append((channel, json.loads(data))),
    ).start()
    try:
        assert subscription.wait_connected(5)
        client = monitor.state(app).client()
        assert channel_counts(client) == {"tickstock:errors": 1}
        assert channel_counts(client, sharded=False) == {}
        error_id = monitor.publish_error("sharded on one server", app=app)
        assert monitor.flush(2.0, app=app)
        wait_for(lambda: got, 5, "the sharded error event")
    finally:
        subscription.stop()
    [(channel, event)] = got
    assert (channel, event["error_id"]) == ("tickstock:errors", error_id)
    assert describe(client) == {"kind": "single", "sharded_pubsub": True}


def test_channel_counts_classic(redis_server):
    client = connect(redis_server.url)
    pubsubs = [redis_server.client().pubsub() for _ in range(2)]
    try:
        pubsubs[0].subscribe("tickstock:errors", "other")
        pubsubs[1].subscribe("tickstock:errors", "tickstock:monitoring")
        for pubsub in pubsubs:
            wait_for(lambda p=pubsub: p.get_message(timeout=0.1), 5, "a subscribe confirmation")
        wait_for(
            lambda: (
                channel_counts(client, "tickstock:*")
                == {"tickstock:errors": 2, "tickstock:monitoring": 1}
            ),
            5,
            "the subscriber counts",
        )
        assert channel_counts(client, "nothing*") == {}
    finally:
        for pubsub in pubsubs:
            pubsub.close()


# --- the subscription's receiver ----------------------------------------------------------


def subscribed(client, channel):
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    deadline = time.monotonic() + 5
    while pubsub.get_message(timeout=0.1) is None:  # the confirmation
        assert time.monotonic() < deadline
    return pubsub


def receive_one(receive, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = receive()
        if got is not None:
            return got
    raise AssertionError("nothing received")


@pytest.mark.parametrize("protocol", [2, 3])
def test_receiver_reads_the_socket_itself(redis_server, protocol):
    pytest.importorskip("hiredis")
    client = clients.connect_redis(redis_server.url, socket_timeout=2.0, protocol=protocol)
    pubsub = subscribed(client, "a")
    pubsub.get_message = None  # redis-py's path must not be taken
    receive = receiver(pubsub, 0.05)
    assert receive() is None  # nothing yet: back after the timeout
    publisher = redis_server.client()
    publisher.publish("a", b"1")
    assert receive_one(receive) == ("a", b"1")
    big = b"x" * 300_000  # several reads of the socket for one reply
    publisher.publish("a", big)
    publisher.publish("a", b"after")
    assert receive_one(receive) == ("a", big)
    assert receive_one(receive) == ("a", b"after")
    pubsub.ping()
    assert receive_one(receive) is HEARD
    pubsub.connection.send_command("NO-SUCH-COMMAND")  # an error reply
    with pytest.raises(redis.ResponseError):
        receive_one(receive)
    publisher.client_kill_filter(_type="pubsub")
    with pytest.raises(redis.ConnectionError):
        receive_one(receive)
    client.close()


def test_receiver_gives_text_to_a_decoding_client(redis_server):
    pytest.importorskip("hiredis")
    client = redis_server.client(decode_responses=True)
    pubsub = subscribed(client, "a")
    receive = receiver(pubsub, 0.05)
    redis_server.client().publish("a", "é")
    assert receive_one(receive) == ("a", "é")
    pubsub.close()


def test_receiver_leaves_what_redis_py_buffered_to_redis_py(redis_server):
    client = redis_server.client()
    pubsub = subscribed(client, "a")
    publisher = redis_server.client()
    publisher.publish("a", b"1")
    publisher.publish("a", b"2")
    time.sleep(0.1)  # both on the socket: redis-py reads them in one go, returns the first
    assert pubsub.get_message(timeout=1)["data"] == b"1"
    receive = receiver(pubsub, 0.05)
    assert receive_one(receive) == ("a", b"2")  # from redis-py's buffer, not lost
    publisher.publish("a", b"3")
    assert receive_one(receive) == ("a", b"3")
    pubsub.close()
