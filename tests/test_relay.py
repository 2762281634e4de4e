"""The invalidation listener: every cache kind, bad messages, own echoes, gaps, slow caches."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import UserDict
from typing import Any

import pytest
from flask_caching import Cache
from relayutil import CHANNEL, invalidation, publish, relay_of, run_script, wait_for

from flask_tickstock_monitor import signals
from flask_tickstock_monitor.config import ConfigurationError


class RelationshipCacheLike:
    """The signature of TickStockAppV2's RelationshipCache.invalidate."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, str | None]] = []

    def invalidate(self, cache_type: str | None = None, key: str | None = None) -> None:
        self.calls.append((cache_type, key))


class CacheControlLike:
    def __init__(self) -> None:
        self.resets = 0

    def reset_cache(self) -> None:
        self.resets += 1


class ListeningMonitor:
    """``register_cache`` that waits until the listener (started by the first cache) is on."""

    def __init__(self, monitor):
        self.monitor = monitor

    def register_cache(self, name, cache, *, app):
        self.monitor.register_cache(name, cache, app=app)
        assert relay_of(app).wait_connected()

    def __getattr__(self, name):
        return getattr(self.monitor, name)


@pytest.fixture
def relay_app(redis_server, make_app):
    app, monitor = make_app(redis_server.url)
    return app, ListeningMonitor(monitor)


def test_listens_only_once_there_is_a_cache(relay_app, redis_server):
    app, monitor = relay_app
    relay = relay_of(app)
    assert not relay.running
    assert redis_server.client().pubsub_numsub(CHANNEL) == [(CHANNEL.encode(), 0)]
    monitor.register_cache("relationship", {}, app=app)
    assert relay.running
    assert redis_server.client().pubsub_numsub(CHANNEL) == [(CHANNEL.encode(), 1)]


_SEEN_BY_SENTINEL: list[Any] = []


def sentinel(redis_client, app) -> None:
    """Publish a message that is applied, and wait for it: everything sent before is handled."""
    relay = relay_of(app)
    if "sentinel" not in relay._adapters:
        relay.register("sentinel", _SEEN_BY_SENTINEL.append)
        assert relay.wait_connected()
    marker = uuid.uuid4().hex
    publish(redis_client, invalidation("sentinel", keys=[marker]))
    # wait until this very message is fully handled (counted and listed after the caches ran):
    # a count could move for a message sent before it
    assert wait_for(lambda: any(marker in str(entry) for entry in list(relay.recent)))


def test_dict_cache_keys_removed(relay_app, redis_server):
    app, monitor = relay_app
    cache = {"nasdaq100": [1], "sp500": [2], "dow30": [3]}
    monitor.register_cache("relationship", cache, app=app)
    publish(redis_server.client(), invalidation(keys=["nasdaq100", "dow30", "absent"]))
    assert wait_for(lambda: "nasdaq100" not in cache)
    assert cache == {"sp500": [2]}
    stats = monitor.stats(app)["relay"]
    assert stats["applied"] == 1
    assert stats["caches"] == {"relationship": "mapping"}
    assert app.extensions["tickstock_monitor"].caches == {"relationship": cache}


def test_mutable_mapping_cleared(relay_app, redis_server):
    app, monitor = relay_app
    cache = UserDict({"a": 1, "b": 2})
    monitor.register_cache("settings", cache, app=app)
    publish(redis_server.client(), invalidation("settings"))
    assert wait_for(lambda: len(cache) == 0)


def test_flask_caching_simple_cache(relay_app, redis_server):
    app, monitor = relay_app
    cache = Cache(config={"CACHE_TYPE": "SimpleCache", "CACHE_KEY_PREFIX": "p:"})
    cache.init_app(app)
    with app.app_context():
        cache.set("nasdaq100", [1, 2])
        cache.set("sp500", [3])
    monitor.register_cache("views", cache, app=app)
    publish(redis_server.client(), invalidation("views", keys=["nasdaq100"]))
    with app.app_context():
        assert wait_for(lambda: cache.get("nasdaq100") is None)
        assert cache.get("sp500") == [3]
    publish(redis_server.client(), invalidation("views"))
    with app.app_context():
        assert wait_for(lambda: cache.get("sp500") is None)
    assert monitor.stats(app)["relay"]["caches"]["views"] == "flask_caching"


