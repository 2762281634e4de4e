"""Subscriber latency: PUBLISH (plain redis-py) → ``MonitoringSubscriber``'s error callback.

Baseline in the same run, on the same redis-server: the seed card's subscriber (a redis-py
PubSub with a handler per channel, ``json.loads`` then the callback) run by redis-py's
``pubsub.run_in_thread(sleep_time=0.001)``, the value redis-py's own documentation shows. Its
default, ``sleep_time=0``, is a busy poll that keeps one of the two cores spinning; it is
measured too, for the record. The floor under all of them, measured beside them: a thread
blocked in ``recv`` on a bare socket with hiredis's reader and ``json.loads``.

Each subscriber listens on its own channel, so a publish wakes only the one measured; rounds
alternate so that load from elsewhere hits both alike. The time is taken in the callback, so
the publishing thread's own wake-up is not counted.

Run from the repository root: ``python -m bench.subscriber_latency [--count N]``.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
import uuid
from typing import Any

import hiredis
import redis

from flask_tickstock_monitor.subscriber import MonitoringSubscriber

from .common import median, percentile, redis_server

OURS = "bench:errors:ours"
SEED = "bench:errors:seed"
SEED_BUSY = "bench:errors:seed-busy"
SOCKET = "bench:errors:socket"
TRACEBACK = "".join(
    f'  File "/srv/app/views/page_{n}.py", line {10 * n}, in handler_{n}\n    value = step_{n}()\n'
    for n in range(12)
)


class Probe:
    """The callback of one subscriber: notes when the awaited message arrived."""

    def __init__(self) -> None:
        self.awaited = ""
        self.arrived_at = 0.0
        self.arrived = threading.Event()

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("error_id") == self.awaited:
            self.arrived_at = time.perf_counter()
            self.arrived.set()


def error_message(error_id: str) -> str:
    """An error event of the usual size (~1.4 KB: a traceback of a dozen frames)."""
    return json.dumps(
        {
            "error_id": error_id,
            "type": "application_error",
            "severity": "error",
            "source": "bench",
            "component": "bench",
            "message": "ZeroDivisionError: division by zero",
            "timestamp": time.time(),
            "context": {"path": "/boom", "method": "GET"},
            "traceback": TRACEBACK,
            "instance": {"id": "bench", "host": "localhost", "pid": 1},
        }
    )


def seed_subscriber(url: str, channel: str, callback: Probe, sleep_time: float) -> Any:
    """The seed card's ``MonitoringSubscriber``, run the way redis-py offers: a worker thread."""
    pubsub = redis.Redis.from_url(url, decode_responses=True).pubsub()

    def handle_error_message(message: dict[str, Any]) -> None:
        if message["type"] == "message":
            callback(json.loads(message["data"]))

    pubsub.subscribe(**{channel: handle_error_message})
    return pubsub.run_in_thread(sleep_time=sleep_time, daemon=True)


