"""What every benchmark needs: its own redis-server, percentiles, a table."""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from collections.abc import Iterator, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tests"))

from servers import RedisServer  # noqa: E402


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        for r in rows
    ]
    return "\n".join([line, sep, *body])


def scale_arguments(doc: str | None) -> argparse.Namespace:
    """``--instances N --count N`` of a bench that times requests over N instances."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--count", type=int, default=200)
    return parser.parse_args()


class NoThread:
    """Stands for a monitor thread that is never started, so that the benchmark's own thread
    does that thread's work when it chooses (``publisher._thread = NoThread()``)."""

    def is_alive(self) -> bool:
        return True

    def join(self, timeout: float | None = None) -> None:
        pass


def callgrind_events(path: str) -> dict[str, int]:
    """What callgrind counted in the output file ``path``, by event (``Ir``: instructions;
    with its simulations on, cache misses and mispredicted branches too)."""
    names: list[str] = []
    with open(path) as fh:
        for line in fh:
            if line.startswith("events:"):
                names = line.split()[1:]
            elif line.startswith("summary:"):
                return dict(zip(names, map(int, line.split()[1:]), strict=True))
    raise RuntimeError(f"no summary in callgrind's output {path}")


def callgrind_total(path: str) -> int:
    """The instructions callgrind counted in the output file ``path``."""
    return callgrind_events(path)["Ir"]