def test_relationship_cache_gets_scope_as_cache_type(relay_app, redis_server):
    app, monitor = relay_app
    cache = RelationshipCacheLike()
    monitor.register_cache("relationship", cache, app=app)
    client = redis_server.client()
    publish(client, invalidation(keys=["nasdaq100", "sp500"], scope="universe"))
    publish(client, invalidation(scope="etf"))
    publish(client, invalidation())
    assert wait_for(lambda: len(cache.calls) == 4)
    assert cache.calls == [
        ("universe", "nasdaq100"),
        ("universe", "sp500"),
        ("etf", None),
        (None, None),
    ]


def test_cache_control_reset_on_any_invalidation(relay_app, redis_server):
    app, monitor = relay_app
    cache = CacheControlLike()
    monitor.register_cache("settings", cache, app=app)
    publish(redis_server.client(), invalidation("settings", keys=["themes"]))
    publish(redis_server.client(), invalidation("settings"))
    assert wait_for(lambda: cache.resets == 2)


def test_callable_gets_message_and_star_reaches_every_cache(relay_app, redis_server):
    app, monitor = relay_app
    received: list[dict] = []
    plain = {"x": 1}
    monitor.register_cache("hook", received.append, app=app)
    monitor.register_cache("plain", plain, app=app)
    message = invalidation("*", keys=["x"], scope="universe")
    publish(redis_server.client(), message)
    assert wait_for(lambda: received)
    assert received == [message]
    assert plain == {}


def test_cache_invalidated_signal(relay_app, redis_server):
    app, monitor = relay_app
    monitor.register_cache("relationship", {"a": 1}, app=app)
    got: list[dict] = []

    def receiver(sender, **kwargs):
        got.append({"sender": sender, **kwargs})

    message = invalidation(keys=["a"])
    with signals.cache_invalidated.connected_to(receiver):
        publish(redis_server.client(), message)
        assert wait_for(lambda: got)
    assert got == [{"sender": app, "message": message, "caches": ["relationship"], "local": False}]


def test_register_cache_refuses_what_it_cannot_invalidate(relay_app):
    app, monitor = relay_app
    with pytest.raises(TypeError, match="cannot invalidate a int"):
        monitor.register_cache("n", 42, app=app)
    with pytest.raises(ValueError, match="non-empty string"):
        monitor.register_cache("*", {}, app=app)
    with pytest.raises(KeyError, match="no cache registered as 'nope'"):
        monitor.invalidate("nope", ["a"], app=app)


