"""``python -m bench [--only PARTS] [--json FILE]``: every benchmark, one table, the baselines
beside, each on a redis-server of its own started for the run."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import time
from typing import Any

from .common import table

#: part -> module with ``run() -> dict`` and ``rows(dict) -> list[row]``, in table order
PARTS = {
    "errors": "errors",
    "subscriber": "subscriber_latency",
    "relay": "relay_latency",
    "storm": "storm",
    "instructions": "instructions",
    "realpath": "realpath",
    "serverpath": "serverpath",
    "metrics": "metrics_scrape",
    "dashboard": "dashboard_view",
    "realserver": "realserver",
}
#: run only when asked for (``--only``): minutes under valgrind; 200 instances scraped or viewed
OPT_IN = {"instructions", "realpath", "serverpath", "metrics", "dashboard"}


def load(part: str) -> Any:
    try:
        return importlib.import_module(f".{PARTS[part]}", __package__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.{PARTS[part]}":
            raise
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", default="bench/results.json", help="where to write the numbers")
    parser.add_argument(
        "--only",
        default=",".join(p for p in PARTS if p not in OPT_IN),
        help=f"comma-separated parts to run, of: {', '.join(PARTS)} (default: all but "
        + ", ".join(sorted(OPT_IN))
        + ")",
    )
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    # the paused-Redis runs make the publisher warn; the figures are the point here
    logging.getLogger("flask_tickstock_monitor").setLevel(logging.ERROR)
    started = time.time()
    results: dict[str, Any] = {"meta": {"load_before": os.getloadavg()}}
    rows: list[list[str]] = []
    for part in (p for p in PARTS if p in parts):
        module = load(part)
        if module is None:
            rows.append([f"{part}: bench/{PARTS[part]}.py is not in this checkout", "-", "-", "-"])
            continue
        part_started = time.time()
        results[part] = module.run()
        results[part]["seconds"] = round(time.time() - part_started, 1)
        rows += module.rows(results[part])
    print(table(rows, ["figure", "measured", "target", "baseline (same run)"]))
    results["meta"].update(
        {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_after": os.getloadavg(),
            "seconds": round(time.time() - started, 1),
        }
    )
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=2)
    load_avg = results["meta"]["load_before"]
    print(
        f"\n{os.cpu_count()} CPUs, load average {load_avg[0]:.2f} before the run; "
        f"{results['meta']['seconds']:.0f} s; numbers in {args.json}"
    )


if __name__ == "__main__":
    main()
