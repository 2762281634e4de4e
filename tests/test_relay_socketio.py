"""Invalidations and monitoring events reach browsers over Socket.IO, once per browser."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import socketio
from flask import Flask, request
from flask_socketio import SocketIO
from relayutil import invalidation, publish, relay_of, run_script, serving, wait_for
from servers import RedisServer

from flask_tickstock_monitor import TickStockMonitor

MONITOR_NS = "/tickstock-monitor"
EVENTS = ("cache_invalidated", "tickstock_health", "tickstock_error", "probe")


class Browser:
    """A real python-socketio client that records every event it receives."""

    def __init__(self, url: str, namespaces: list[str], transport: str = "polling"):
        self.events: list[tuple[str, str, Any]] = []
        self._lock = threading.Lock()
        self.client = socketio.Client(reconnection=False)
        for namespace in namespaces:
            for event in EVENTS:
                self.client.on(event, self._recorder(namespace, event), namespace=namespace)
        self.client.connect(url, namespaces=namespaces, transports=[transport], wait_timeout=5)

    def _recorder(self, namespace: str, event: str):
        def record(data: Any = None) -> None:
            with self._lock:
                self.events.append((namespace, event, data))

        return record

    def received(self, event: str, namespace: str = "/") -> list[Any]:
        with self._lock:
            return [d for ns, e, d in self.events if e == event and ns == namespace]

    def close(self) -> None:
        self.client.disconnect()


@pytest.fixture(scope="session")
def queue_server() -> Iterator[RedisServer]:
    """The Socket.IO message queue's server. It outlives every test: Flask-SocketIO's queue
    listener threads never stop, and once their server is gone they log an ERROR every few
    seconds, which other tests' monitors would capture."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def socket_apps(redis_server) -> Iterator[Any]:
    """``make(message_queue=None, **config)`` → (app, monitor, socketio, base URL), served."""
    stack = ExitStack()
    made: list[tuple[Flask, TickStockMonitor, SocketIO]] = []

    def make(message_queue: str | None = None, **config: Any):
        app = Flask(f"socket_app{len(made)}")
        app.config.update(
            TICKSTOCK_MONITOR_REDIS_URL=redis_server.url,
            TICKSTOCK_MONITOR_INSTANCE_ID=f"worker-{len(made)}",
            **config,
        )
        sio = SocketIO(app, async_mode="threading", message_queue=message_queue)
        monitor = TickStockMonitor(app)
        made.append((app, monitor, sio))
        url = stack.enter_context(serving(app))
        assert relay_of(app).wait_connected()
        return app, monitor, sio, url

    yield make
    for app, monitor, _ in made:
        monitor.shutdown(timeout=1.0, app=app)
    stack.close()


@pytest.fixture
def browsers() -> Iterator[Any]:
    opened: list[Browser] = []

    def open_browser(url: str, namespaces: list[str] | None = None, **kw: Any) -> Browser:
        browser = Browser(url, namespaces or ["/"], **kw)
        opened.append(browser)
        return browser

    yield open_browser
    for browser in opened:
        browser.close()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_browser_receives_cache_invalidated(socket_apps, browsers, redis_server, transport):
    app, monitor, sio, url = socket_apps()
    cache = {"nasdaq100": 1}
    monitor.register_cache("relationship", cache, app=app)
    browser = browsers(url, transport=transport)
    message = invalidation(keys=["nasdaq100"], scope="universe", extra="not forwarded")
    publish(redis_server.client(), message)
    assert wait_for(lambda: browser.received("cache_invalidated"))
    assert cache == {}
    del message["extra"]
    assert browser.received("cache_invalidated") == [
        {**message, "caches": ["relationship"], "local": False}
    ]


def test_namespace_is_configurable(socket_apps, browsers, redis_server):
    app, monitor, sio, url = socket_apps(TICKSTOCK_MONITOR_SOCKETIO_NAMESPACE="/caches")
    monitor.register_cache("relationship", {}, app=app)
    sio.on_event("connect", lambda auth=None: True, namespace="/caches")
    browser = browsers(url, ["/", "/caches"])
    monitor.invalidate("relationship", ["a"], app=app)
    assert wait_for(lambda: browser.received("cache_invalidated", "/caches"))
    assert browser.received("cache_invalidated", "/caches")[0]["local"] is True
    time.sleep(0.2)
    assert browser.received("cache_invalidated", "/") == []


def test_each_browser_gets_each_event_once_with_two_workers(
    socket_apps, browsers, redis_server, queue_server
):
    queue_url = queue_server.url
    app_a, monitor_a, sio_a, url_a = socket_apps(message_queue=queue_url)
    app_b, monitor_b, sio_b, url_b = socket_apps(message_queue=queue_url)
    for app, monitor in ((app_a, monitor_a), (app_b, monitor_b)):
        monitor.register_cache("relationship", {"a": 1}, app=app)
    on_a = browsers(url_a)
    on_b = browsers(url_b)
    # The queue does fan out: a plain emit from each worker reaches each browser twice.
    sio_a.emit("probe", {"n": 1})
    sio_b.emit("probe", {"n": 1})
    assert wait_for(lambda: len(on_a.received("probe")) == 2 and len(on_b.received("probe")) == 2)

    publish(redis_server.client(), invalidation(keys=["a"]))
    monitor_b.invalidate("relationship", ["b"], app=app_b)  # applied on b, heard by a
    assert wait_for(
        lambda: (
            len(on_a.received("cache_invalidated")) >= 2
            and len(on_b.received("cache_invalidated")) >= 2
        )
    )
    time.sleep(0.5)  # a duplicate through the queue would arrive within this
    for browser in (on_a, on_b):
        got = browser.received("cache_invalidated")
        assert [m["keys"] for m in got] in ([["a"], ["b"]], [["b"], ["a"]])