BAD_MESSAGES = [
    (b"\xff\xfe{}", "not_utf8"),
    (b"{not json", "bad_json"),
    (
        b'{"type": "cache_invalidation", "cache": "relationship", "action": "clear",'
        b' "timestamp": NaN}',
        "bad_json",
    ),
    (b"[1, 2]", "not_object"),
    (b"[" * 50_000 + b"]" * 50_000, "too_large"),
    (
        json.dumps({"type": "cache_invalidation", "action": "clear", "timestamp": 1.0}),
        "missing_field",
    ),
    (json.dumps(invalidation(keys="nasdaq100")), "bad_type"),
    (json.dumps(invalidation(keys=[1, 2])), "bad_type"),
    (json.dumps(invalidation(keys=[])), "bad_value"),
    (json.dumps(invalidation(action="drop_table")), "bad_value"),
    (json.dumps(invalidation(type="health_check")), "bad_value"),
    (json.dumps(invalidation(timestamp=-5)), "bad_value"),
    (json.dumps(invalidation(keys=["a"], scope={"$ne": 1})), "bad_type"),
    (json.dumps(invalidation("__class__", keys=["a"])), "unknown_cache"),
    (json.dumps(invalidation(keys=[str(i) for i in range(20)])), "too_many_keys"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD_MESSAGES)
def test_bad_messages_are_rejected_by_reason(redis_server, make_app, caplog, raw, reason):
    app, monitor = make_app(
        redis_server.url,
        TICKSTOCK_MONITOR_RELAY_MAX_KEYS=10,
        TICKSTOCK_MONITOR_RELAY_MAX_MESSAGE_BYTES=65_536,
    )
    cache = {"a": 1, "nasdaq100": 2}
    monitor.register_cache("relationship", cache, app=app)
    assert relay_of(app).wait_connected()
    client = redis_server.client()
    publish(client, raw)
    publish(client, raw)
    sentinel(client, app)
    assert cache == {"a": 1, "nasdaq100": 2}
    stats = monitor.stats(app)["relay"]
    assert stats["rejected"] == {reason: 2}
    assert stats["applied"] == 1  # the sentinel only
    logged = [r.getMessage() for r in caplog.records if "rejected a message" in r.getMessage()]
    assert len(logged) == 1  # once per reason, then rate limited
    assert f": {reason}" in logged[0]


def test_deeply_nested_json_is_rejected(redis_server, make_app):
    app, monitor = make_app(redis_server.url, TICKSTOCK_MONITOR_RELAY_MAX_MESSAGE_BYTES=1 << 20)
    monitor.register_cache("relationship", {}, app=app)
    assert relay_of(app).wait_connected()
    client = redis_server.client()
    publish(client, b"[" * 200_000 + b"]" * 200_000)
    sentinel(client, app)
    assert monitor.stats(app)["relay"]["rejected"] == {"too_deep": 1}


def test_own_invalidation_applied_once(relay_app, redis_server, record_channels):
    app, monitor = relay_app
    calls: list[dict] = []
    monitor.register_cache("relationship", calls.append, app=app)
    recorder = record_channels(redis_server.client(), CHANNEL)
    got: list[dict] = []

    def receiver(sender, **kwargs):
        got.append(kwargs)

    with signals.cache_invalidated.connected_to(receiver, app):
        invalidation_id = monitor.invalidate(
            "relationship", ["nasdaq100"], scope="universe", app=app
        )
        assert len(calls) == 1  # applied at once, on the caller's thread
        published = recorder.wait_count(CHANNEL, 1)
        assert wait_for(lambda: monitor.stats(app)["relay"]["own_skipped"] == 1)
    state = app.extensions["tickstock_monitor"]
    assert published == [
        {
            "type": "cache_invalidation",
            "cache": "relationship",
            "action": "invalidate",
            "keys": ["nasdaq100"],
            "scope": "universe",
            "timestamp": published[0]["timestamp"],
            "invalidation_id": invalidation_id,
            "origin": state.instance_id,
        }
    ]
    assert calls == published
    assert [g["local"] for g in got] == [True]
    # The same origin with an id this process never sent (a restarted process that configured
    # its instance id) is applied.
    publish(redis_server.client(), invalidation(keys=["x"], origin=state.instance_id))
    assert wait_for(lambda: len(calls) == 2)


def test_invalidate_while_disabled_applies_locally(make_app, tickstock_memory_url):
    app, monitor = make_app(tickstock_memory_url, TICKSTOCK_MONITOR_ENABLED=False)
    cache = {"a": 1, "b": 2}
    monitor.register_cache("relationship", cache, app=app)
    monitor.invalidate("relationship", "a", app=app)
    assert cache == {"b": 2}
    assert monitor.stats(app)["relay"]["listening"] is False


def test_a_raising_cache_is_counted_and_others_still_applied(relay_app, redis_server, caplog):
    app, monitor = relay_app

    def broken(message):
        raise RuntimeError("cache backend is down")

    plain = {"a": 1}
    monitor.register_cache("broken", broken, app=app)
    monitor.register_cache("plain", plain, app=app)
    client = redis_server.client()
    for _ in range(3):
        publish(client, invalidation("*", keys=["a"]))
    sentinel(client, app)
    stats = monitor.stats(app)["relay"]
    assert plain == {}
    assert stats["cache_errors"] == {"broken": 3}
    assert stats["applied"] == 4  # three to "*" (plain took them) and the sentinel
    logged = [r for r in caplog.records if "raised while being invalidated" in r.getMessage()]
    assert len(logged) == 1 and "cache backend is down" in logged[0].exc_text


def test_slow_cache_does_not_stall_reading(relay_app, redis_server):
    app, monitor = relay_app
    release = threading.Event()
    entered = threading.Event()
    applied: list[dict] = []

    def slow(message):
        entered.set()
        release.wait(5)
        applied.append(message)

    monitor.register_cache("slow", slow, app=app)
    relay = relay_of(app)
    client = redis_server.client()
    for i in range(5):
        publish(client, invalidation("slow", keys=[str(i)]))
    assert wait_for(lambda: relay.received == 5)
    # the applier takes the first message when it gets the CPU, on a loaded machine later
    # than the reader hears all five: wait for it rather than assume it
    assert entered.wait(5)
    assert wait_for(lambda: relay.stats()["queued"] == 4)  # one in the slow cache, four wait
    assert applied == []
    release.set()
    assert wait_for(lambda: len(applied) == 5)
    assert [m["keys"] for m in applied] == [["0"], ["1"], ["2"], ["3"], ["4"]]


def test_queue_overflow_is_counted_and_clears_caches(redis_server, make_app):
    app, monitor = make_app(redis_server.url, TICKSTOCK_MONITOR_RELAY_QUEUE_SIZE=2)
    relay = relay_of(app)
    release = threading.Event()
    entered = threading.Event()

    def slow(message):
        entered.set()
        release.wait(5)

    monitor.register_cache("slow", slow, app=app)
    cache = {"a": 1}
    monitor.register_cache("plain", cache, app=app)
    assert relay.wait_connected()
    gaps: list[dict] = []

    def receiver(sender, **kwargs):
        gaps.append(kwargs)

    with signals.cache_gap_cleared.connected_to(receiver, app):
        client = redis_server.client()
        publish(client, invalidation("slow", keys=["0"]))
        # the applier holds the first before the rest arrive: were it slow to wake, the six
        # could all reach the queue first, and four would be lost, not three
        assert entered.wait(5)
        for i in range(1, 6):
            publish(client, invalidation("slow", keys=[str(i)]))
        # wait for the overflow count, not `received`: a message is counted as received just
        # before it fails to fit, and a drop after the clear would (rightly) clear again
        assert wait_for(lambda: relay.received == 6 and relay.overflow == 3)
        cache["b"] = 2
        release.set()
        assert wait_for(lambda: gaps)
    assert relay.stats()["overflow"] == 3  # one being applied, two queued, three lost
    # every clear is an overflow clear of every cache; there may be two when the applier got
    # to its first clear between two of the drops (each drop calls for one after it)
    assert gaps and all(g == {"caches": ["slow", "plain"], "reason": "overflow"} for g in gaps)
    assert len(gaps) <= 2
    assert cache == {}


def test_reconnect_gap_clears_caches(relay_app, redis_server):
    app, monitor = relay_app
    cache = {"nasdaq100": [1]}
    control = CacheControlLike()
    monitor.register_cache("relationship", cache, app=app)
    monitor.register_cache("settings", control, app=app)
    gaps: list[dict] = []

    def receiver(sender, **kwargs):
        gaps.append({"sender": sender, **kwargs})

    with signals.cache_gap_cleared.connected_to(receiver):
        redis_server.restart()
        assert wait_for(lambda: gaps, timeout=10)
    assert gaps == [{"sender": app, "caches": ["relationship", "settings"], "reason": "reconnect"}]
    assert cache == {} and control.resets == 1
    stats = monitor.stats(app)["relay"]
    assert stats["gap_clears"] == 1 and stats["reconnects"] == 1 and stats["connected"]
    # and it listens again
    cache["sp500"] = [2]
    publish(redis_server.client(), invalidation(keys=["sp500"]))
    assert wait_for(lambda: cache == {})


def test_reconnect_gap_clearing_can_be_turned_off(redis_server, make_app):
    app, monitor = make_app(redis_server.url, TICKSTOCK_MONITOR_RELAY_CLEAR_ON_RECONNECT="false")
    relay = relay_of(app)
    cache = {"a": 1}
    monitor.register_cache("relationship", cache, app=app)
    assert relay.wait_connected()
    redis_server.restart()
    assert wait_for(
        lambda: relay.stats()["reconnects"] == 1 and relay.stats()["connected"], timeout=10
    )
    sentinel(redis_server.client(), app)
    assert cache == {"a": 1} and relay.gap_clears == 0


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("RELAY_QUEUE_SIZE", 0, "TICKSTOCK_MONITOR_RELAY_QUEUE_SIZE must be at least 1"),
        ("RELAY_MAX_MESSAGE_BYTES", "big", "TICKSTOCK_MONITOR_RELAY_MAX_MESSAGE_BYTES must be a"),
        ("RELAY_CLEAR_ON_RECONNECT", "maybe", "TICKSTOCK_MONITOR_RELAY_CLEAR_ON_RECONNECT must"),
        ("SOCKETIO_NAMESPACE", "monitor", "TICKSTOCK_MONITOR_SOCKETIO_NAMESPACE must be a Socket"),
    ],
)
def test_bad_relay_config_names_the_key(make_app, tickstock_memory_url, key, value, message):
    with pytest.raises(ConfigurationError, match=message):
        make_app(tickstock_memory_url, **{f"TICKSTOCK_MONITOR_{key}": value})


