"""How a batch reaches Redis: PUBLISH (or SPUBLISH) and SET commands packed by hand, written at
once and their replies read in bulk, routed to the right server(s) of the topology."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.sentinel import SentinelConnectionPool

from .clients import MASTER_CHECK_INTERVAL, is_embedded, refresh, topology_of

Message = tuple[str, bytes]  # (channel, payload)
Stored = tuple[str, bytes, int]  # (key, payload, expiry in milliseconds)
_CHECKED_AT = "_tickstock_master_checked_at"  # set on sentinel pools: last ask for the master
#: A held connection idle this long goes back to its pool, and the next batch takes one the
#: pool has checked (a Redis restarted meanwhile has closed it).
HOLD_IDLE_SECONDS = 1.0
#: What a connection closed at the far end raises on its next use.
_CLOSED = (ConnectionResetError, BrokenPipeError, redis.ConnectionError)


class HeldConnection:
    """The connection one publishing thread keeps between its batches, for a single server.

    Taken from the pool for every batch, a connection is first polled for readiness by
    redis-py (under eventlet a trip through the hub: 275k instructions a batch against 95k under
    threads, counted with callgrind) and passes the pool's locks twice. Held while batches
    follow each other, it is checked once per busy spell instead. Only its thread uses it.
    """

    __slots__ = ("conn", "pool", "used_at")

    def __init__(self) -> None:
        self.conn: Any = None
        self.pool: Any = None
        self.used_at = 0.0

    def take(self, pool: Any) -> Any:
        conn = self.conn
        if conn is not None:
            if self.pool is pool and time.monotonic() - self.used_at < HOLD_IDLE_SECONDS:
                return conn
            self.release()
        conn = pool.get_connection()  # checked by the pool: connected, nothing left to read
        self.conn, self.pool = conn, pool
        return conn

    def release(self) -> None:
        """Give the connection back to its pool (after an error, when idle, at close)."""
        conn, pool = self.conn, self.pool
        self.conn = self.pool = None
        if conn is not None:
            try:
                pool.release(conn)
            except Exception:  # a pool already closed has nothing to take back
                pass


def publish_batch(
    client: Any,
    messages: Sequence[Message],
    stores: Sequence[Stored] = (),
    held: HeldConnection | None = None,
) -> None:
    """Publish ``messages`` (and ``SET key payload PX ttl`` each of ``stores``) in one round trip
    per server; raise on any failure. ``held``: the caller's connection to a single server,
    kept between batches (a Sentinel's master may move: its pool is asked each time)."""
    topology = topology_of(client)
    command = b"SPUBLISH" if topology.sharded else b"PUBLISH"
    pool = getattr(client, "connection_pool", None)
    if topology.kind != "cluster" and (
        is_embedded(client) or pool is None or not hasattr(pool, "get_connection")
    ):
        pipe = client.pipeline(transaction=False)
        for channel, payload in messages:
            pipe.execute_command(command.decode(), channel, payload)
        for key, payload, ttl_ms in stores:
            pipe.set(key, payload, px=ttl_ms)
        pipe.execute()
        return
    # Packed by hand, written at once, replies read in bulk: several times faster than
    # redis-py's generic pipeline for the small messages we send.
    sets = [(key, _pack_set(key.encode(), data, ttl)) for key, data, ttl in stores]
    if topology.kind == "cluster":
        publishes = [(ch, _pack_publishes(command, [(ch, data)])) for ch, data in messages]
        _send_on_cluster(client, publishes, sets, topology.sharded)
        return
    if isinstance(pool, SentinelConnectionPool):
        _follow_master(pool)
        held = None
    commands = [_pack_publishes(command, messages), *(packed for _, packed in sets)]
    send_packed(pool, commands, replies=len(messages) + len(sets), held=held)


def _follow_master(pool: SentinelConnectionPool) -> None:
    # A forced failover leaves the old master accepting PUBLISH (to nobody) for several seconds
    # before the sentinels demote it, so ask them, at most once a second: a changed address
    # makes redis-py drop the pool's idle connections, and the next one goes to the new master.
    now = time.monotonic()
    if now - getattr(pool, _CHECKED_AT, 0.0) < MASTER_CHECK_INTERVAL:
        return
    setattr(pool, _CHECKED_AT, now)
    try:
        pool.get_master_address()
    except redis.ConnectionError:  # no sentinel answers: keep the master we have
        pass


def _pack_publishes(command: bytes, messages: Sequence[Message]) -> bytes:
    """``PUBLISH channel data`` for each message, as one buffer: the header up to the payload's
    length is made once per channel and each payload is copied once, into the buffer."""
    heads: dict[str, bytes] = {}
    parts: list[bytes] = []
    add = parts.extend
    for channel, data in messages:
        head = heads.get(channel)
        if head is None:
            name = channel.encode()
            head = heads[channel] = b"*3\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$" % (
                len(command),
                command,
                len(name),
                name,
            )
        add((head, b"%d\r\n" % len(data), data, b"\r\n"))
    return b"".join(parts)


def _pack_set(key: bytes, data: bytes, ttl_ms: int) -> bytes:
    ms = str(ttl_ms).encode()
    return b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$2\r\nPX\r\n$%d\r\n%b\r\n" % (
        len(key),
        key,
        len(data),
        data,
        len(ms),
        ms,
    )


