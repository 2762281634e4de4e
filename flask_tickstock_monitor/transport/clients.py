"""Clients for the URLs of :mod:`.urls`, and what the rest of the package asks of them
(ping, describe, refresh, diagnostics) whatever the topology behind them.

Retries and backoff belong to the transport (the publisher's circuit breaker, the
subscription's backoff), so the clients made here are told not to retry on their own.
"""

from __future__ import annotations

import threading
import weakref
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from .urls import MEMORY_SCHEME, Topology, check_url, parse_url, without_topology_options

_ATTRIBUTE = "_tickstock_topology"  # set on the clients made here: how they were made
_SENTINEL = "_tickstock_sentinel"  # and on a sentinel-managed one, the Sentinel that finds it
#: How often (seconds) a publisher or subscription asks the sentinels where the master is.
MASTER_CHECK_INTERVAL = 1.0
_MEMORY_SERVERS: dict[str, Any] = {}
_MEMORY_LOCK = threading.Lock()


def connect(url: str, *, socket_timeout: float = 0.5, **options: Any) -> Any:
    """A client for ``url``; ``memory://NAME`` shares one embedded server per name per process."""
    check_url(url)
    parts = urlsplit(url)
    if parts.scheme == MEMORY_SCHEME:
        import fakeredis

        name = parts.netloc or parts.path or "default"
        with _MEMORY_LOCK:
            server = _MEMORY_SERVERS.setdefault(name, fakeredis.FakeServer())
        return fakeredis.FakeRedis(server=server)
    return connect_redis(url, socket_timeout=socket_timeout, **options)


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


def connect_redis(url: str, *, socket_timeout: float, **options: Any) -> Any:
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
    _disconnect_when_collected(client)
    return client


def _disconnect_when_collected(client: Any) -> None:
    """Close the sockets of ``client``'s pools when the client is garbage, whoever forgot to
    close it (a thread that outlived a shutdown, say).

    A client that is part of a reference cycle (its app, its monitor) is otherwise finalised in
    no particular order: a socket may be finalised before the connection that would close it,
    a ResourceWarning in whatever code the collector happens to interrupt. A weakref callback
    runs before any finalizer, while the pools are still whole. (Not for a cluster client: its
    nodes manager, which knows the pools, refers back to the client; it is closed on stop.)"""
    if is_cluster(client):
        return
    pools = [client.connection_pool]
    sentinel = getattr(client, _SENTINEL, None)
    if sentinel is not None:
        pools += [sentinel_client.connection_pool for sentinel_client in sentinel.sentinels]
    weakref.finalize(client, _disconnect, pools).atexit = False


def _disconnect(pools: list[Any]) -> None:
    for pool in pools:
        try:
            pool.disconnect()
        except Exception:  # nothing more to do for it: the collector takes what is left
            pass


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
    if is_cluster(client):
        return Topology("cluster")
    if isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool):
        return Topology("sentinel")
    return Topology("single")


def is_embedded(client: Any) -> bool:
    return type(client).__module__.startswith("fakeredis")


def is_cluster(client: Any) -> bool:
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


def refresh(client: Any, *, replace_default: bool = False) -> None:
    """Ask a cluster for its current slots and nodes again (best effort; no-op otherwise)."""
    if not is_cluster(client):
        return
    try:
        client.nodes_manager.initialize()
        if replace_default:
            client.replace_default_node()
    except Exception:  # the cluster is still unreachable: the transport retries later
        pass


def get_many(client: Any, keys: Sequence[str | bytes]) -> list[Any]:
    """``MGET keys``; a cluster refuses keys of several slots in one MGET, so one per slot."""
    if is_cluster(client):
        return client.mget_nonatomic(keys)  # type: ignore[no-any-return]
    return client.mget(keys)  # type: ignore[no-any-return]


def ping(client: Any) -> None:
    """Raise unless the server that takes our publishes answers (a cluster: any one node)."""
    if is_cluster(client):
        client.get_redis_connection(client.get_default_node()).ping()
    else:
        client.ping()


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
    if is_cluster(client):
        return [client.get_redis_connection(node) for node in client.get_nodes()]
    return [client]


def _pairs(reply: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(reply, dict):
        return reply.items()
    if reply and isinstance(reply[0], (list, tuple)):  # redis-py may have parsed it already
        return reply  # type: ignore[no-any-return]
    return zip(reply[::2], reply[1::2], strict=True)
