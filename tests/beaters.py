"""Real monitors in processes of their own that beat on the suite's redis-server.

Each :class:`Beater` runs a Flask app with a TickStockMonitor (its own instance id and
component, a ``database`` check and a ``symbols_tracked`` metric a test can change) and obeys
lines on its stdin; :meth:`Beater.kill` is a worker dying (SIGKILL: no goodbye, its latest key
stays until it expires).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MONITORING = "tickstock:monitoring"

PROGRAM = """
import json, sys
from flask import Flask
from flask_tickstock_monitor import TickStockMonitor

url, name, component, interval, latest_ttl = sys.argv[1:6]
app = Flask(component)
app.config.update(
    TICKSTOCK_MONITOR_REDIS_URL=url,
    TICKSTOCK_MONITOR_INSTANCE_ID=name,
    TICKSTOCK_MONITOR_COMPONENT=component,
    TICKSTOCK_MONITOR_HEALTH_INTERVAL=float(interval),
    TICKSTOCK_MONITOR_HEALTH_LATEST_TTL=float(latest_ttl),
)
monitor = TickStockMonitor(app)
state = {"status": "healthy", "symbols": 70}

@monitor.health_check("database")
def database():
    return {"status": state["status"], "latency_ms": 4.0}

@monitor.health_metric("symbols_tracked")
def symbols():
    return state["symbols"]

print("ready", flush=True)
for line in sys.stdin:
    command, _, argument = line.strip().partition(" ")
    if command == "status":
        state["status"] = argument
    elif command == "symbols":
        state["symbols"] = int(argument)
    elif command == "error":
        with app.app_context():
            monitor.publish_error(argument)
        monitor.flush(2.0, app=app)
    else:
        break
    print("ok", flush=True)
monitor.shutdown(app=app)
print(json.dumps(monitor.stats(app), default=str), flush=True)
"""


class Beater:
    def __init__(
        self,
        url: str,
        name: str,
        component: str = "web",
        interval: float = 0.2,
        latest_ttl: float = 30.0,
    ):
        self.name = name
        self.component = component
        self.interval = interval
        env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PROGRAM, url, name, component, str(interval), str(latest_ttl)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._close_pipes()

    def stop(self) -> dict[str, Any]:
        """Shut the monitor down cleanly; its final ``stats()``."""
        out, _ = self.proc.communicate("stop\n", timeout=15)
        assert self.proc.returncode == 0
        self._close_pipes()
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


def latest_key(name: str) -> str:
    return f"{MONITORING}:latest:{name}"


def wait_latest(client: Any, names: list[str], timeout: float = 10.0) -> bool:
    """Wait until each of ``names`` keeps a latest beat in Redis."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(client.exists(latest_key(name)) for name in names):
            return True
        time.sleep(0.02)
    return False
