"""Alerts: once per state change and rate-limited (AlertTracker), delivered by a webhook that
retries and counts (WebhookNotifier against an HTTP server on loopback that fails on demand),
and end to end from real monitors' heartbeats in processes of their own."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import wait_for
from servers import free_port

from flask_tickstock_monitor import MonitoringSubscriber
from flask_tickstock_monitor.alerts import Alert, AlertTracker, redis_claim
from flask_tickstock_monitor.staleness import purgeable
from flask_tickstock_monitor.webhook import WebhookNotifier, slack_payload


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def tracker(**options: Any) -> tuple[AlertTracker, list[Alert], Clock]:
    got: list[Alert] = []
    clock = Clock()
    return AlertTracker(got.append, clock=clock, **options), got, clock


def views(**states: str) -> dict[str, dict[str, Any]]:
    return {
        name: {"state": state, "status": "healthy", "component": "web", "age_s": 75.0,
               "interval_s": 30.0, "host": "h", "pid": 1}
        for name, state in states.items()
    }  # fmt: skip


def group(fingerprint: str = "a1b2c3d4e5f60718", **fields: Any) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint, "message": "ZeroDivisionError: division by zero",
        "error_type": "ZeroDivisionError", "count": 1, "severities": {"error": 1},
        "components": {"app": 1}, "releases": {"1.3.0": 1}, "status": "open",
        "new": False, "regression": False, **fields,
    }  # fmt: skip


# --- AlertTracker ------------------------------------------------------------------------------


def test_an_instance_alerts_once_per_change_worse_at_once_better_after_the_interval():
    alerts, got, clock = tracker(key_interval=60)
    assert alerts.observe_instances(views(a="healthy")) == []  # first sight: the baseline
    assert alerts.observe_instances(views(a="degraded")) == []  # degraded still beats: up
    alerts.observe_instances(views(a="stale"))
    alerts.observe_instances(views(a="stale"))
    clock.now += 10
    alerts.observe_instances(views(a="offline"))  # worse: at once, whatever the interval
    assert [a.kind for a in got] == ["instance_stale", "instance_offline"]
    assert got[1].severity == "critical" and got[1].details["previous"] == "stale"
    assert got[1].text == "[tickstock] Instance a is offline (web, no heartbeat for 75 s)"
    clock.now += 10
    assert alerts.observe_instances(views(a="healthy")) == []  # better: within the interval
    assert alerts.stats()["suppressed"] == 1
    clock.now += 50
    back = alerts.observe_instances(views(a="healthy"))
    assert [a.kind for a in back] == ["instance_back"] and back[0].severity == "info"
    assert alerts.stats()["sent"] == {
        "instance_stale": 1,
        "instance_offline": 1,
        "instance_back": 1,
    }


def test_a_flapping_instance_sends_one_back_per_interval_and_ends_on_the_truth():
    alerts, got, clock = tracker(key_interval=60)
    alerts.observe_instances(views(a="healthy"))
    for state in ["stale", "healthy", "stale", "healthy", "stale", "healthy"]:
        clock.now += 5
        alerts.observe_instances(views(a=state))
        alerts.observe_instances(views(a=state))  # a second look at the same state
    assert [a.kind for a in got] == ["instance_stale"]  # it never left "stale" for long enough
    assert alerts.stats()["suppressed"] == 3  # each recovery held back, not each look at it
    clock.now += 60
    alerts.observe_instances(views(a="healthy"))
    assert [a.kind for a in got] == ["instance_stale", "instance_back"]


def test_an_instance_first_seen_offline_alerts_when_back_and_a_purged_one_is_forgotten():
    alerts, got, clock = tracker(key_interval=0)
    alerts.observe_instances(views(a="offline", b="healthy"))
    alerts.observe_instances(views(a="healthy", b="healthy"))
    assert [(a.kind, a.key) for a in got] == [("instance_back", "instance:a")]
    alerts.observe_instances(views(b="healthy"))  # a purged from the view
    assert alerts.stats()["instances"] == 1
    alerts.observe_instances(views(a="healthy", b="stale", c="stale"))  # a, c: first sight
    assert [(a.kind, a.key) for a in got[1:]] == [("instance_stale", "instance:b")]


def test_notify_false_records_without_alerting():
    alerts, got, _ = tracker()
    alerts.observe_instances(views(a="offline"), notify=False)
    alerts.observe_instances(views(a="offline"))
    alerts.observe_groups([group(new=True), group("b" * 16, regression=True)], notify=False)
    alerts.observe_groups([group(new=True), group("b" * 16, regression=True)])
    assert got == []


def test_a_group_alerts_when_new_once_and_on_each_regression():
    alerts, got, clock = tracker(key_interval=60)
    alerts.observe_group(group(new=True, components={"app": 1, "worker": 2}))
    alerts.observe_group(group(new=True))
    alerts.observe_group(group(regression=True, severities={"critical": 1}))
    alerts.observe_group(group(regression=True))
    assert [a.kind for a in got] == ["group_new", "group_regression"]
    new, regression = got
    assert new.key == "group:a1b2c3d4e5f60718" and new.severity == "warning"
    assert new.text == (
        "[tickstock] New error: ZeroDivisionError in app, worker:"
        " ZeroDivisionError: division by zero (1 events)"
    )
    assert regression.severity == "critical" and regression.details["releases"] == {"1.3.0": 1}
    clock.now += 10
    alerts.observe_group(group(regression=False))  # resolved
    alerts.observe_group(group(regression=True))  # and back within the interval: held
    assert len(got) == 2
    clock.now += 60
    alerts.observe_group(group(regression=False))
    alerts.observe_group(group(regression=True))
    assert [a.kind for a in got] == ["group_new", "group_regression", "group_regression"]


def test_the_global_limit_holds_back_and_sums_up():
    alerts, got, clock = tracker(global_limit=3, global_window=60)
    alerts.observe_groups([group(f"{i:016x}", new=True) for i in range(6)])
    assert [a.kind for a in got] == ["group_new"] * 3
    clock.now += 30
    alerts.observe_instances(views(a="healthy"))
    assert len(got) == 3  # the window is still full
    clock.now += 31
    alerts.observe_instances(views(a="healthy"))  # nothing new, but room for the summary
    assert got[3].kind == "suppressed" and got[3].details == {"count": 3}
    assert got[3].title == "3 alerts held back by the rate limit"
    assert alerts.stats()["suppressed"] == 3


def test_a_failing_callback_is_counted_and_does_not_stop_the_others():
    def on_alert(alert: Alert) -> None:
        if alert.key.endswith("a"):
            raise RuntimeError("webhook down")

    alerts = AlertTracker(on_alert, key_interval=0)
    alerts.observe_instances(views(a="healthy", b="healthy"))
    sent = alerts.observe_instances(views(a="stale", b="stale"))
    assert [a.key for a in sent] == ["instance:b"]
    assert alerts.stats()["callback_errors"] == 1


def test_processes_sharing_redis_send_each_alert_once(redis_server):
    got: list[Alert] = []
    client = redis_server.client()
    trackers = [AlertTracker(got.append, claim=redis_claim(client)) for _ in range(3)]
    for t in trackers:
        t.observe_instances(views(a="healthy"))
    for t in trackers:
        t.observe_instances(views(a="offline"))
        t.observe_group(group(new=True))
    assert sorted(a.kind for a in got) == ["group_new", "instance_offline"]
    assert sum(t.stats()["claimed_elsewhere"] for t in trackers) == 4
    assert client.pttl("tickstock:alerts:instance_offline:instance:a") > 0


def test_the_payload_is_slack_compatible():
    alerts, got, _ = tracker()
    alerts.observe_group(group(new=True))
    payload = json.loads(json.dumps(slack_payload(got[0])))
    assert payload["text"] == got[0].text
    attachment = payload["attachments"][0]
    assert attachment["title"] == "New error: ZeroDivisionError"
    fields = {f["title"]: f["value"] for f in attachment["fields"]}
    assert fields["fingerprint"] == "a1b2c3d4e5f60718" and fields["count"] == "1"
    assert payload["alert"]["kind"] == "group_new"
    assert payload["alert"]["details"]["components"] == {"app": 1}


# --- WebhookNotifier against a server on loopback -------------------------------------------------


class Hook(http.server.ThreadingHTTPServer):
    """Answers ``fail`` POSTs with ``status`` (and ``Retry-After``), then 200; keeps them all."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HookHandler)
        self.fail = 0
        self.status = 503
        self.retry_after: str | None = None
        self.delay = 0.0
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}/hooks/T000/B000/secret"

    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, body in self.received]