def send_packed(
    pool: Any,
    commands: Sequence[bytes],
    replies: int | None = None,
    held: HeldConnection | None = None,
) -> None:
    """Write packed ``commands`` (PUBLISH, SPUBLISH or SET) on one connection of ``pool`` at
    once and read their replies in bulk; raise on an error reply. ``replies``: how many
    commands there are when an item of ``commands`` packs several (default: one each).
    ``held``: keep the connection there for the next call, rather than give it back."""
    replies = len(commands) if replies is None else replies
    if held is None:
        conn = pool.get_connection()
        try:
            _exchange(conn, commands, replies)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        return
    while True:
        before = held.conn if held.pool is pool else None
        conn = held.take(pool)
        try:
            _exchange(conn, commands, replies)
        except BaseException as exc:
            conn.disconnect()
            held.release()
            if conn is before and isinstance(exc, _CLOSED):
                # Closed while held, not checked by the pool this time (a Redis restarted
                # between two batches: reset, or at its end), so what was written reached no
                # server. Once more, on a connection the pool checks. Not after a timeout: a
                # paused server may yet read it.
                continue
            raise
        held.used_at = time.monotonic()
        return


def _exchange(conn: Any, commands: Sequence[bytes], replies: int) -> None:
    sock = getattr(conn, "_sock", None)
    if sock is None:  # not a socket connection we can drive: let redis-py read the replies
        conn.send_packed_command([b"".join(commands)], check_health=False)
        for _ in range(replies):
            reply = conn.read_response()
            if isinstance(reply, Exception):
                raise reply
    else:
        sock.sendall(b"".join(commands))
        _read_line_replies(sock, replies)


def _read_line_replies(sock: Any, count: int) -> None:
    """Consume ``count`` replies of PUBLISH or SET. Each is one line (``:<receivers>``, ``+OK``
    or ``-<error>``), so counting lines is all the parsing needed: ~20x cheaper than one
    read_response a reply."""
    pending = b""
    while count > 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise redis.ConnectionError("Connection closed by server.")
        data = pending + chunk
        if data[:1] == b"-" or b"\r\n-" in data:
            start = 0 if data[:1] == b"-" else data.index(b"\r\n-") + 2
            line = data[start + 1 : data.find(b"\r\n", start)]
            raise redis.ResponseError(line.decode("utf-8", "replace"))
        count -= data.count(b"\r\n")
        pending = data[data.rfind(b"\r\n") + 2 :] if b"\r\n" in data else data


def _send_on_cluster(
    client: Any,
    publishes: Sequence[tuple[str, bytes]],
    sets: Sequence[tuple[str, bytes]],
    sharded: bool,
) -> None:
    # Keys and shard channels go to the primary of their slot; a classic PUBLISH to any one node
    # is relayed to the whole cluster.
    by_node: dict[str, tuple[Any, list[bytes]]] = {}

    def add(node: Any, packed: bytes) -> None:
        by_node.setdefault(node.name, (node, []))[1].append(packed)

    try:
        for channel, packed in publishes:
            add(client.get_node_from_key(channel) if sharded else client.get_default_node(), packed)
        for key, packed in sets:
            add(client.get_node_from_key(key), packed)
        for node, commands in by_node.values():
            send_packed(client.get_redis_connection(node).connection_pool, commands)
    except Exception:
        refresh(client, replace_default=True)
        raise
