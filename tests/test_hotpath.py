"""The small pieces the error path runs for every event, made cheap: each still does its job."""

from __future__ import annotations

import logging
import threading

from flask_tickstock_monitor._util import mark_monitoring_thread, on_monitoring_thread
from flask_tickstock_monitor.echo import RecentIds


def test_recent_ids_keep_the_last_size_and_at_most_twice_that():
    recent = RecentIds(size=100)
    ids = [f"id-{n}" for n in range(1_000)]
    for n, error_id in enumerate(ids, 1):
        recent.add(error_id)
        assert all(i in recent for i in ids[max(0, n - 100) : n])  # the last 100, always
        assert len(recent) <= 200
    assert "id-0" not in recent and "id-799" not in recent
    recent.add("id-999")  # again: no double count
    assert len(recent) <= 200


def test_recent_ids_added_from_two_threads_at_once_stay_bounded():
    recent = RecentIds(size=64)

    def add(prefix: str) -> None:
        for n in range(20_000):
            recent.add(f"{prefix}{n}")

    threads = [threading.Thread(target=add, args=(p,)) for p in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(recent) <= 128  # turning over at once on two threads never lets it grow
    for n in range(64):  # and it goes on keeping the newest
        recent.add(f"c{n}")
    assert all(f"c{n}" in recent for n in range(64))


def test_the_monitoring_mark_is_per_thread():
    seen: dict[str, bool] = {}

    def ours() -> None:
        mark_monitoring_thread()
        seen["ours"] = on_monitoring_thread()

        def child() -> None:  # a thread ours starts is not ours
            seen["child"] = on_monitoring_thread()

        t = threading.Thread(target=child)
        t.start()
        t.join()

    def other() -> None:
        seen["other"] = on_monitoring_thread()

    for target in (ours, other):
        t = threading.Thread(target=target)
        t.start()
        t.join()
    assert seen == {"ours": True, "child": False, "other": False}
    assert on_monitoring_thread() is False  # this (test) thread


def test_the_log_handler_keeps_its_filters(make_app):
    app, monitor = make_app("redis://127.0.0.1:9/0", TICKSTOCK_MONITOR_THROTTLE_LIMIT=0)
    capture = monitor.state(app).capture
    queued: list = []
    capture.sinks.append(queued.append)  # each error item, as it is queued
    capture.log_handler.addFilter(lambda record: "keep" in record.getMessage())
    with app.app_context():
        logging.getLogger("hotpath").error("drop this")
        logging.getLogger("hotpath").error("keep this")
    assert [item.resolve()["message"] for item in queued] == ["keep this"]


def test_an_unhandled_error_is_one_event_with_its_request(make_app):
    app, monitor = make_app("redis://127.0.0.1:9/0", TICKSTOCK_MONITOR_THROTTLE_LIMIT=0)

    @app.route("/boom")
    def boom():
        raise ZeroDivisionError("boom")

    queued: list = []
    monitor.state(app).capture.sinks.append(queued.append)
    assert app.test_client().get("/boom").status_code == 500
    assert len(queued) == 1
    event = queued[0].resolve()
    assert event["origin"] == "unhandled" and event["error_type"] == "ZeroDivisionError"
    assert event["context"]["endpoint"] == "boom" and event["context"]["path"] == "/boom"


def test_a_full_queue_drops_a_requests_error_before_the_capture_once(make_app, monkeypatch):
    from flask_tickstock_monitor import capture

    extracted = []
    monkeypatch.setattr(capture, "extract_exception", extracted.append)
    app, monitor = make_app(
        "redis://127.0.0.1:9/0", TICKSTOCK_MONITOR_THROTTLE_LIMIT=0, TICKSTOCK_MONITOR_QUEUE_SIZE=2
    )

    @app.route("/boom")
    def boom():
        raise ZeroDivisionError("boom")

    publisher = monitor.state(app).publisher
    publisher._queue.extend([("held",), ("held",)])  # full, and nobody takes from it
    publisher._thread = _Idle()
    try:
        client = app.test_client()
        for _ in range(3):
            assert client.get("/boom").status_code == 500
        # one drop a request, though the log handler, the hook and the request's end all saw it
        assert publisher.dropped == {"queue_full": 3}
        assert len(publisher._queue) == 2
        assert extracted == []  # no traceback copied for an event that cannot be queued
    finally:
        publisher._queue.clear()
        publisher._thread = None


class _Idle:
    def is_alive(self) -> bool:
        return True

    def join(self, timeout=None) -> None:
        pass
