"""Which Redis the transport talks to: one server, a Sentinel-watched master, or a Cluster.

URLs (besides redis-py's ``redis://``, ``rediss://``, ``unix://``)::

    redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]
    redis+cluster://[[user]:password@]host:port[,host:port...]

``?sharded_pubsub=true`` on any of them publishes with ``SPUBLISH`` and subscribes with
``SSUBSCRIBE`` (Redis 7). ``?sentinel_password=…`` authenticates to the sentinels themselves.

The transport stays topology-blind: it calls :func:`publish_batch`, :func:`ping` and
:func:`open_pubsub`, and this module routes each to the right server(s). Retries and backoff
belong to the transport (circuit breaker, subscription backoff), so the clients made here are
told not to retry on their own.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
SCHEMES = (SENTINEL_SCHEME, CLUSTER_SCHEME)
SENTINEL_PORT = 26379
REDIS_PORT = 6379
_TRUE = ("1", "true", "yes", "on")
_ATTRIBUTE = "_tickstock_topology"  # set on the clients made here: how they were made
_SENTINEL = "_tickstock_sentinel"  # and on a sentinel-managed one, the Sentinel that finds it
_CHECKED_AT = "_tickstock_master_checked_at"  # set on sentinel pools: last ask for the master
#: How often (seconds) a publisher or subscription asks the sentinels where the master is.
MASTER_CHECK_INTERVAL = 1.0

Message = tuple[str, bytes]  # (channel, payload)
Stored = tuple[str, bytes, int]  # (key, payload, expiry in milliseconds)


@dataclass(frozen=True)
class Topology:
    kind: str  # "single" | "sentinel" | "cluster"
    sharded: bool = False
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def parse_url(url: str) -> Topology:
    """The topology ``url`` names; ``ValueError`` says what is wrong with it."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    sharded = query.pop("sharded_pubsub", "false").lower() in _TRUE
    if parts.scheme not in SCHEMES:
        return Topology("single", sharded)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))} in {parts.scheme} URL")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    default_port = SENTINEL_PORT if parts.scheme == SENTINEL_SCHEME else REDIS_PORT
    hosts = tuple(_host_port(item, default_port) for item in hostlist.split(",") if item)
    if not hosts:
        raise ValueError(f"no host:port in {parts.scheme} URL")
    topology = Topology(
        "sentinel" if parts.scheme == SENTINEL_SCHEME else "cluster",
        sharded,
        hosts,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=query.get("sentinel_password"),
    )
    path = [p for p in parts.path.split("/") if p]
    if topology.kind == "cluster":
        if path:
            raise ValueError("a cluster has no databases: drop the path from the URL")
        return topology
    if not path or len(path) > 2:
        raise ValueError("a sentinel URL ends in /service_name or /service_name/db")
    db = path[1] if len(path) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"database {db!r} in a sentinel URL is not a number")
    return replace(topology, service=unquote(path[0]), db=int(db))


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    if not sep:
        return item, default_port
    if not port.isdigit():
        raise ValueError(f"port {port!r} of {item!r} is not a number")
    return host.strip("[]"), int(port)


