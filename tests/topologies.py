"""Distributed Redis topologies built from local redis-server processes the test owns.

- :class:`SentinelGroup`: a master, one replica and three sentinels watching ``mymaster``;
- :class:`ClusterGroup`: a cluster of three masters (no replicas).

Both are context managers that stop every process they started, even when starting failed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import redis
from servers import RedisServer, free_port

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
SERVICE = "mymaster"


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` (errors count as "not yet") until it is truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except redis.RedisError as exc:
            last = exc
        else:
            if result:
                return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


class _Group:
    def __init__(self) -> None:
        self.servers: list[RedisServer] = []

    def _start(self, server: RedisServer) -> RedisServer:
        self.servers.append(server)  # before start: a failed start is still stopped
        return server.start()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> _Group:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class SentinelGroup(_Group):
    """A master, a replica and three sentinels (quorum 2) with short failure timeouts."""

    def start(self) -> None:
        # no 5 s wait for more replicas before a diskless sync (the default delay), on either
        # side of a failover
        no_delay = ["--repl-diskless-sync-delay", "0"]
        self.master = self._start(RedisServer(args=no_delay))
        replica_of = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.replica = self._start(RedisServer(args=[*no_delay, *replica_of]))
        wait_for(
            lambda: self.replica.client().info("replication")["master_link_status"] == "up",
            10,
            "the replica to sync",
        )
        config = (
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 3000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.sentinels = [
            self._start(RedisServer(config=config, args=["--sentinel"])) for _ in range(3)
        ]
        for sentinel in self.sentinels:
            wait_for(
                lambda s=sentinel: self._state(s)["num-slaves"] >= 1,
                10,
                "the sentinels to see the replica",
            )

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def _state(self, sentinel: RedisServer) -> dict[str, Any]:
        return sentinel.client(decode_responses=True).sentinel_master(SERVICE)

    def master_port(self) -> int:
        """The master's port as the first sentinel reports it."""
        return int(self._state(self.sentinels[0])["port"])

    def server(self, port: int) -> RedisServer:
        return next(s for s in (self.master, self.replica) if s.port == port)

    def failover(self, timeout: float = 15.0) -> RedisServer:
        """Force a failover and wait until every sentinel names the new master; return it."""
        old = self.master_port()
        # NOGOODSLAVE until the sentinel has fresh INFO from the replica: ask again
        first = self.sentinels[0].client()
        wait_for(
            lambda: first.execute_command("SENTINEL", "FAILOVER", SERVICE),
            timeout,
            "the sentinel to accept SENTINEL FAILOVER",
        )
        for sentinel in self.sentinels:
            wait_for(
                lambda s=sentinel: int(self._state(s)["port"]) != old,
                timeout,
                "every sentinel to report the new master",
            )
        new = self.server(self.master_port())
        wait_for(
            lambda: new.client().info("replication")["role"] == "master",
            timeout,
            "the promoted replica to be master",
        )
        return new


class ClusterGroup(_Group):
    """Three masters sharing the 16384 slots, built with ``redis-cli --cluster create``."""

    def start(self) -> None:
        args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ]
        # an explicit bus port: the default (port + 10000) overflows for high free ports
        self.nodes = [
            self._start(RedisServer(args=[*args, "--cluster-port", str(free_port())]))
            for _ in range(3)
        ]
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=30,
        )
        self.wait_ok()

    def wait_ok(self, timeout: float = 15.0) -> None:
        for node in self.nodes:
            wait_for(
                lambda n=node: (
                    n.client(decode_responses=True).cluster("info")["cluster_state"] == "ok"
                ),
                timeout,
                f"cluster_state:ok on {node.port}",
            )

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node_url(self, index: int, *, sharded: bool = False) -> str:
        """A URL that names only node ``index`` (the client discovers the others)."""
        url = f"redis+cluster://127.0.0.1:{self.nodes[index].port}"
        return url + ("?sharded_pubsub=true" if sharded else "")

    def owner(self, channel: str) -> RedisServer:
        """The node that serves ``channel``'s hash slot."""
        client = self.nodes[0].client()
        slot = client.execute_command("CLUSTER", "KEYSLOT", channel)
        for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == int(master[1]))
        raise AssertionError(f"no node owns slot {slot}")
