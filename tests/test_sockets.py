"""No socket of ours is left for the garbage collector: a client is closed by whoever made it,
nothing makes a new one after shutdown, and one forgotten in a reference cycle has its sockets
closed before any finalizer runs (else a ResourceWarning in whatever code the collector
happens to interrupt: issue 22's flaky test)."""

from __future__ import annotations

import gc
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis.client
from redis.connection import AbstractConnection

from flask_tickstock_monitor import events
from flask_tickstock_monitor.transport import clients


def connected_to(port: int) -> list[AbstractConnection]:
    """The redis-py connections of this process that hold an open socket to ``port``."""
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, AbstractConnection)
        and getattr(obj, "_sock", None) is not None
        and obj.port == port
    ]


@pytest.fixture
def finalised_while_connected(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What a cyclic garbage collection finalised while it still held an open socket: a
    redis-py client whose pool, or a connection which, was still connected."""
    found: list[str] = []
    collecting = threading.local()

    def phase(name: str, info: dict[str, Any]) -> None:
        collecting.on = name == "start"

    def watch(cls: type, sockets: Any) -> None:
        original = cls.__del__  # type: ignore[attr-defined]

        def finalise(self: Any) -> None:
            if getattr(collecting, "on", False) and any(
                getattr(c, "_sock", None) is not None for c in sockets(self)
            ):
                found.append(repr(self))
            original(self)

        monkeypatch.setattr(cls, "__del__", finalise)

    watch(AbstractConnection, lambda conn: [conn])
    watch(
        redis.client.Redis,
        lambda client: [
            *client.connection_pool._available_connections,
            *client.connection_pool._in_use_connections,
        ],
    )
    gc.callbacks.append(phase)
    try:
        yield found
    finally:
        gc.callbacks.remove(phase)


class Holder:
    """What a client is forgotten in, in a reference cycle (as in an app and its monitor)."""

    def __init__(self) -> None:
        self.me = self


def test_a_client_forgotten_in_a_cycle_is_disconnected_before_any_finalizer(
    redis_server: Any, finalised_while_connected: list[str]
) -> None:
    # made as clients.connect makes it, but not kept by conftest's fixture: this test drops it
    client = clients.connect_redis.unremembered(redis_server.url, socket_timeout=0.5)
    client.ping()
    (conn,) = client.connection_pool._available_connections
    # The worst order for the collector: the socket ahead of the connection that would close
    # it. A collection while only `holder`, made last, keeps them moves them behind it in the
    # order it reaches them: the socket first.
    holder = Holder()
    holder.socket = conn._sock
    holder.client = client
    del client, conn
    gc.collect()
    del holder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert finalised_while_connected == []
    assert connected_to(redis_server.port) == []


def test_nothing_connects_after_shutdown(redis_server: Any, make_app: Any) -> None:
    app, monitor = make_app(redis_server.url)
    redis = monitor.publish_health(app=app)["health"]["components"]["redis"]
    assert events.component_state(redis) == "healthy"
    assert connected_to(redis_server.port) != []
    monitor.shutdown(app=app)
    assert connected_to(redis_server.port) == []
    # a beat or a health check still running after the shutdown gets no new client (one that
    # nobody would close): its Redis check fails instead
    late = monitor.publish_health(app=app)["health"]["components"]["redis"]
    assert events.component_state(late) == "unhealthy"
    assert "shut down" in late["details"]
    assert connected_to(redis_server.port) == []
