"""``python -m bench [--json FILE]``: every benchmark, one table, the baselines beside."""

from __future__ import annotations

import argparse
import json
import platform
import time

from . import errors, relay_latency, storm
from .common import table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", default="bench/results.json", help="where to write the numbers")
    args = parser.parse_args()
    started = time.time()
    results = {"errors": errors.run()}
    rows = errors.rows(results["errors"])
    results["relay"] = relay_latency.run()
    rows += relay_latency.rows(results["relay"])
    results["storm"] = storm.run()
    rows += storm.rows(results["storm"])
    print(table(rows, ["figure", "measured", "target", "baseline (same run)"]))
    results["meta"] = {"python": platform.python_version(), "machine": platform.machine(),
                       "seconds": round(time.time() - started, 1)}
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"\nnumbers in {args.json}")


if __name__ == "__main__":
    main()
