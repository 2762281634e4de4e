"""Helpers shared by the relay tests: invalidation messages, waiting, serving an app."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from werkzeug.serving import make_server

CHANNEL = "tickstock:cache:invalidation"


def invalidation(cache: str = "relationship", keys: list[str] | None = None, **extra: Any) -> dict:
    message: dict[str, Any] = {
        "type": "cache_invalidation",
        "cache": cache,
        "action": "invalidate" if keys is not None else "clear",
        "timestamp": time.time(),
        "invalidation_id": str(uuid.uuid4()),
        "origin": "another-host:1",
    }
    if keys is not None:
        message["keys"] = keys
    message.update(extra)
    return message


def publish(client: Any, message: dict | bytes | str, channel: str = CHANNEL) -> int:
    data = message if isinstance(message, (bytes, str)) else json.dumps(message)
    return int(client.publish(channel, data))


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.005)


def relay_of(app: Flask) -> Any:
    return app.extensions["tickstock_monitor"].planes["relay"]


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a thread (threading mode); yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    server.daemon_threads = True  # do not wait for open websockets on close
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def run_script(script: str, *args: str) -> Any:
    """Run ``script`` in a fresh interpreter (e.g. under eventlet); its last line, as JSON."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])
