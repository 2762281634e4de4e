"""PubSub objects for the subscription, whatever the topology: one PubSub per server that must
hear our subscriptions on a cluster (or for sharded channels), one that follows the master on a
Sentinel, and a fast reader of replies straight off a plain connection's socket."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.sentinel import SentinelConnectionPool

from .clients import MASTER_CHECK_INTERVAL, as_text, is_cluster, is_embedded, refresh, topology_of


class NodePubSubs:
    """Plain PubSubs, one per server that must hear our subscriptions, polled in turn.

    It offers what :class:`~.subscription.Subscription` uses of a PubSub
    (``subscribe``, ``get_message``, ``ping``, ``close``). Sharded channels are subscribed on
    the primary of their slot, one SSUBSCRIBE per channel (a node refuses several slots in one).
    """

    def __init__(self, client: Any, sharded: bool):
        self.client = client
        self.sharded = sharded
        self.pubsubs: dict[str, Any] = {}

    def _pubsub_for(self, node: Any) -> Any:
        if node is None:  # not a cluster: the client's own server
            key, redis_client = "", self.client
        else:
            key, redis_client = node.name, self.client.get_redis_connection(node)
        if key not in self.pubsubs:
            self.pubsubs[key] = redis_client.pubsub(ignore_subscribe_messages=False)
        return self.pubsubs[key]

    def subscribe(self, *channels: str) -> None:
        cluster = is_cluster(self.client)
        if not self.sharded:
            node = random.choice(self.client.get_primaries()) if cluster else None
            self._pubsub_for(node).subscribe(*channels)
            return
        for channel in channels:
            node = self.client.get_node_from_key(channel) if cluster else None
            self._pubsub_for(node).ssubscribe(channel)

    def get_message(self, timeout: float = 0.0) -> dict[str, Any] | None:
        pubsubs = list(self.pubsubs.values())
        share = timeout / max(1, len(pubsubs))
        for pubsub in pubsubs:
            message = pubsub.get_message(timeout=share)
            if message is not None:
                return message  # type: ignore[no-any-return]
        return None

    def ping(self) -> None:
        for pubsub in self.pubsubs.values():
            pubsub.ping()

    def close(self) -> None:
        for pubsub in self.pubsubs.values():
            try:
                pubsub.close()
            except Exception:
                pass


class FollowMaster:
    """A PubSub on a sentinel-managed master that leaves when the sentinels name another one.

    The old master of a forced failover keeps its subscribers, and hears nothing more, until the
    sentinels demote it seconds later; asking them once a second cuts that short.
    """

    def __init__(self, client: Any, pubsub: Any):
        self.pool = client.connection_pool
        self.pubsub = pubsub
        self.checked_at = time.monotonic()

    def subscribe(self, *channels: str) -> None:
        self.pubsub.subscribe(*channels)

    def get_message(self, timeout: float = 0.0) -> dict[str, Any] | None:
        now = time.monotonic()
        if now - self.checked_at >= MASTER_CHECK_INTERVAL:
            self.checked_at = now
            self._check()
        return self.pubsub.get_message(timeout=timeout)  # type: ignore[no-any-return]

    def _check(self) -> None:
        try:
            master = self.pool.get_master_address()
        except redis.ConnectionError:  # no sentinel answers: keep the master we have
            return
        inner = getattr(self.pubsub, "pubsubs", None)
        for pubsub in inner.values() if inner is not None else [self.pubsub]:
            conn = pubsub.connection
            if conn is not None and (conn.host, conn.port) != master:
                raise redis.ConnectionError(
                    f"the sentinels moved the master from {conn.host}:{conn.port} to"
                    f" {master[0]}:{master[1]}"
                )

    def ping(self) -> None:
        self.pubsub.ping()

    def close(self) -> None:
        self.pubsub.close()


def open_pubsub(client: Any, *, reconnecting: bool) -> Any:
    """A PubSub-like object for the transport's subscription; not yet subscribed."""
    topology = topology_of(client)
    if topology.kind == "cluster":
        if reconnecting:  # the server we were on may be gone: route with fresh slots
            refresh(client)
        return NodePubSubs(client, topology.sharded)
    pubsub = (
        NodePubSubs(client, True)
        if topology.sharded
        else client.pubsub(ignore_subscribe_messages=False)
    )
    if isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool):
        return FollowMaster(client, pubsub)
    return pubsub


SUBSCRIBED_TYPES = ("subscribe", "ssubscribe")
DATA_TYPES = ("message", "pmessage", "smessage")

#: What a receiver returns for a reply that is not a message (a PONG, a subscribe confirmation):
#: the connection is alive, nothing to deliver.
HEARD = ("", b"")

try:
    import hiredis
except ImportError:  # pragma: no cover - depends on the install ('fast' extra)
    hiredis = None  # type: ignore[assignment]


def receiver(pubsub: Any, timeout: float) -> Callable[[], tuple[str, Any] | None]:
    """A function that waits up to ``timeout`` seconds for the next reply on ``pubsub`` and
    returns ``(channel, data)`` for a message, :data:`HEARD` for any other reply, or ``None``.

    On a plain redis-py PubSub over a socket (with hiredis installed), replies are read off the
    socket by a hiredis reader of our own: redis-py's ``get_message`` costs 10-20 us a message
    on this path (a poll object made per call, the socket's timeout set and restored, a retry
    wrapper, a dict per message), which is most of what a subscriber's latency is above a bare
    socket's. Only once redis-py's own reader holds nothing: what it buffered is not ours to
    take. Anything else (cluster, sentinel, the embedded server) goes through ``get_message``.
    """
    direct = _socket_receiver(pubsub, timeout)
    if direct is not None:
        return direct

    def receive() -> tuple[str, Any] | None:
        message = pubsub.get_message(timeout=timeout)
        if message is None:
            return None
        if message["type"] in DATA_TYPES:
            return as_text(message["channel"]), message["data"]
        return HEARD

    return receive


def _socket_receiver(pubsub: Any, timeout: float) -> Callable[[], tuple[str, Any] | None] | None:
    if hiredis is None or type(pubsub) is not redis.client.PubSub:
        return None
    conn: Any = pubsub.connection
    if is_embedded(conn):  # fakeredis: its "socket" is an object in this process
        return None
    sock: Any = getattr(conn, "_sock", None)
    parser = getattr(conn, "_parser", None)
    theirs: Any = getattr(parser, "_reader", None)
    if not (hasattr(sock, "recv") and hasattr(sock, "settimeout") and hasattr(theirs, "has_data")):
        return None
    if theirs.has_data() or getattr(parser, "_next_response", False) is not False:
        return None
    options: dict[str, Any] = {
        "protocolError": redis.exceptions.InvalidResponse,
        "replyError": redis.exceptions.ResponseError,
    }
    if conn.encoder.decode_responses:  # the same types the app's own client would hand over
        options["encoding"] = conn.encoder.encoding
        options["errors"] = conn.encoder.encoding_errors
    reader = hiredis.Reader(**options)
    sock.settimeout(timeout)  # this connection is the subscription's alone, until it closes

    def receive() -> tuple[str, Any] | None:
        reply = reader.gets()
        while reply is False:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                return None  # a partial reply stays in the reader for the next call
            if not data:
                raise redis.ConnectionError("Connection closed by server.")
            reader.feed(data)
            reply = reader.gets()
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, list) and len(reply) >= 3:
            kind = as_text(reply[0])
            if kind == "message":
                return as_text(reply[1]), reply[2]
            if kind == "pmessage" and len(reply) == 4:
                return as_text(reply[2]), reply[3]
        return HEARD

    return receive