class HookHandler(http.server.BaseHTTPRequestHandler):
    server: Hook

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        hook = self.server
        hook.received.append((time.monotonic(), body))
        time.sleep(hook.delay)
        if hook.fail > 0:
            hook.fail -= 1
            self.send_response(hook.status)
            if hook.retry_after is not None:
                self.send_header("Retry-After", hook.retry_after)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def notifiers() -> Iterator[Any]:
    made: list[WebhookNotifier] = []

    def make(url: str, **options: Any) -> WebhookNotifier:
        made.append(WebhookNotifier(url, **options))
        return made[-1]

    yield make
    for notifier in made:
        notifier.close(timeout=1.0)


def an_alert(n: int = 0) -> Alert:
    title = f"Instance w{n} is offline"
    return Alert("instance_offline", f"instance:w{n}", "critical", title,
                 f"[tickstock] {title}", time.time(), {"instance_id": f"w{n}"})  # fmt: skip


def test_a_failed_delivery_is_retried_until_it_gets_through(hook, notifiers):
    hook.fail = 2
    notifier = notifiers(hook.url, retries=3, backoff=0.01)
    assert notifier(an_alert()) is True
    assert notifier.flush(5)
    stats = notifier.stats()
    assert (stats["delivered"], stats["failed"], stats["retried"]) == (1, 0, 2)
    assert stats["last_error"] == "HTTP 503"
    assert stats["url"] == f"http://127.0.0.1:{hook.server_address[1]}/…"  # the path is secret
    assert len(hook.received) == 3
    assert hook.bodies()[-1]["text"] == "[tickstock] Instance w0 is offline"


