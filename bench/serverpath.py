"""Instructions a whole real server spends on an erroring request, bare and monitored: the
realserver bench's eventlet server (monkey-patched, ``eventlet.wsgi.server``) run under
``valgrind --tool=callgrind`` and driven over keep-alive connections by ``ab -k -c 8``.

Where ``bench.realpath`` counts the request thread and the publisher apart, in one process
with no server, this counts everything the server process does for its requests: the WSGI
server, eventlet's hub, the request, and the monitor's publisher, health and relay green
threads (Redis up, throttling off: every error published). Under valgrind the clock runs some
50x slow, so the publisher sends smaller batches than at full speed: its share here is an
upper bound. Each figure is the difference of two runs, ``FEW`` and ``MANY`` requests, over
the difference; ``PYTHONHASHSEED=0``, and the heap the app starts with frozen (``gc.freeze``:
a full collection walks it all, and whether one falls in the run of ``FEW`` requests or of
``MANY`` would swing a figure by ~20k). With callgrind's cache and branch simulation on
(``BENCH_SERVERPATH_SIMULATE=1``) the rows also give the simulated cache misses and
mispredicted branches, which the wall clock pays on top of the instructions.

``python -m bench --only serverpath`` (about 3 minutes); needs valgrind and ``ab`` (Debian
packages ``valgrind`` and ``apache2-utils``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .common import callgrind_events, redis_server
from .realserver import Server

FEW, MANY = 300, 1_300
SIMULATE = os.environ.get("BENCH_SERVERPATH_SIMULATE") == "1"
#: callgrind's event names -> what the rows call them (with the simulation on)
SIMULATED = {
    "I1mr": "instruction-cache misses",
    "D1mr": "data-cache read misses",
    "Bcm": "mispredicted conditional branches",
    "Bim": "mispredicted indirect branches",
}


def count(monitored: bool, requests: int, redis_url: str) -> tuple[dict[str, int], int]:
    """Callgrind's totals for a server that served ``requests`` erroring requests (after 100
    of warm-up), and how many it served."""
    simulate = ("--cache-sim=yes", "--branch-sim=yes") if SIMULATE else ()
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "callgrind.out")
        server = Server(
            "eventlet",
            "off" if monitored else "bare",
            redis_url,
            wrapper=("valgrind", "--tool=callgrind", *simulate, f"--callgrind-out-file={out}"),
            environ={"PYTHONHASHSEED": "0", "RS_GC_FREEZE": "1"},
        )
        try:
            server.wait_ready(timeout=120)
            _ab(server.base, 100)  # warm-up: imports, the first connection, the first errors
            served = _ab(server.base, requests)
            time.sleep(3)  # the publisher's last batches
        finally:
            server.stop(timeout=60)  # callgrind writes its totals on the way out
        return callgrind_events(out), served


def _ab(base: str, requests: int) -> int:
    out = subprocess.run(
        ["ab", "-k", "-c", "8", "-n", str(requests), base + "/fail"],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    ).stdout
    served = re.search(r"Complete requests:\s+(\d+)", out)
    if served is None:
        raise RuntimeError(f"could not read ab's output:\n{out}")
    return int(served.group(1))


def run() -> dict[str, Any]:
    missing = [tool for tool in ("valgrind", "ab") if shutil.which(tool) is None]
    if missing:
        return {"skipped": f"not installed: {', '.join(missing)} (valgrind, apache2-utils)"}
    jobs = [(monitored, n) for monitored in (False, True) for n in (FEW, MANY)]
    with redis_server() as redis, ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        counted = list(pool.map(lambda job: count(*job, redis.url), jobs))
    results: dict[str, Any] = {"simulated": SIMULATE}
    for monitored in (False, True):
        (few, served_few), (many, served_many) = (
            counted[jobs.index((monitored, FEW))],
            counted[jobs.index((monitored, MANY))],
        )
        results["monitored" if monitored else "bare"] = {
            event: (many[event] - few[event]) / (served_many - served_few) for event in many
        }
    return results


def rows(results: dict[str, Any]) -> list[list[str]]:
    if "skipped" in results:
        return [["instructions per request, whole eventlet server", results["skipped"], "-", "-"]]
    bare, monitored = results["bare"], results["monitored"]
    out = [
        [
            "instructions per erroring request, the whole eventlet server under callgrind"
            " (ab -k -c 8): monitored (throttling off: every error published) / bare",
            f"{monitored['Ir'] / bare['Ir']:.3f}x (+{monitored['Ir'] - bare['Ir']:,.0f})",
            "-",
            f"bare {bare['Ir']:,.0f}",
        ]
    ]
    for event, name in SIMULATED.items():
        if event in bare:
            out.append(
                [
                    f"simulated {name} a request, whole eventlet server: monitored / bare",
                    f"{monitored[event] / bare[event]:.3f}x",
                    "-",
                    f"bare {bare[event]:,.0f}, monitored {monitored[event]:,.0f}",
                ]
            )
    return out
