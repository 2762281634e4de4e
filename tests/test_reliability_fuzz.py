"""Fuzzing everything the extension receives: invalidations (relay) and monitoring (subscriber).

Each case goes to the handler as raw bytes; the handler must count it exactly once (applied,
rejected by reason, ignored, or received), never raise, and never touch a cache unless the
message was a valid invalidation for it. Caches are dicts whose contents are checked after
every case. 10,000+ cases in all, derandomized so CI sees the same ones every run.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relayutil import CHANNEL, invalidation, publish, relay_of, wait_for

from flask_tickstock_monitor import MonitoringSubscriber, events

pytestmark = pytest.mark.slow

CACHES = ("relationship", "symbols")
CONTENT = {"nasdaq100": 1, "sp500": 2, "AAPL": 3, "": 4, "ü": 5}
ERRORS, MONITORING = "tickstock:errors", "tickstock:monitoring"


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
            HealthCheck.large_base_example,
        ],
    )


# --- what arrives ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.lists(st.text(max_size=8), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
cache_names = st.sampled_from([*CACHES, "*", "unknown", "", "x" * 201, "Relationship"])


@st.composite
def near_invalidations(draw) -> dict:
    """Valid invalidations with fields changed, dropped or of the wrong type."""
    message = invalidation(
        draw(cache_names),
        keys=draw(
            st.none()
            | st.lists(st.sampled_from([*CONTENT, "missing"]) | st.text(max_size=5), max_size=4)
        ),
    )
    for field in (
        "type",
        "cache",
        "action",
        "keys",
        "timestamp",
        "scope",
        "origin",
        "invalidation_id",
    ):
        choice = draw(st.integers(0, 9))
        if choice == 0:
            message.pop(field, None)
        elif choice == 1:
            message[field] = draw(anything)
        elif choice == 2 and field == "action":
            message[field] = draw(st.sampled_from(["invalidate", "clear", "delete", "CLEAR"]))
        elif choice == 2 and field == "timestamp":
            message[field] = draw(st.sampled_from([-1, 0, 1e300, True, "now", float("inf")]))
    return message


def encoded(message: dict) -> bytes:
    return json.dumps(message).encode()  # NaN and Infinity go out as JSON never allows them


raw_payloads = st.one_of(
    st.binary(max_size=200),  # mostly not UTF-8, not JSON
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_invalidations().map(encoded),
)


def expected_verdict(message: object, max_keys: int = 10_000) -> str | None:
    """``None`` if the relay must apply ``message`` to caches, else why not (a spec, not a
    copy of the code: the contract in DESIGN.md)."""
    if not isinstance(message, dict) or message.get("type") != "cache_invalidation":
        return "invalid"
    cache, action, stamp = message.get("cache"), message.get("action"), message.get("timestamp")
    if not isinstance(cache, str) or not cache or len(cache) > 200:
        return "invalid"
    if action not in ("invalidate", "clear"):
        return "invalid"
    if (
        not isinstance(stamp, (int, float))
        or isinstance(stamp, bool)
        or not math.isfinite(stamp)
        or stamp < 0
    ):
        return "invalid"
    keys = message.get("keys")
    if action == "invalidate" and (
        not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys)
    ):
        return "invalid"
    if action == "clear" and keys is not None:
        return "invalid"
    if action == "invalidate" and len(keys) > max_keys:
        return "too_many_keys"
    for field in ("scope", "origin", "invalidation_id"):
        if message.get(field) is not None and not isinstance(message[field], str):
            return "invalid"
    if cache != "*" and cache not in CACHES:
        return "unknown_cache"
    return None


def expected_caches(message: dict) -> dict[str, dict]:
    out = {}
    for name in CACHES:
        if message["cache"] not in ("*", name):
            out[name] = dict(CONTENT)
        elif message["action"] == "clear":
            out[name] = {}
        else:
            out[name] = {k: v for k, v in CONTENT.items() if k not in message["keys"]}
    return out


# --- the relay ---------------------------------------------------------------------------------


@pytest.fixture
def relay_setup(redis_server, make_app):
    app, monitor = make_app(redis_server.url, TICKSTOCK_MONITOR_RELAY_MAX_MESSAGE_BYTES=1 << 20)
    caches = {name: dict(CONTENT) for name in CACHES}
    for name, cache in caches.items():
        monitor.register_cache(name, cache, app=app)
    relay = relay_of(app)
    assert relay.wait_connected()
    return app, monitor, relay, caches


def counted(relay) -> int:
    stats = relay.stats()
    return stats["applied"] + stats["rejected_total"] + stats["own_skipped"]


def check_one(relay, caches, data: bytes) -> None:
    for cache in caches.values():
        cache.clear()
        cache.update(CONTENT)
    before = counted(relay)
    applied = relay.applied
    relay._handle(CHANNEL, data)  # the applier's handler, on raw bytes
    assert counted(relay) == before + 1
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):
        message = None
    verdict = expected_verdict(message) if len(data) <= relay.max_bytes else "too_large"
    if verdict is None:
        assert relay.applied == applied + 1
        assert caches == expected_caches(message)
    else:
        assert relay.applied == applied
        assert caches == {name: CONTENT for name in CACHES}


def test_fuzz_relay_handler(relay_setup):
    app, monitor, relay, caches = relay_setup

    @fuzz_settings(7_000)
    @given(raw_payloads)
    def case(data: bytes) -> None:
        check_one(relay, caches, data)

    case()
    stats = relay.stats()
    assert stats["applied"] > 100 and stats["rejected_total"] > 1000  # both sides were explored
    assert {
        "not_utf8",
        "bad_json",
        "not_object",
        "bad_value",
        "bad_type",
        "missing_field",
        "unknown_cache",
    } <= set(stats["rejected"])
    assert_listener_alive(app, monitor, relay, caches)


def test_hostile_payloads_on_the_relay(relay_setup):
    app, monitor, relay, caches = relay_setup
    ten_mb_valid_json = json.dumps(
        {**invalidation("relationship", ["a"]), "pad": "x" * 10_000_000}
    ).encode()
    hostile = [
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        ten_mb_valid_json,
        b"\x00" * 10_000_000,
        b"\xff\xfe" * 5_000_000,
        b"NaN",
        b'{"type": "cache_invalidation", "timestamp": NaN}',
        b"\xc3\x28",
        json.dumps({**invalidation("relationship", ["nasdaq100"]), "timestamp": 1e999}).encode(),
        json.dumps(invalidation("relationship", [["nested"]])).encode(),
        json.dumps(invalidation("relationship", ["k"] * 20_000)).encode(),
    ]
    for data in hostile:
        check_one(relay, caches, data)
    reasons = relay.stats()["rejected"]
    assert reasons.get("too_large") == 3  # the 10 MB ones, before any parsing
    assert reasons.get("too_deep", 0) + reasons.get("bad_json", 0) >= 3
    assert reasons.get("too_many_keys") == 1
    assert_listener_alive(app, monitor, relay, caches)


def assert_listener_alive(app, monitor, relay, caches) -> None:
    for cache in caches.values():
        cache.update(CONTENT)
    publish(monitor.state(app).client(), invalidation("symbols", ["AAPL"]))
    assert wait_for(lambda: "AAPL" not in caches["symbols"])
    assert relay.running and relay.stats()["connected"]


@pytest.mark.parametrize("count", [300])
def test_fuzz_relay_end_to_end_through_redis(relay_setup, redis_server, count):
    app, monitor, relay, caches = relay_setup
    client = redis_server.client()
    sent: list[bytes] = []

    @fuzz_settings(count)
    @given(raw_payloads)
    def case(data: bytes) -> None:
        sent.append(data)

    case()
    sent += [
        b"[" * 100_000,
        b"\xff" * 10_000_000,
        json.dumps({**invalidation("symbols", ["sp500"]), "pad": "x" * 10_000_000}).encode(),
    ]
    received = relay.stats()["received"]
    for data in sent:
        publish(client, data)
    assert wait_for(
        lambda: relay.stats()["received"] == received + len(sent) and relay.stats()["queued"] == 0,
        timeout=20,
    )
    assert wait_for(lambda: counted(relay) == len(sent), timeout=10)
    # what could have touched a cache did only what a valid message asks: the dicts now hold
    # the content minus every key some valid message removed (or nothing, after a valid clear)
    verdicts = [
        expected_verdict(_loads(data)) if len(data) <= relay.max_bytes else "too_large"
        for data in sent
    ]
    assert relay.stats()["applied"] == verdicts.count(None)
    assert_listener_alive(app, monitor, relay, caches)


def _loads(data: bytes) -> object:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


# --- the dashboard's subscriber ----------------------------------------------------------------


BEAT = {
    "type": "health_check",
    "component": "c",
    "status": "healthy",
    "timestamp": 1.0e9,
    "metrics": {},
    "instance": {"id": "i", "boot_id": "b"},
    "seq": 1,
    "interval_s": 30,
}
ERROR = {
    "type": "application_error",
    "error_id": "e",
    "source": "s",
    "severity": "error",
    "message": "m",
    "timestamp": 1.0e9,
    "context": {},
}


@st.composite
def mutated(draw, valid: dict) -> dict:
    """``valid`` with fields dropped or replaced by anything."""
    message = dict(valid)
    for field in valid:
        choice = draw(st.integers(0, 6))
        if choice == 0:
            del message[field]
        elif choice == 1:
            message[field] = draw(anything)
    return message


monitoring_payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated(BEAT).map(encoded),
    mutated(ERROR).map(encoded),
)


def test_fuzz_subscriber_handlers():
    subscriber = MonitoringSubscriber("memory://fuzz", max_instances=50)
    received: list[dict] = []
    subscriber.subscribe_monitoring(received.append, received.append)

    def total() -> int:
        stats = subscriber.stats()
        return (
            stats["rejected_total"]
            + stats["ignored"]
            + stats["health_received"]
            + stats["errors_received"]
        )

    @fuzz_settings(3_000)
    @given(st.sampled_from([MONITORING, ERRORS]), monitoring_payloads)
    def case(channel: str, data: bytes) -> None:
        def accepted() -> int:
            return subscriber.health_received + subscriber.errors_received

        before, callbacks, accepted_before = total(), len(received), accepted()
        subscriber.handle_message(channel, data)
        assert total() == before + 1  # counted once: rejected, ignored or received
        # a callback runs for exactly the messages accepted
        assert len(received) - callbacks == accepted() - accepted_before
        assert len(subscriber.instances()) <= 50

    case()
    stats = subscriber.stats()
    assert stats["health_received"] > 50 and stats["errors_received"] > 50
    assert stats["rejected_total"] > 500
    assert len(received) == stats["health_received"] + stats["errors_received"]
    for hostile in (b"[" * 100_000, b"\xff" * 2_000_000, b'{"type": "health_check"' * 10):
        subscriber.handle_message(MONITORING, hostile)
        subscriber.handle_message(ERRORS, hostile)
    assert subscriber.stats()["rejected_total"] == stats["rejected_total"] + 6


# --- the fast parser reads what the standard library reads -------------------------------------


def stdlib_reading(raw: bytes) -> object:
    """What ``events.parse`` made of ``raw`` before it used orjson: the reference."""

    def reject(name: str) -> None:
        raise ValueError(name)

    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=reject)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "rejected"
    return data if isinstance(data, dict) else "rejected"


def parse_reading(raw: bytes) -> object:
    try:
        return events.parse(raw, 1 << 20)
    except events.InvalidMessage:
        return "rejected"


# Integers on both sides of 64 bits: orjson reads those past it as floats.
wide_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
documents = st.dictionaries(st.text(max_size=10), wide_values, max_size=6)
EDGE_CASES = [
    b'{"a": 1, "b": 2, "a": 3}',
    b'{"a": -9223372036854775809, "b": 18446744073709551616}',
    b'{"a": 9999999999999999999, "b": -9999999999999999999, "c": 123456789012345678}',
    b'{"id": "0000000000000000000000", "n": 1e400, "m": -0, "z": -0.0}',
    b'{"s": "\\ud800", "t": "\\ud83d\\ude00", "u": "\\u0000"}',
    b'{"a": NaN}',
    b'{"a": "\xed\xa0\x80"}',
    b'\xef\xbb\xbf{"a": 1}',
    b'{"a": 1} x',
    b'{"a": "\t"}',
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 2000 + b"1" + b"}" * 2000,
]


@fuzz_settings(3000)
@given(
    st.one_of(
        documents.map(lambda d: json.dumps(d).encode()),
        documents.map(lambda d: json.dumps(d, ensure_ascii=False, indent=1).encode()),
        st.binary(max_size=64),
        st.sampled_from(EDGE_CASES),
    )
)
def test_parse_reads_what_the_standard_library_reads(raw):
    # repr: 1 and 1.0, 0.0 and -0.0 compare equal but are not the same reading
    assert repr(parse_reading(raw)) == repr(stdlib_reading(raw))