def socket_subscriber(port: int, channel: str, callback: Probe, stop: threading.Event) -> Any:
    """The floor under both: a thread blocked in ``recv`` on a bare socket, hiredis's reader,
    ``json.loads``. No reconnects, no validation, nothing a real subscriber needs besides."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%b\r\n" % (len(channel), channel.encode()))
    sock.settimeout(0.25)
    reader = hiredis.Reader()

    def run() -> None:
        while not stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            reader.feed(data)
            message = reader.gets()
            while message is not False:
                if message[0] == b"message":
                    callback(json.loads(message[2]))
                message = reader.gets()
        sock.close()

    thread = threading.Thread(target=run, name="bench-socket-subscriber", daemon=True)
    thread.start()
    return thread


def latencies(client: Any, channel: str, probe: Probe, count: int) -> list[float]:
    """Microseconds from just before PUBLISH to the callback, one message at a time."""
    times = []
    for _ in range(count):
        probe.awaited = uuid.uuid4().hex
        payload = error_message(probe.awaited)
        probe.arrived.clear()
        started = time.perf_counter()
        client.publish(channel, payload)
        if not probe.arrived.wait(5):
            raise RuntimeError(f"a message on {channel} never reached its callback")
        times.append((probe.arrived_at - started) * 1e6)
    return times


def wait_subscribed(client: Any, channel: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not client.pubsub_numsub(channel)[0][1]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nobody subscribed to {channel}")
        time.sleep(0.01)


def run(count: int = 6000, rounds: int = 6, warmup: int = 200) -> dict[str, Any]:
    with redis_server() as server:
        return measure(server.url, server.port, count, rounds, warmup)


def measure(url: str, port: int, count: int, rounds: int, warmup: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    probes = {"ours": Probe(), "seed": Probe(), "socket": Probe(), "seed_busy": Probe()}
    ours = MonitoringSubscriber(url, errors_channel=OURS, monitoring_channel=OURS + ":health")
    ours.subscribe_monitoring(error_callback=probes["ours"]).start()
    workers = [seed_subscriber(url, SEED, probes["seed"], 0.001)]
    stop_socket = threading.Event()
    socket_subscriber(port, SOCKET, probes["socket"], stop_socket)
    channels = {"ours": OURS, "seed": SEED, "socket": SOCKET}
    try:
        if not ours.wait_connected(5):
            raise RuntimeError("MonitoringSubscriber did not connect")
        for channel in channels.values():
            wait_subscribed(client, channel)
        samples: dict[str, list[float]] = {name: [] for name in channels}
        for name, channel in channels.items():
            latencies(client, channel, probes[name], warmup)
        per_round = max(1, count // rounds)
        for _ in range(rounds):
            for name, channel in channels.items():
                samples[name].extend(latencies(client, channel, probes[name], per_round))
        # redis-py's default sleep_time=0 spins a core: measured alone, after the others
        workers.append(seed_subscriber(url, SEED_BUSY, probes["seed_busy"], 0.0))
        wait_subscribed(client, SEED_BUSY)
        latencies(client, SEED_BUSY, probes["seed_busy"], warmup)
        samples["seed_busy"] = latencies(client, SEED_BUSY, probes["seed_busy"], per_round * 2)
        received = ours.stats()
    finally:
        stop_socket.set()
        for worker in workers:
            worker.stop()
            worker.join(2)
        ours.stop()
    result: dict[str, Any] = {"count": len(samples["ours"]), "rejected": received["rejected_total"]}
    for name, values in samples.items():
        result[name] = {
            "p50_us": median(values),
            "p99_us": percentile(values, 99),
            "max_us": max(values),
        }
    return result


def rows(result: dict[str, Any]) -> list[list[str]]:
    ours, seed, busy = result["ours"], result["seed"], result["seed_busy"]
    floor = result["socket"]
    return [
        [
            "publish -> MonitoringSubscriber callback, p50 / p99",
            f"{ours['p50_us']:.0f} / {ours['p99_us']:.0f} us",
            "p50 <= 150 us, p99 <= 1 ms",
            "redis-py run_in_thread(sleep_time=0.001) "
            f"{seed['p50_us']:.0f} / {seed['p99_us']:.0f} us"
            f"; sleep_time=0 (busy poll) {busy['p50_us']:.0f} / {busy['p99_us']:.0f} us"
            f"; bare socket + hiredis reader {floor['p50_us']:.0f} / {floor['p99_us']:.0f} us",
        ]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=6000)
    args = parser.parse_args()
    result = run(args.count)
    for name in ("ours", "seed", "socket", "seed_busy"):
        figures = result[name]
        print(
            f"{name:10} p50 {figures['p50_us']:7.0f} us  p99 {figures['p99_us']:7.0f} us  "
            f"max {figures['max_us']:7.0f} us"
        )


if __name__ == "__main__":
    main()
