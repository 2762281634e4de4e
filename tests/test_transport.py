"""The transport under the planes: never blocking the caller, counting every loss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from servers import free_port

from flask_tickstock_monitor import MonitoringPublisher
from flask_tickstock_monitor.transport import Outgoing, Publisher, Subscription, connect

CHANNEL = "tickstock:errors"


def erroring_app(make_app, url, **config):
    app, monitor = make_app(url, **config)

    @app.route("/boom")
    def boom():
        raise ValueError("boom")

    return app, monitor


def timed_get(client, path):
    started = time.perf_counter()
    response = client.get(path)
    return response, time.perf_counter() - started


def test_redis_refusing_connections(make_app, frozen_heap):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app, monitor = erroring_app(make_app, url)
    client = app.test_client()
    slowest = 0.0
    for _ in range(20):
        response, elapsed = timed_get(client, "/boom")
        assert response.status_code == 500
        slowest = max(slowest, elapsed)
    assert slowest < 0.1  # the request never waits on Redis (a connect attempt would)
    monitor.flush(1.0, app=app)
    stats = monitor.stats(app)
    assert stats["published"] == 0
    assert stats["connected"] is False
    assert "Connection" in stats["last_error"]
    # every event is accounted for: failed while the breaker tripped, or still queued for later
    assert (
        stats["dropped"].get("publish_failed", 0)
        + stats["queued"]
        + stats["dropped"].get("throttled", 0)
        == 20
    )


def test_redis_paused_requests_stay_fast_and_loss_is_counted(redis_server, make_app, frozen_heap):
    app, monitor = erroring_app(make_app, redis_server.url, TICKSTOCK_MONITOR_THROTTLE_LIMIT=0)
    client = app.test_client()
    client.get("/boom")
    assert monitor.flush(2.0, app=app)
    assert monitor.stats(app)["published"] == 1
    redis_server.pause()
    try:
        slowest = 0.0
        for _ in range(30):
            response, elapsed = timed_get(client, "/boom")
            assert response.status_code == 500
            slowest = max(slowest, elapsed)
        assert slowest < 0.25  # a request that waited on Redis would take the 0.5 s socket timeout
        deadline = time.monotonic() + 5
        while not monitor.stats(app)["breaker_open"] and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = monitor.stats(app)
        assert stats["breaker_open"] is True
        assert "Timeout" in stats["last_error"]
        assert stats["published"] + stats["dropped_total"] + stats["queued"] == 31
    finally:
        redis_server.resume()
    # the breaker probes after a jittered backoff (at most 7.5 s), with or without events
    deadline = time.monotonic() + 15
    while monitor.stats(app)["breaker_open"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert monitor.flush(5.0, app=app)
    stats = monitor.stats(app)
    assert stats["breaker_open"] is False, stats
    assert stats["connected"] is True
    # what waited in the queue went out once Redis was back; what was in flight is counted
    assert stats["published"] + stats["dropped"].get("publish_failed", 0) == 31
    client.get("/boom")
    assert monitor.flush(2.0, app=app)
    assert monitor.stats(app)["published"] == stats["published"] + 1


def test_queue_full_drops_are_counted_exactly(make_app):
    url = f"redis://127.0.0.1:{free_port()}/0"
    app, monitor = make_app(url, TICKSTOCK_MONITOR_QUEUE_SIZE=5, TICKSTOCK_MONITOR_THROTTLE_LIMIT=0)
    dropped = []
    from flask_tickstock_monitor.signals import event_dropped

    def on_drop(sender, reason, count):
        dropped.append((sender, reason, count))

    with event_dropped.connected_to(on_drop, app), app.app_context():
        ids = [monitor.publish_error(f"e{i}") for i in range(100)]
    accepted = [i for i in ids if i]
    stats = monitor.stats(app)
    assert stats["dropped"]["queue_full"] == 100 - len(accepted)
    assert len(accepted) >= 5
    # the signal says the same, with the real app as sender (the publisher thread may also be
    # counting connection failures meanwhile: nothing listens on that port)
    assert sum(count for _, reason, count in dropped if reason == "queue_full") == 100 - len(
        accepted
    )
    assert all(sender is app for sender, _, _ in dropped)


def test_publishing_resumes_after_a_restart(redis_server, make_app, record_channels):
    app, monitor = make_app(redis_server.url)
    port = redis_server.port
    redis_server.kill()
    with app.app_context():
        monitor.publish_error("while down")
    time.sleep(0.3)
    redis_server.start()
    assert redis_server.port == port
    recorder = record_channels(redis_server.client(), CHANNEL)
    with app.app_context():
        monitor.publish_error("after restart")
    assert monitor.flush(5.0, app=app)
    messages = [e["message"] for e in recorder.wait_count(CHANNEL, 1)]
    assert "after restart" in messages
    assert monitor.stats(app)["breaker_open"] is False


def test_publisher_batches_in_order(redis_server, record_channels):
    client = redis_server.client()
    recorder = record_channels(redis_server.client(), "bench")
    publisher = Publisher(lambda: client, batch_size=64)
    for i in range(1000):
        assert publisher.submit(Outgoing("bench", payload={"i": i}))
    assert publisher.flush(5.0)
    got = recorder.wait_count("bench", 1000)
    assert [m["i"] for m in got] == list(range(1000))
    assert publisher.stats()["published"] == 1000
    publisher.close()


def test_a_payload_that_cannot_be_built_is_counted(redis_server):
    client = redis_server.client()
    publisher = Publisher(lambda: client)

    def broken():
        raise KeyError("missing")

    publisher.submit(Outgoing("x", build=broken))
    publisher.submit(Outgoing("x", payload={"ok": 1}))
    assert publisher.flush(2.0)
    stats = publisher.stats()
    assert stats["dropped"] == {"format_error": 1}
    assert stats["published"] == 1
    publisher.close()


def test_close_counts_what_could_not_be_sent(make_app):
    url = f"redis://127.0.0.1:{free_port()}/0"
    app, monitor = make_app(url, TICKSTOCK_MONITOR_THROTTLE_LIMIT=0)
    with app.app_context():
        for i in range(10):
            monitor.publish_error(f"e{i}")
    assert monitor.shutdown(timeout=0.3, app=app) is False
    stats = monitor.stats(app)
    assert stats["queued"] == 0
    assert stats["dropped_total"] == 10
    with app.app_context():
        assert monitor.publish_error("after shutdown") is None


def test_queued_events_are_flushed_at_interpreter_exit(redis_server, record_channels):
    recorder = record_channels(redis_server.client(), CHANNEL)
    script = textwrap.dedent(f"""
        from flask import Flask
        from flask_tickstock_monitor import TickStockMonitor
        app = Flask("exiting")
        app.config["TICKSTOCK_MONITOR_REDIS_URL"] = "{redis_server.url}"
        app.config["TICKSTOCK_MONITOR_THROTTLE_LIMIT"] = 0
        monitor = TickStockMonitor(app)
        with app.app_context():
            for i in range(500):
                monitor.publish_error(f"exit {{i}}")
    """)
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", script], check=True, timeout=10)
    assert time.monotonic() - started < 5
    assert len(recorder.wait_count(CHANNEL, 500)) == 500


def test_exit_does_not_hang_when_redis_is_hung(redis_server):
    redis_server.pause()
    script = textwrap.dedent(f"""
        from flask import Flask
        from flask_tickstock_monitor import TickStockMonitor
        app = Flask("exiting")
        app.config["TICKSTOCK_MONITOR_REDIS_URL"] = "{redis_server.url}"
        monitor = TickStockMonitor(app)
        with app.app_context():
            monitor.publish_error("never delivered")
    """)
    started = time.monotonic()
    try:
        subprocess.run([sys.executable, "-c", script], check=True, timeout=10)
    finally:
        redis_server.resume()
    assert time.monotonic() - started < 4.5  # interpreter start + at most the 2 s flush budget


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_publishes_with_its_own_thread(redis_server, make_app, record_channels):
    app, monitor = make_app(redis_server.url)
    recorder = record_channels(redis_server.client(), CHANNEL)
    with app.app_context():
        monitor.publish_error("parent")
    assert monitor.flush(2.0, app=app)
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            with app.app_context():
                monitor.publish_error("child")
            code = 0 if monitor.flush(2.0, app=app) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    events = recorder.wait_count(CHANNEL, 2)
    assert [e["message"] for e in events] == ["parent", "child"]
    assert events[0]["instance_id"] != events[1]["instance_id"]


def test_memory_url_is_an_embedded_server():
    first = connect("memory://shared-test")
    second = connect("memory://shared-test")
    other = connect("memory://other-test")
    first.set("k", "v")
    assert second.get("k") == b"v"
    assert other.get("k") is None


def test_monitoring_publisher_keeps_the_seed_card_api(redis_server, record_channels):
    recorder = record_channels(redis_server.client(), "tickstock:monitoring", CHANNEL)
    publisher = MonitoringPublisher(redis_server.url)
    publisher.publish_health_metric(
        {
            "component": "test_component",
            "status": "healthy",
            "timestamp": 1697385600.123,
            "metrics": {"test_value": 100},
        }
    )
    assert publisher.metrics_published == 1
    publisher.publish_error(
        {
            "severity": "error",
            "component": "test_component",
            "message": "Test error",
            "timestamp": 1697385600.5,
            "context": {"detail": "test", "password": "p"},
        }
    )
    assert publisher.flush(2.0)
    (health,) = recorder.wait_count("tickstock:monitoring", 1)
    assert health == {
        "type": "health_check",
        "component": "test_component",
        "status": "healthy",
        "timestamp": 1697385600.123,
        "metrics": {"test_value": 100},
    }
    (error,) = recorder.wait_count(CHANNEL, 1)
    assert error["type"] == "application_error"
    assert error["source"] == "TickStockAppV2"  # what TickStockAppV2's ErrorSubscriber requires
    assert error["context"] == {"detail": "test", "password": "[scrubbed]"}
    assert {"error_id", "source", "severity", "message", "timestamp"} <= set(error)
    assert publisher.stats()["published"] == 2
    with pytest.raises(ValueError, match="missing required field"):
        publisher.publish_health_metric({"status": "healthy"})
    with pytest.raises(ValueError, match="status must be one of"):
        publisher.publish_health_metric({"component": "c", "status": "fine"})
    publisher.close()


def test_subscription_reconnects_and_resubscribes(redis_server):
    received, connects = [], []
    client = connect(redis_server.url, socket_timeout=0.5)
    sub = Subscription(
        lambda: client,
        ["a", "b"],
        lambda ch, data: received.append((ch, data)),
        on_connect=connects.append,
        backoff_base=0.05,
        backoff_cap=0.2,
    ).start()
    try:
        assert sub.wait_connected(5)
        redis_server.client().publish("a", "1")
        redis_server.restart()
        deadline = time.monotonic() + 5
        while connects != [True, False] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert connects == [True, False]
        assert sub.wait_connected(5)
        redis_server.client().publish("b", "2")
        deadline = time.monotonic() + 5
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert received == [("a", b"1"), ("b", b"2")]
        assert sub.reconnects == 1
    finally:
        sub.stop()


def test_subscription_on_the_embedded_server():
    client = connect("memory://subscription-test")
    received = []
    sub = Subscription(lambda: client, ["a"], lambda ch, data: received.append((ch, data)))
    sub.start()
    try:
        assert sub.wait_connected(5)
        client.publish("a", "1")
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        assert received == [("a", b"1")]
        assert sub.connects == 1 and sub.last_error is None
    finally:
        sub.stop()


def test_subscription_detects_a_half_open_connection(redis_server):
    client = connect(redis_server.url, socket_timeout=0.5)
    sub = Subscription(
        lambda: client,
        ["a"],
        lambda ch, data: None,
        probe_interval=0.2,
        probe_timeout=0.3,
        backoff_base=0.05,
    ).start()
    try:
        assert sub.wait_connected(5)
        redis_server.pause()
        deadline = time.monotonic() + 3
        while sub.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sub.connected is False
        assert "liveness probe" in (sub.last_error or "") or "Timeout" in (sub.last_error or "")
        redis_server.resume()
        assert sub.wait_connected(5)
    finally:
        if redis_server.paused:
            redis_server.resume()
        sub.stop()


def test_json_only_nothing_is_unpickled(redis_server, record_channels):
    class Weird:
        def __repr__(self):
            return "<weird>"

    recorder = record_channels(redis_server.client(), "x")
    publisher = Publisher(lambda: redis_server.client())
    publisher.submit(Outgoing("x", payload={"obj": Weird()}))
    assert publisher.flush(2.0)
    assert recorder.wait_count("x", 1) == [{"obj": "<weird>"}]
    assert json.loads(recorder.raw[0][1]) == {"obj": "<weird>"}
    publisher.close()


def test_an_idle_publisher_keeps_probing_while_its_breaker_is_open(redis_server):
    client = connect(redis_server.url, socket_timeout=0.5)
    publisher = Publisher(lambda: client)
    try:
        redis_server.kill()
        publisher.submit(Outgoing("x", payload={"lost": True}))
        deadline = time.monotonic() + 5
        while not publisher.stats()["breaker_open"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert publisher.stats()["breaker_open"] is True
        assert publisher.queued == 0  # nothing left to send: only a probe can notice Redis
        redis_server.start()
        deadline = time.monotonic() + 10
        while not publisher.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert publisher.connected is True
        assert publisher.stats()["dropped"] == {"publish_failed": 1}
    finally:
        publisher.close()
        client.close()


def test_a_busy_publisher_lingers_but_urgent_messages_do_not_wait(redis_server, record_channels):
    recorder = record_channels(redis_server.client(), "x")
    client = connect(redis_server.url, socket_timeout=0.5)
    publisher = Publisher(lambda: client, linger=1.0)
    try:
        started = time.monotonic()
        publisher.submit(Outgoing("x", payload={"n": 1}))  # after a quiet spell: at once
        recorder.wait_count("x", 1)
        assert time.monotonic() - started < 0.5
        # busy now: the next event waits for company, up to the linger
        publisher.submit(Outgoing("x", payload={"n": 2}))
        assert not recorder.wait(lambda r: len(r.on("x")) >= 2, timeout=0.3)
        # an urgent one cuts the wait short and takes the waiting event along
        publisher.submit(Outgoing("x", payload={"n": 3}, urgent=True))
        assert [m["n"] for m in recorder.wait_count("x", 3, timeout=0.5)] == [1, 2, 3]
        assert time.monotonic() - started < 0.95
    finally:
        publisher.close()


def test_in_a_busy_spell_queueing_wakes_no_thread(redis_server, record_channels):
    # Waking a blocked thread is a system call on the thread that queues (a request thread);
    # within ten lingers of a send the publisher looks at the queue each linger instead.
    recorder = record_channels(redis_server.client(), "x")
    client = connect(redis_server.url, socket_timeout=0.5)
    linger = 0.3
    publisher = Publisher(lambda: client, linger=linger)
    try:
        started = time.monotonic()
        publisher.submit(Outgoing("x", payload={"n": 1}))  # after a quiet spell: at once
        recorder.wait_count("x", 1)
        assert time.monotonic() - started < linger
        wake = publisher._wake
        wakes = []
        real_set = wake.set
        wake.set = lambda: (wakes.append(1), real_set())[1]
        sent = time.monotonic()
        for n in (2, 3, 4):
            publisher.submit(Outgoing("x", payload={"n": n}))
        assert [m["n"] for m in recorder.wait_count("x", 4, timeout=3 * linger)] == [1, 2, 3, 4]
        assert time.monotonic() - sent < 3 * linger
        assert wakes == []
        # the spell ends ten lingers after the last send: then an event is sent at once again
        time.sleep(10 * linger + 0.5)
        started = time.monotonic()
        publisher.submit(Outgoing("x", payload={"n": 5}))
        recorder.wait_count("x", 5)
        assert time.monotonic() - started < linger
        assert wakes == [1]
    finally:
        publisher.close()


def test_compact_items_are_built_by_their_builder_in_order(redis_server, record_channels):
    client = redis_server.client()
    recorder = record_channels(redis_server.client(), "lane")
    told: list[list[tuple[str, dict]]] = []
    publisher = Publisher(lambda: client, batch_size=64, on_published=told.append)
    publisher.compact("probe", "lane", lambda n, word: {"n": n, "word": word})
    for i in range(200):
        # tuples and Outgoing items share the one queue and keep their order
        item = (i, "compact") if i % 2 else Outgoing("lane", payload={"n": i, "word": "item"})
        assert publisher.submit(item)
    assert publisher.flush(5.0)
    got = recorder.wait_count("lane", 200)
    assert [(m["n"], m["word"]) for m in got] == [
        (i, "compact" if i % 2 else "item") for i in range(200)
    ]
    reported = [pair for batch in told for pair in batch]
    assert reported[:2] == [
        ("event", {"n": 0, "word": "item"}),
        ("probe", {"n": 1, "word": "compact"}),
    ]
    assert len(reported) == 200
    publisher.close()


def test_a_tuple_without_a_compact_path_is_a_counted_format_error(redis_server):
    client = redis_server.client()
    publisher = Publisher(lambda: client)
    publisher.submit((1, 2))
    publisher.submit(Outgoing("x", payload={"ok": 1}))
    assert publisher.flush(2.0)
    assert publisher.stats()["dropped"] == {"format_error": 1}
    assert publisher.stats()["published"] == 1
    publisher.close()


def test_nobody_heard_means_on_published_is_not_called(redis_server, record_channels):
    client = redis_server.client()
    recorder = record_channels(redis_server.client(), "x")
    listening = [False]
    told: list[list[tuple[str, dict]]] = []
    publisher = Publisher(lambda: client, on_published=told.append, heard=lambda: listening[0])
    publisher.submit(Outgoing("x", payload={"n": 1}))
    assert publisher.flush(2.0)
    recorder.wait_count("x", 1)
    assert told == []
    listening[0] = True
    publisher.submit(Outgoing("x", payload={"n": 2}, kind="health"))
    assert publisher.flush(2.0)
    assert told == [[("health", {"n": 2})]]
    publisher.close()