def test_forked_child_listens_and_parent_does_not(redis_server, make_app):
    app, monitor = make_app(redis_server.url)
    relay = relay_of(app)
    cache = {"a": 1, "b": 2}
    monitor.register_cache("relationship", cache, app=app)
    assert relay.wait_connected()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        ok = relay.wait_connected(5) and wait_for(lambda: "a" not in cache)
        os.write(ready_w, b"ok" if ok and relay.running else b"no")
        os._exit(0)
    os.close(ready_w)
    assert not relay.running  # a pre-fork master does not listen
    child = redis_server.client()
    assert wait_for(lambda: child.pubsub_numsub(CHANNEL)[0][1] == 1)
    publish(child, invalidation(keys=["a"]))
    assert os.read(ready_r, 2) == b"ok"
    os.waitpid(pid, 0)
    assert cache == {"a": 1, "b": 2}  # the parent applied nothing


EVENTLET_SCRIPT = """
import eventlet
eventlet.monkey_patch()
import json, sys, time, redis
from flask import Flask
from flask_tickstock_monitor import TickStockMonitor

app = Flask("eventlet_app")
app.config["TICKSTOCK_MONITOR_REDIS_URL"] = sys.argv[1]
monitor = TickStockMonitor(app)
cache = {"nasdaq100": 1, "sp500": 2}
monitor.register_cache("relationship", cache, app=app)
relay = app.extensions["tickstock_monitor"].planes["relay"]
assert relay.wait_connected(5)
client = redis.Redis.from_url(sys.argv[1])
client.publish("tickstock:cache:invalidation", json.dumps({
    "type": "cache_invalidation", "cache": "relationship", "action": "invalidate",
    "keys": ["nasdaq100"], "timestamp": time.time()}))
deadline = time.monotonic() + 5
while "nasdaq100" in cache and time.monotonic() < deadline:
    eventlet.sleep(0.01)
print(json.dumps({"cache": cache, "applied": relay.applied}))
monitor.shutdown(app=app)
"""


def test_works_under_eventlet_monkey_patching(redis_server):
    assert run_script(EVENTLET_SCRIPT, redis_server.url) == {"cache": {"sp500": 2}, "applied": 1}
