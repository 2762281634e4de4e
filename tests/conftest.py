from __future__ import annotations

import gc
import json
import os
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from servers import RedisServer

from flask_tickstock_monitor import TickStockMonitor
from flask_tickstock_monitor.transport import clients


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; its last result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def quiet(recorder: Any, channel: str, silence: float = 0.7, timeout: float = 15.0) -> list:
    """The messages a recorder has on ``channel`` once none arrived for ``silence`` seconds."""
    deadline = time.monotonic() + timeout
    count, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(recorder.on(channel))
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= silence:
            break
        time.sleep(0.02)
    return recorder.on(channel)  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def collect_garbage_after_the_test() -> Iterator[None]:
    """With ``TICKSTOCK_TEST_COLLECT=1``: a full collection after every test (after its other
    fixtures are torn down), a ResourceWarning it raises failing this test, so a socket or file
    left for the collector fails the test that left it, not whichever later test the collector
    happens to run in. Off by default: late in a run the heap is large, and the collections
    cost about a quarter of the suite's time (measured: 404 s of a 1611 s run, 625 of them)."""
    yield
    if not os.environ.get("TICKSTOCK_TEST_COLLECT"):
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    if leaks:
        pytest.fail(
            "left for the garbage collector:\n"
            + "\n".join(_with_origin(w.message, w.source) for w in leaks),
            pytrace=False,
        )


def _with_origin(message: Warning | str, source: Any) -> str:
    """The warning, and where its object was made when tracemalloc traces
    (``PYTHONTRACEMALLOC=20``)."""
    origin = tracemalloc.get_object_traceback(source) if source is not None else None
    return f"{message}" + ("\n" + "\n".join(origin.format()) if origin is not None else "")


