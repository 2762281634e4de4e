"""Real redis-server processes for the tests, on free loopback ports, owned by the test.

A test can kill, pause (SIGSTOP), resume and restart its own server; nothing here touches the
machine's shared Redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(
        self,
        port: int | None = None,
        args: Sequence[str] = (),
        *,
        password: str | None = None,
        config: str | None = None,
    ):
        self.port = port or free_port()
        self._clients: list[redis.Redis] = []
        self.args = list(args)
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="tsm-redis-")
        # a config file goes first on the command line (a sentinel needs one it can rewrite)
        self.config_file: str | None = None
        if config is not None:
            self.config_file = os.path.join(self.dir, "redis.conf")
            with open(self.config_file, "w") as f:
                f.write(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        cmd = [REDIS_SERVER] + ([self.config_file] if self.config_file else [])
        cmd += [
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            "--logfile",
            os.path.join(self.dir, "log"),
        ]
        if self.password:
            cmd += ["--requirepass", self.password]
        return cmd + self.args

    def start(self, timeout: float = 5.0) -> RedisServer:
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.paused = False
        self.wait_ready(timeout)
        return self

    def client(self, **kwargs) -> redis.Redis:
        kwargs.setdefault("socket_timeout", 2)
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **kwargs)
        # A redis-py client closes its pool when garbage-collected, and with it the socket of a
        # PubSub made from it (`server.client().pubsub()`): keep every client for the server's
        # lifetime so such a subscriber cannot go deaf halfway through a test.
        self._clients.append(client)
        return client

    def wait_ready(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client(socket_timeout=0.5) as c:
                    if c.ping():
                        return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None:
            if self.paused:
                self.resume()
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()
        for client in self._clients:
            client.close()
        self._clients.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