def test_health_and_errors_relayed_to_monitor_namespace(socket_apps, browsers, redis_server):
    app, monitor, sio, url = socket_apps()
    browser = browsers(url, [MONITOR_NS])
    client = redis_server.client()
    health = {
        "type": "health_check",
        "component": "svc",
        "status": "healthy",
        "timestamp": time.time(),
        "metrics": {"symbols_tracked": 70},
    }
    error = {
        "type": "application_error",
        "error_id": "e1",
        "source": "TickStockAppV2",
        "severity": "error",
        "message": "<img src=x onerror=alert(1)>",
        "timestamp": time.time(),
    }
    publish(client, health, "tickstock:monitoring")
    publish(client, {"type": "health_check"}, "tickstock:monitoring")  # rejected
    publish(client, error, "tickstock:errors")
    assert wait_for(lambda: browser.received("tickstock_error", MONITOR_NS))
    assert browser.received("tickstock_health", MONITOR_NS) == [health]
    assert browser.received("tickstock_error", MONITOR_NS) == [error]
    assert monitor.stats(app)["relay"]["rejected"] == {"missing_field": 1}


def test_monitor_namespace_guard_refuses(socket_apps, redis_server):
    app, monitor, sio, url = socket_apps()
    asked: list[str] = []

    def guard() -> bool:
        asked.append(request.path)
        return False

    relay_of(app).broadcaster.connect_guard = guard
    client = socketio.Client(reconnection=False)
    refusals: list[Any] = []
    client.on("connect_error", refusals.append, namespace=MONITOR_NS)
    with pytest.raises(socketio.exceptions.ConnectionError, match="failed to connect"):
        client.connect(url, namespaces=[MONITOR_NS], transports=["polling"], wait_timeout=0.5)
    client.disconnect()
    assert asked == ["/socket.io/"]  # asked in the request context of the handshake
    assert refusals == [{"message": "Connection rejected by server"}]


def test_without_socketio_nothing_is_emitted(make_app, redis_server):
    app, monitor = make_app(redis_server.url)
    relay = relay_of(app)
    monitor.register_cache("relationship", {"a": 1}, app=app)
    assert relay.wait_connected()
    publish(redis_server.client(), invalidation(keys=["a"]))
    assert wait_for(lambda: relay.applied == 1)
    assert relay.stats()["socketio"] == {
        "attached": False,
        "namespace": "/",
        "monitor_namespace": MONITOR_NS,
        "emitted": 0,
        "failed": 0,
    }
    # only the invalidation channel is subscribed without Socket.IO
    assert redis_server.client().pubsub_numsub("tickstock:errors") == [(b"tickstock:errors", 0)]


EVENTLET_SCRIPT = """
import eventlet
eventlet.monkey_patch()
import json, sys, time
import redis, socketio as sio_client
from flask import Flask, request
from flask_socketio import SocketIO
from flask_tickstock_monitor import TickStockMonitor

app = Flask("eventlet_socket_app")
app.config["TICKSTOCK_MONITOR_REDIS_URL"] = sys.argv[1]
sio = SocketIO(app, async_mode="eventlet", message_queue=sys.argv[1])
monitor = TickStockMonitor(app)
monitor.register_cache("relationship", {"a": 1}, app=app)
listener = eventlet.listen(("127.0.0.1", 0))
port = listener.getsockname()[1]
eventlet.spawn(eventlet.wsgi.server, listener, app, log_output=False)
assert app.extensions["tickstock_monitor"].planes["relay"].wait_connected(5)
got = []
client = sio_client.Client(reconnection=False)
client.on("cache_invalidated", got.append)
client.connect(f"http://127.0.0.1:{port}", transports=["websocket"], wait_timeout=5)
redis.Redis.from_url(sys.argv[1]).publish("tickstock:cache:invalidation", json.dumps({
    "type": "cache_invalidation", "cache": "relationship", "action": "invalidate",
    "keys": ["a"], "timestamp": time.time(), "invalidation_id": "i1"}))
deadline = time.monotonic() + 5
while not got and time.monotonic() < deadline:
    eventlet.sleep(0.01)
eventlet.sleep(0.3)
print(json.dumps([m["invalidation_id"] for m in got]))
client.disconnect()
monitor.shutdown(app=app)
"""


def test_broadcast_under_eventlet(redis_server):
    assert run_script(EVENTLET_SCRIPT, redis_server.url) == ["i1"]
