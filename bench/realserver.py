"""Real servers under ``wrk``: what an error storm costs a saturated eventlet or threaded server.

The same Flask app (``/fail`` raises, ``/ok`` answers) is served bare and monitored by
(a) eventlet, monkey-patched first thing, on ``eventlet.wsgi.server`` (TickStockAppV2's mode;
gunicorn 27 has no eventlet worker) and (b) gunicorn's gthread worker (1 worker, 4 threads),
each in a subprocess. The monitored apps publish to a redis-server this bench starts on a free
loopback port, with throttling off (every error published) and with the default throttling;
Redis is up, then paused (SIGSTOP). ``wrk -t1 -c8 -d4s --latency`` drives each server in turn,
the variants alternating in a new order each round; each figure is the median of three runs,
and each ratio is monitored over bare from the same rounds. Flask's default logging stays on
(the traceback goes to the server's stderr, /dev/null here), as users run it.

``python -m bench --only realserver`` (about 5 minutes) or ``python -m bench.realserver``.
Needs ``wrk`` (Debian package ``wrk``). Every process it starts is stopped when it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from .common import median, redis_server, table

ROUNDS = int(os.environ.get("BENCH_REALSERVER_ROUNDS", 3))
SECONDS = float(os.environ.get("BENCH_REALSERVER_SECONDS", 4))
CONNECTIONS = 8
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: variant -> (monitored, throttling): the app's configuration, from the environment
VARIANTS = {"bare": (False, ""), "off": (True, "off"), "default": (True, "default")}
#: another checkout of the monitor (a path), served beside, throttling off: before vs after
COMPARE = os.environ.get("BENCH_REALSERVER_COMPARE")
if COMPARE:
    VARIANTS["other"] = (True, "off")
SERVERS = ("eventlet", "gthread")
DRAIN_SECONDS = 8.0  # the breaker retries within 7.5 s (5 s cap, jittered)
TARGET = "throughput >= 0.95x, p99 <= 1.20x"

EVENTLET = """
import eventlet
eventlet.monkey_patch()  # first thing, as TickStockAppV2 does
from bench.realserver import serve_eventlet
serve_eventlet()
"""


def create_app() -> Any:
    """The served app, configured by ``RS_REDIS_URL`` (monitored when set) and ``RS_THROTTLE``
    (``off``: every error published; else the default throttling)."""
    from flask import Flask

    app = Flask("realserver")

    @app.route("/ok")
    def ok() -> str:
        return "ok"

    @app.route("/fail")
    def fail() -> str:
        raise ZeroDivisionError("realserver bench")

    url = os.environ.get("RS_REDIS_URL")
    if os.environ.get("RS_MONITOR_PATH"):  # the monitor of another checkout (COMPARE)
        sys.path.insert(0, os.environ["RS_MONITOR_PATH"])
    if url:
        from flask_tickstock_monitor import TickStockMonitor

        app.config["TICKSTOCK_MONITOR_REDIS_URL"] = url
        if os.environ.get("RS_THROTTLE") == "off":
            app.config["TICKSTOCK_MONITOR_THROTTLE_LIMIT"] = 0
        if PROBE is not None:
            PROBE.mark_publisher()
        TickStockMonitor(app)
    if PROBE is not None:
        app.add_url_rule("/probe", "probe", lambda: PROBE.take())
    if os.environ.get("RS_GC_FREEZE"):  # bench.serverpath: see there
        import gc

        gc.collect()
        gc.freeze()
    return app


#: Under eventlet: the green threads' holds of the hub (bench.hubprobe)
PROBE: Any = None


def serve_eventlet() -> None:
    global PROBE
    import eventlet.wsgi

    from .hubprobe import HubProbe

    PROBE = HubProbe()
    sock = eventlet.listen(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    eventlet.wsgi.server(sock, create_app(), log_output=False)


# --- the servers --------------------------------------------------------------------------------


class Server:
    """One server process (and its children: gunicorn's worker) in a session of its own."""

    def __init__(
        self,
        kind: str,
        variant: str,
        redis_url: str,
        *,
        wrapper: tuple[str, ...] = (),
        environ: dict[str, str] | None = None,
    ):
        """``wrapper``: a command the server runs under (valgrind, say); ``environ``: more
        environment for it."""
        monitored, throttle = VARIANTS[variant]
        self.kind = kind
        env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONWARNINGS": "ignore", **(environ or {})}
        for key in ("RS_REDIS_URL", "RS_MONITOR_PATH"):
            env.pop(key, None)
        if monitored:
            env.update(RS_REDIS_URL=redis_url, RS_THROTTLE=throttle)
        if variant == "other" and COMPARE:
            env["RS_MONITOR_PATH"] = COMPARE
        if kind == "eventlet":
            cmd = [sys.executable, "-c", EVENTLET]
            port = None
        else:
            from servers import free_port

            port = free_port()
            cmd = [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads", "4"]
            cmd += ["-b", f"127.0.0.1:{port}", "--log-level", "error"]
            cmd += ["bench.realserver:create_app()"]
        self.proc = subprocess.Popen(
            [*wrapper, *cmd],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        if port is None:
            port = int(self.proc.stdout.readline())
        self.base = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.base + "/ok", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"server {self.base} did not start")
            time.sleep(0.1)

    def probe(self) -> dict[str, Any] | None:
        """The eventlet server's hub figures since the last call (bench.hubprobe)."""
        if self.kind != "eventlet":
            return None
        with urllib.request.urlopen(self.base + "/probe", timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def cpu(self) -> float:
        """CPU seconds (user and system) of the server and its children so far."""
        import psutil

        total = 0.0
        for process in [
            psutil.Process(self.proc.pid),
            *psutil.Process(self.proc.pid).children(True),
        ]:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def stop(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def servers(kind: str, redis_url: str) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for variant in VARIANTS:
            started[variant] = Server(kind, variant, redis_url)
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


# --- the load -----------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(url: str, seconds: float | None = None) -> dict[str, float]:
    """Requests/s and the p50 / p99 latency in ms of one ``wrk`` run."""
    seconds = SECONDS if seconds is None else seconds
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if rate is None or set(percentiles) != {"50", "99"}:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    requests = re.search(r"^\s+(\d+) requests in", out, re.M)
    return {
        "rps": float(rate.group(1)),
        "p50": _ms(percentiles["50"]),
        "p99": _ms(percentiles["99"]),
        "requests": int(requests.group(1)) if requests else 0,
    }


def rounds(targets: dict[str, tuple[Server, str]]) -> dict[str, list[dict[str, float]]]:
    """``ROUNDS`` wrk runs of each target (a server and a path), alternating, the order turned
    each round; with each run, the server's CPU time per request (the machine's other load
    moves it far less than it moves the wall clock's figures)."""
    names = list(targets)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for i in range(ROUNDS):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            server, path = targets[name]
            server.probe()  # from here
            cpu = server.cpu()
            figures = wrk(server.base + path)
            figures["cpu_us"] = (server.cpu() - cpu) * 1e6 / max(1, figures["requests"])
            probe = server.probe()
            if probe:
                figures["hold_ms"] = probe["monitor"]["max_ms"]
                figures["request_hold_ms"] = probe["requests"]["p99_ms"]
            runs[name].append(figures)
    return runs


def summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    keys = ("rps", "p50", "p99", "cpu_us")
    figures = {key: median([r[key] for r in runs]) for key in keys} | {"runs": runs}
    if "hold_ms" in runs[0]:  # the longest of all runs: the bound the publisher keeps or not
        figures["hold_ms"] = max(r["hold_ms"] for r in runs)
        figures["request_hold_ms"] = median([r["request_hold_ms"] for r in runs])
    return figures


def measure(kind: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with redis_server() as redis, servers(kind, redis.url) as started:
        for server in started.values():  # warm-up: imports, connections, the first errors
            wrk(server.base + "/fail", 1)
        results["load"] = os.getloadavg()[0]
        healthy = {f"{v}-ok": (s, "/ok") for v, s in started.items() if v != "default"}
        failing = {v: (s, "/fail") for v, s in started.items()}
        up = rounds({**failing, **healthy})
        results["up"] = {name: summary(r) for name, r in up.items()}
        redis.pause()
        try:
            paused = rounds(failing)
            for server in started.values():
                server.probe()  # from here
        finally:
            redis.resume()
        results["paused"] = {name: summary(r) for name, r in paused.items()}
        # what piled up while Redis was paused (up to the queue's 10,000) drains in full
        # batches: how long does that hold the hub (no load meanwhile)?
        time.sleep(DRAIN_SECONDS)
        if kind == "eventlet":
            results["drain"] = {v: s.probe()["monitor"] for v, s in started.items()}  # type: ignore[index]
    return results


def run() -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    return {kind: measure(kind) for kind in SERVERS} | {"connections": CONNECTIONS}


def _ratio(variant: dict[str, Any], bare: dict[str, Any]) -> str:
    return (
        f"{variant['rps'] / bare['rps']:.3f}x / {variant['p99'] / bare['p99']:.2f}x"
        f" (CPU a request {variant['cpu_us'] / bare['cpu_us']:.3f}x;"
        f" paired {_paired(variant, bare)})"
    )


def _paired(variant: dict[str, Any], bare: dict[str, Any]) -> str:
    """The median over rounds of each round's ratio: a round's two runs are seconds apart,
    where this VM's speed drifts by a third over a minute (a bare server's CPU time a request
    ranged 837-1,285 us over one run's rounds), so a ratio within a round strays less than
    the ratio of two medians taken over the whole run."""
    pairs = list(zip(variant["runs"], bare["runs"], strict=True))
    rps = median([v["rps"] / b["rps"] for v, b in pairs])
    p99 = median([v["p99"] / b["p99"] for v, b in pairs])
    cpu = median([v["cpu_us"] / b["cpu_us"] for v, b in pairs])
    return f"{rps:.3f}x / {p99:.2f}x, CPU {cpu:.3f}x"


def _figures(figures: dict[str, Any]) -> str:
    runs = "/".join(f"{r['rps']:,.0f}" for r in figures["runs"])
    return (
        f"{figures['rps']:,.0f} req/s ({runs}), p50 {figures['p50']:.2f} ms,"
        f" p99 {figures['p99']:.2f} ms, CPU {figures['cpu_us']:,.0f} us a request"
        + (
            f", hub held by the publisher <= {figures['hold_ms']:.2f} ms CPU (a request's"
            f" green thread: p99 {figures['request_hold_ms']:.2f} ms)"
            if "hold_ms" in figures
            else ""
        )
    )


def rows(results: dict[str, Any]) -> list[list[str]]:
    if "skipped" in results:
        return [["real servers under wrk", results["skipped"], "-", "-"]]
    out: list[list[str]] = []
    names = {"eventlet": "eventlet wsgi.server", "gthread": "gunicorn gthread 1x4"}
    throttles = {"off": "throttling off", "default": "default throttling"}
    if COMPARE:
        throttles["other"] = f"throttling off, {COMPARE}"
    for kind in SERVERS:
        res = results[kind]
        for redis_state in ("up", "paused"):
            figures = res[redis_state]
            bare = figures["bare"]
            for variant, throttle in throttles.items():
                out.append(
                    [
                        f"{names[kind]}, /fail, Redis {redis_state}, {throttle}:"
                        " throughput / p99 monitored/bare",
                        _ratio(figures[variant], bare),
                        TARGET,
                        f"monitored {_figures(figures[variant])}; bare {_figures(bare)};"
                        f" load {res['load']:.2f}",
                    ]
                )
        if "drain" in res:
            drain = res["drain"]
            out.append(
                [
                    f"{names[kind]}: the backlog of the pause drained after Redis resumed:"
                    " longest hold of the hub by the publisher (CPU)",
                    " / ".join(f"{v} {drain[v]['max_ms']:.2f} ms" for v in drain if v != "bare"),
                    "<= ~1 ms",
                    "; ".join(
                        f"{v}: {drain[v]['n']} runs, {drain[v]['total_ms']:.0f} ms in all"
                        for v in drain
                        if v != "bare"
                    ),
                ]
            )
        ok = res["up"]
        out.append(
            [
                f"{names[kind]}, /ok (control), Redis up, throttling off:"
                " throughput / p99 monitored/bare",
                _ratio(ok["off-ok"], ok["bare-ok"]),
                "-",
                f"monitored {_figures(ok['off-ok'])}; bare {_figures(ok['bare-ok'])}",
            ]
        )
    return out


if __name__ == "__main__":
    import logging

    logging.getLogger("flask_tickstock_monitor").setLevel(logging.ERROR)
    print(table(rows(run()), ["figure", "measured", "target", "baseline (same run)"]))