@pytest.fixture(autouse=True)
def close_clients_made_in_the_test(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every Redis client made by ``clients.connect_redis`` while a test runs (by the test, or by a
    subscription's factory) is closed after it. Left to the garbage collector, a socket may be
    finalised before the connection that would close it: a ResourceWarning, which the suite's
    warning filter turns into an error in whichever later test happens to collect."""
    made: list[Any] = []
    connect = clients.connect_redis

    def connect_and_remember(url: str, **options: Any) -> Any:
        client = connect(url, **options)
        made.append(client)
        return client

    connect_and_remember.unremembered = connect  # type: ignore[attr-defined]  # for a test that drops one
    monkeypatch.setattr(clients, "connect_redis", connect_and_remember)
    yield
    for client in made:
        try:
            clients.close(client)
        except Exception:  # already closed with its monitor, or its servers are gone
            pass


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """For tests that time single requests: late in a long run this process's heap is large,
    and one full collection of it can stall any request for a few hundred ms. Freeze what
    exists, so only what the test itself allocates is ever collected while it runs."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own: kill it, pause it, restart it."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_redis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The TickStockAppV2 fallbacks read the environment: tests decide it themselves.
    for name in (
        "REDIS_URL",
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_DB",
        "REDIS_PASSWORD",
        "MONITORING_ENABLED",
        "ERROR_CHANNEL_ENABLED",
        "HEALTH_CHECK_INTERVAL",
        "REDIS_ERROR_CHANNEL",
    ):
        monkeypatch.delenv(name, raising=False)


class ChannelRecorder:
    """Subscribes to channels with plain redis-py and keeps every message, decoded from JSON."""

    def __init__(self, client: Any, *channels: str):
        self.client = client  # a dropped client closes its pool, and the pubsub's socket with it
        self.error: Exception | None = None
        self.pubsub = client.pubsub()
        self.pubsub.subscribe(*channels)
        self.messages: list[tuple[str, Any]] = []
        self.raw: list[tuple[str, bytes]] = []
        self._stop = False
        # wait for the subscribe confirmations so nothing published next is missed
        confirmed = 0
        deadline = time.monotonic() + 5
        while confirmed < len(channels) and time.monotonic() < deadline:
            msg = self.pubsub.get_message(timeout=0.1)
            if msg and msg["type"] == "subscribe":
                confirmed += 1
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                msg = self.pubsub.get_message(timeout=0.05)
            except Exception as exc:
                self.error = exc
                return
            if msg and msg["type"] == "message":
                channel = (
                    msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
                )
                self.raw.append((channel, msg["data"]))
                self.messages.append((channel, json.loads(msg["data"])))

    def on(self, channel: str) -> list[Any]:
        return [data for ch, data in self.messages if ch == channel]

    def wait(self, predicate: Callable[[ChannelRecorder], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.01)
        return predicate(self)

    def wait_count(self, channel: str, count: int, timeout: float = 5.0) -> list[Any]:
        self.wait(lambda r: len(r.on(channel)) >= count, timeout)
        return self.on(channel)

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        self.pubsub.close()


@pytest.fixture
def record_channels() -> Iterator[Callable[..., ChannelRecorder]]:
    recorders: list[ChannelRecorder] = []

    def make(client: Any, *channels: str) -> ChannelRecorder:
        recorder = ChannelRecorder(client, *channels)
        recorders.append(recorder)
        return recorder

    yield make
    for recorder in recorders:
        recorder.close()


@pytest.fixture
def make_app() -> Iterator[Callable[..., tuple[Flask, TickStockMonitor]]]:
    """An app factory: ``make_app(URL, KEY=value, ...)`` → (app, monitor); shut down after."""
    made: list[tuple[Flask, TickStockMonitor]] = []

    def make(redis_url: str, monitor: TickStockMonitor | None = None, **config: Any):
        app = Flask(f"app{len(made)}")
        app.config["TESTING"] = True
        app.config["PROPAGATE_EXCEPTIONS"] = False  # the 500 path a real server takes
        app.config["TICKSTOCK_MONITOR_REDIS_URL"] = redis_url
        app.config["TICKSTOCK_MONITOR_COMPONENT"] = "test_component"
        # no heartbeat unless a test asks for one: beats would add to the counters tests assert
        app.config["TICKSTOCK_MONITOR_HEALTH_ENABLED"] = False
        app.config.update(config)
        monitor = monitor or TickStockMonitor()
        monitor.init_app(app)
        made.append((app, monitor))
        return app, monitor

    yield make
    for app, monitor in made:
        try:
            monitor.shutdown(timeout=1.0, app=app)
        except RuntimeError:
            pass


# --- databases for the durable error log -----------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """The suite's PostgreSQL server, started the first time a test needs it: a throwaway
    cluster of its own (or ``TICKSTOCK_TEST_POSTGRES_URL``); see databases.py."""
    from databases import postgres_server

    yield from postgres_server()


@pytest.fixture
def postgres_url(postgres_server: Any) -> Iterator[str]:
    """A PostgreSQL database of this test's own on the suite's server, dropped after it."""
    from databases import postgres_database

    yield from postgres_database(postgres_server)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """The error log's database, once on SQLite (a file in tmp_path), once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/instance/errors.db"
    return str(request.getfixturevalue("postgres_url"))


# --- Sentinel and Cluster, for tests that do not fail over or restart their servers -----------


@pytest.fixture(scope="module")
def sentinel_group() -> Iterator[Any]:
    """A master, a replica and three sentinels shared by one test module (see topologies.py)."""
    from topologies import SentinelGroup

    with SentinelGroup() as group:
        yield group


@pytest.fixture(scope="module")
def cluster_group() -> Iterator[Any]:
    """Three cluster masters shared by one test module (see topologies.py)."""
    from topologies import ClusterGroup

    with ClusterGroup() as group:
        yield group


# --- real monitors in processes of their own (beaters.py) ------------------------------------


@pytest.fixture
def beaters(redis_server: RedisServer) -> Iterator[Callable[..., Any]]:
    """``beaters(name, component=..., interval=..., latest_ttl=...)`` → a running
    :class:`beaters.Beater` on this test's redis-server; every one is killed after the test."""
    from beaters import Beater

    made: list[Beater] = []

    def start(name: str, **options: Any) -> Beater:
        beater = Beater(redis_server.url, name, **options)
        made.append(beater)
        return beater

    yield start
    for beater in made:
        beater.kill()