def without_topology_options(url: str) -> str:
    """``url`` without the options redis-py does not know (for ``Redis.from_url``)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "sharded_pubsub"]
    return urlunsplit(parts._replace(query=urlencode(query)))


def url_from_config(reader: Any, url: str) -> str:
    """Fold ``SENTINELS`` / ``SENTINEL_SERVICE`` / ``SHARDED_PUBSUB`` config keys into ``url``.

    ``reader`` is the app's :class:`~flask_tickstock_monitor.config.ConfigReader`; keeping the
    whole topology in the URL lets every client made from it (publisher, planes, CLI) agree.
    """
    from .config import ConfigurationError, as_bool, as_str, as_str_tuple

    sentinels = reader.get("SENTINELS", (), as_str_tuple)
    if sentinels:
        service = reader.get("SENTINEL_SERVICE", None, as_str)
        if not service:
            raise ConfigurationError(
                "TICKSTOCK_MONITOR_SENTINEL_SERVICE: set the master's service name"
                " (e.g. 'mymaster') to go with TICKSTOCK_MONITOR_SENTINELS"
            )
        single = urlsplit(url)
        auth = single.netloc.rpartition("@")[0] if single.scheme in ("redis", "rediss") else ""
        db = single.path.strip("/") if single.scheme in ("redis", "rediss") else ""
        url = (
            f"{SENTINEL_SCHEME}://{auth + '@' if auth else ''}{','.join(sentinels)}"
            f"/{service}{'/' + db if db.isdigit() else ''}"
        )
        try:
            parse_url(url)
        except ValueError as exc:
            raise ConfigurationError(f"TICKSTOCK_MONITOR_SENTINELS: {exc}") from None
    if reader.get("SHARDED_PUBSUB", False, as_bool) and not parse_url(url).sharded:
        if urlsplit(url).scheme == "memory":
            raise ConfigurationError(
                "TICKSTOCK_MONITOR_SHARDED_PUBSUB: the embedded memory:// server has no"
                " sharded pub/sub"
            )
        url += ("&" if urlsplit(url).query else "?") + "sharded_pubsub=true"
    return url


# --- clients ---------------------------------------------------------------------------------


class MasterCheckedConnection(SentinelManagedConnection):
    """Refuses a server that is no longer the master.

    During a failover a sentinel may still name the old master, and PUBLISH succeeds on a
    replica: the message would reach nobody. ``ROLE`` after connecting turns that into a
    connection error, which the transport retries.
    """

    def on_connect_check_health(self, check_health: bool = True) -> None:
        super().on_connect_check_health(check_health=check_health)
        try:
            self.send_command("ROLE")
            role = self.read_response()
        except redis.ResponseError:  # ROLE not allowed for this user: trust the sentinels
            return
        if not role or redis.utils.str_if_bytes(role[0]) != "master":
            self.disconnect()
            raise redis.ConnectionError(f"{self.host}:{self.port} is not the master (any more)")


def connect(url: str, *, socket_timeout: float, **options: Any) -> Any:
    """A client for a ``redis://``, ``redis+sentinel://`` or ``redis+cluster://`` URL."""
    topology = parse_url(url)
    options.setdefault("socket_timeout", socket_timeout)
    options.setdefault("socket_connect_timeout", socket_timeout)
    auth: dict[str, Any] = {"username": topology.username, "password": topology.password}
    if topology.kind == "single":
        client: Any = redis.Redis.from_url(without_topology_options(url), **options)
    elif topology.kind == "sentinel":
        sentinel_options = {k: v for k, v in options.items() if k.startswith("socket_")}
        sentinel = Sentinel(
            list(topology.hosts),
            sentinel_kwargs={**sentinel_options, "password": topology.sentinel_password},
        )
        client = sentinel.master_for(
            topology.service,
            connection_class=MasterCheckedConnection,
            db=topology.db,
            retry=Retry(NoBackoff(), 0),
            **auth,
            **options,
        )
        setattr(client, _SENTINEL, sentinel)
    else:
        from redis.cluster import ClusterNode, RedisCluster

        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in topology.hosts],
            retry=Retry(NoBackoff(), 0),
            require_full_coverage=False,
            **auth,
            **options,
        )
    setattr(client, _ATTRIBUTE, topology)
    return client


def close(client: Any) -> None:
    """Close a client made by :func:`connect`, with its connections to the sentinels if it
    has any: what is left open is closed by the garbage collector, in no particular order."""
    client.close()
    sentinel = getattr(client, _SENTINEL, None)
    if sentinel is not None:
        for sentinel_client in sentinel.sentinels:
            sentinel_client.close()


def topology_of(client: Any) -> Topology:
    """How ``client`` reaches Redis (also for a client the application made itself)."""
    known = getattr(client, _ATTRIBUTE, None)
    if known is not None:
        return known  # type: ignore[no-any-return]
    if _is_cluster(client):
        return Topology("cluster")
    if isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool):
        return Topology("sentinel")
    return Topology("single")


def is_embedded(client: Any) -> bool:
    return type(client).__module__.startswith("fakeredis")


def _is_cluster(client: Any) -> bool:
    return hasattr(client, "nodes_manager") and hasattr(client, "get_node_from_key")


def describe(client: Any) -> dict[str, Any]:
    """What a diagnostic prints about the topology (no passwords)."""
    topology = topology_of(client)
    out: dict[str, Any] = {"kind": topology.kind, "sharded_pubsub": topology.sharded}
    if topology.kind == "sentinel":
        pool = client.connection_pool
        out["service"] = pool.service_name
        host, port = pool.get_master_address()
        out["master"] = f"{host}:{port}"
    elif topology.kind == "cluster":
        out["nodes"] = sorted(node.name for node in client.get_nodes())
    return out


# --- publishing ------------------------------------------------------------------------------


def publish_batch(client: Any, messages: Sequence[Message], stores: Sequence[Stored] = ()) -> None:
    """Publish ``messages`` (and ``SET key payload PX ttl`` each of ``stores``) in one round trip
    per server; raise on any failure."""
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
    commands = [_pack_publishes(command, messages), *(packed for _, packed in sets)]
    send_packed(pool, commands, replies=len(messages) + len(sets))


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