def test_delivery_gives_up_after_the_retries_and_counts_it(hook, notifiers):
    hook.fail = 10
    notifier = notifiers(hook.url, retries=2, backoff=0.01)
    notifier(an_alert())
    assert notifier.flush(5)
    assert (notifier.stats()["delivered"], notifier.stats()["failed"]) == (0, 1)
    assert len(hook.received) == 3


def test_a_client_error_is_not_retried(hook, notifiers):
    hook.fail, hook.status = 1, 400
    notifier = notifiers(hook.url, retries=3, backoff=0.01)
    notifier(an_alert())
    assert notifier.flush(5)
    assert notifier.stats()["failed"] == 1 and notifier.stats()["retried"] == 0
    assert len(hook.received) == 1


def test_retry_after_is_honoured(hook, notifiers):
    hook.fail, hook.status, hook.retry_after = 1, 429, "1"
    notifier = notifiers(hook.url, retries=1, backoff=0.01)
    notifier(an_alert())
    assert notifier.flush(5)
    assert notifier.stats()["delivered"] == 1
    (first, _), (second, _) = hook.received
    assert second - first >= 0.9


def test_nothing_listening_is_retried_and_counted(notifiers):
    notifier = notifiers(f"http://127.0.0.1:{free_port()}/hook", retries=2, backoff=0.01)
    notifier(an_alert())
    assert notifier.flush(5)
    stats = notifier.stats()
    assert (stats["failed"], stats["retried"]) == (1, 2)
    assert "ConnectionRefusedError" in stats["last_error"]


def test_a_hanging_hook_never_blocks_the_caller_and_the_queue_is_bounded(hook, notifiers):
    hook.delay = 0.5
    notifier = notifiers(hook.url, queue_size=2, retries=0, timeout=5)
    started = time.monotonic()
    results = [notifier(an_alert(n)) for n in range(6)]
    assert time.monotonic() - started < 0.25  # one POST alone takes 0.5 s
    assert wait_for(
        lambda: notifier.stats()["delivered"] + notifier.stats()["dropped_total"] == 6, 10
    )
    assert results.count(False) == notifier.stats()["dropped"]["queue_full"] >= 3
    assert notifier.stats()["delivered"] == results.count(True)


def test_close_counts_what_was_left_and_refuses_more(hook, notifiers):
    hook.delay = 0.3
    notifier = notifiers(hook.url, queue_size=10)
    for n in range(4):
        notifier(an_alert(n))
    assert notifier.close(timeout=0.1) is False
    assert notifier(an_alert()) is False
    stats = notifier.stats()
    assert stats["delivered"] + stats["dropped"]["shutdown"] == 5
    assert stats["dropped"]["shutdown"] >= 3


@pytest.mark.parametrize("url", ["ftp://example.org/x", "hooks.slack.com/services/x", "http://"])
def test_a_webhook_url_must_be_http(url):
    with pytest.raises(ValueError, match="a webhook URL is http:// or https://"):
        WebhookNotifier(url)


# --- end to end: real monitors, a real subscriber, a real webhook -------------------------------


def test_alerts_from_real_heartbeats_reach_the_webhook(redis_server, beaters, hook, notifiers):
    subscriber = MonitoringSubscriber(redis_client=redis_server.client(), default_interval=0.2)
    subscriber.start()
    notifier = notifiers(hook.url, backoff=0.01)
    alerts = AlertTracker(notifier, key_interval=0.5)
    stop = threading.Event()

    def watch() -> None:  # what the subscriber's hook will do: after beats and on a timer
        while not stop.wait(0.05):
            alerts.observe_instances(subscriber.instances())

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        assert subscriber.wait_connected(5)
        victim = beaters("web-1")
        beaters("web-2")
        assert wait_for(lambda: len(subscriber.instances()) == 2, 10)
        watcher.start()
        victim.kill()

        def kinds() -> list[str]:
            return [
                b["alert"]["kind"] for b in hook.bodies() if b["alert"]["key"] == "instance:web-1"
            ]

        assert wait_for(lambda: kinds() == ["instance_stale", "instance_offline"], 10), kinds()
        assert purgeable(subscriber.instances(), offline_ttl=0.0) == ["web-1"]
        assert purgeable(subscriber.instances(), offline_ttl=3600.0) == []
        beaters("web-1")  # the same instance id again: back
        assert wait_for(
            lambda: kinds() == ["instance_stale", "instance_offline", "instance_back"], 10
        )
        assert all(b["alert"]["key"] == "instance:web-1" for b in hook.bodies())
        assert notifier.flush(5) and notifier.stats()["failed"] == 0
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join(2)
        subscriber.stop()