def send_packed(pool: Any, commands: Sequence[bytes], replies: int | None = None) -> None:
    """Write packed ``commands`` (PUBLISH, SPUBLISH or SET) on one connection of ``pool`` at
    once and read their replies in bulk; raise on an error reply. ``replies``: how many
    commands there are when an item of ``commands`` packs several (default: one each)."""
    replies = len(commands) if replies is None else replies
    conn = pool.get_connection()
    try:
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
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


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


def refresh(client: Any, *, replace_default: bool = False) -> None:
    """Ask a cluster for its current slots and nodes again (best effort; no-op otherwise)."""
    if not _is_cluster(client):
        return
    try:
        client.nodes_manager.initialize()
        if replace_default:
            client.replace_default_node()
    except Exception:  # the cluster is still unreachable: the transport retries later
        pass


def get_many(client: Any, keys: Sequence[str | bytes]) -> list[Any]:
    """``MGET keys``; a cluster refuses keys of several slots in one MGET, so one per slot."""
    if _is_cluster(client):
        return client.mget_nonatomic(keys)  # type: ignore[no-any-return]
    return client.mget(keys)  # type: ignore[no-any-return]


def ping(client: Any) -> None:
    """Raise unless the server that takes our publishes answers (a cluster: any one node)."""
    if _is_cluster(client):
        client.get_redis_connection(client.get_default_node()).ping()
    else:
        client.ping()


# --- subscribing -----------------------------------------------------------------------------


class NodePubSubs:
    """Plain PubSubs, one per server that must hear our subscriptions, polled in turn.

    It offers what :class:`~flask_tickstock_monitor.transport.Subscription` uses of a PubSub
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
        cluster = _is_cluster(self.client)
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


# --- diagnostics -----------------------------------------------------------------------------


def channel_counts(
    client: Any, pattern: str = "*", *, sharded: bool | None = None
) -> dict[str, int]:
    """Subscribers per channel matching ``pattern``, summed over every server that has some.

    Classic subscriptions are counted where the subscriber is connected (each node of a cluster
    counts its own); sharded ones with SHARDCHANNELS/SHARDNUMSUB. ``sharded`` defaults to how
    ``client`` publishes.
    """
    sharded = topology_of(client).sharded if sharded is None else sharded
    counts: dict[str, int] = defaultdict(int)
    for server in _servers(client):
        reply = server.execute_command(
            "PUBSUB", "SHARDCHANNELS" if sharded else "CHANNELS", pattern
        )
        for channel, count in _numsub(server, [as_text(c) for c in reply], sharded):
            counts[channel] += count
    return dict(sorted(counts.items()))


def subscriber_counts(
    client: Any, channels: Iterable[str], *, sharded: bool | None = None
) -> dict[str, int]:
    """Subscribers of each of ``channels`` (0 for none), summed over the servers."""
    sharded = topology_of(client).sharded if sharded is None else sharded
    counts = dict.fromkeys(channels, 0)
    for server in _servers(client):
        for channel, count in _numsub(server, list(counts), sharded):
            counts[channel] += count
    return counts


def publish_one(client: Any, channel: str, data: bytes | str) -> int:
    """Publish one message the way ``client`` publishes; return how many subscribers there are.

    A cluster's reply counts only the receiving node's subscribers, so ask all of them.
    """
    topology = topology_of(client)
    command = "SPUBLISH" if topology.sharded else "PUBLISH"
    if topology.kind != "cluster":
        return int(client.execute_command(command, channel, data))
    if topology.sharded:
        client.execute_command(command, channel, data)  # routed by the channel's slot
    else:
        client.get_redis_connection(client.get_default_node()).publish(channel, data)
    return subscriber_counts(client, [channel])[channel]


def _numsub(server: Any, channels: list[str], sharded: bool) -> list[tuple[str, int]]:
    if not channels:
        return []
    reply = server.execute_command("PUBSUB", "SHARDNUMSUB" if sharded else "NUMSUB", *channels)
    return [(as_text(channel), int(count)) for channel, count in _pairs(reply)]


def as_text(value: Any) -> str:
    """A channel name or payload as text, whether the client decodes responses or not."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _servers(client: Any) -> Iterable[Any]:
    if _is_cluster(client):
        return [client.get_redis_connection(node) for node in client.get_nodes()]
    return [client]


def _pairs(reply: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(reply, dict):
        return reply.items()
    if reply and isinstance(reply[0], (list, tuple)):  # redis-py may have parsed it already
        return reply  # type: ignore[no-any-return]
    return zip(reply[::2], reply[1::2], strict=True)
