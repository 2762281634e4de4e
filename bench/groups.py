"""What error groups cost: a fingerprint on the publisher thread (per event), a GroupBook.add on
the subscriber's thread (per message), a batch's upsert in the error log's writer.

``python -m bench.groups`` prints the table; ``run()``/``rows()`` are ``python -m bench``'s.
Baselines are what the same thread already pays for the same event: formatting its traceback
(publisher), parsing its JSON (subscriber).
"""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
import time
import timeit
from typing import Any

from sqlalchemy import create_engine

from flask_tickstock_monitor import errordb, errorgroups, events, tracebacks
from flask_tickstock_monitor.chains import ChainMemo
from flask_tickstock_monitor.fingerprint import exception_fingerprint, message_fingerprint
from flask_tickstock_monitor.groups import GroupBook

from .common import table


def _app_module(directory: str, frames: int) -> Any:
    """A module of the app's (on sys.path, not site-packages) whose call chain is ``frames``
    distinct functions deep, the last one raising."""
    source = "".join(
        f"def frame_{i}():\n    return frame_{i + 1}()\n\n\n" for i in range(frames - 1)
    )
    source += f"def frame_{frames - 1}():\n    return {{}}['missing']\n"
    name = f"benchapp_{frames}"
    with open(os.path.join(directory, f"{name}.py"), "w") as fh:
        fh.write(textwrap.dedent(source))
    return __import__(name)


def _exception_data(module: Any, chained: bool = False) -> tracebacks.ExceptionData:
    try:
        try:
            module.frame_0()
        except KeyError as exc:
            if chained:
                raise RuntimeError("wrapped") from exc
            raise
    except Exception as exc:
        return tracebacks.extract_exception(exc)
    raise AssertionError("did not raise")


def _seen_chain(data: tracebacks.ExceptionData) -> Any:
    """What an event of a chain seen before costs the publisher (its facts from the chain
    memo: type, text, fingerprint, category), each event with a message of its own."""
    memo = ChainMemo(32_768)
    *older, (kind, _message, frames, note) = data
    variants = [(*older, (kind, f"'order-{n}'", frames, note)) for n in range(1_000)]
    memo.facts(data)  # the first sight
    cursor = iter(variants * 1_000)
    return lambda: memo.facts(next(cursor))


def _per_call_us(fn: Any, number: int) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=5))
    return best / number * 1e6


def _event(fingerprint: str | None) -> dict[str, Any]:
    event = events.error_event(
        "TickStockAppV2",
        "app",
        "error",
        "ZeroDivisionError: division by zero",
        time.time(),
        None,
        "ZeroDivisionError",
        "Traceback (most recent call last):\n" + '  File "app.py", line 1, in f\n' * 10,
        {"endpoint": "prices", "method": "GET", "path": "/api/prices/AAPL"},
    )
    event.update(instance_id="host:4242", release="1.2.0", environment="production")
    if fingerprint:
        event["fingerprint"] = fingerprint
    return event


def run() -> dict[str, Any]:
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        sys.path.insert(0, directory)
        try:
            for frames in (5, 20):
                data = _exception_data(_app_module(directory, frames))
                result[f"fingerprint_{frames}_us"] = _per_call_us(_seen_chain(data), 20_000)
                result[f"fingerprint_{frames}_uncached_us"] = _per_call_us(
                    lambda data=data: exception_fingerprint(data), 20_000
                )
                result[f"format_{frames}_us"] = _per_call_us(
                    lambda data=data: tracebacks.format_traceback(data, 32_768), 20_000
                )
            chained = _exception_data(_app_module(directory, 10), chained=True)
            result["fingerprint_chained_us"] = _per_call_us(_seen_chain(chained), 20_000)
        finally:
            sys.path.remove(directory)
    result["message_cached_us"] = _per_call_us(
        lambda: message_fingerprint("app.orders", "User 123 failed: 'abc'"), 50_000
    )
    unique = iter(range(10**9))
    result["message_unique_us"] = _per_call_us(
        lambda: message_fingerprint("app.orders", f"User {next(unique)} failed for 'x' at /a/b"),
        20_000,
    )

    event = _event("a1b2c3d4e5f60718")
    raw = events.dumps(event)
    book = GroupBook()
    result["add_us"] = _per_call_us(lambda: book.add(event), 50_000)
    rotating = [_event(f"{i:016x}") for i in range(2_000)]
    cursor = iter(rotating * 1_000)
    evicting = GroupBook(max_groups=1_000)
    result["add_evicting_us"] = _per_call_us(lambda: evicting.add(next(cursor)), 50_000)
    result["evicted"] = evicting.stats()["evicted"]
    old = _event(None)
    result["add_no_fingerprint_us"] = _per_call_us(lambda: book.add(old), 50_000)
    result["parse_us"] = _per_call_us(lambda: events.parse(raw, 1 << 20), 50_000)
    filled = GroupBook()
    for item in rotating[:1_000]:
        filled.add(item)
    result["groups_100_of_1000_ms"] = _per_call_us(lambda: filled.groups(limit=100), 20) / 1e3

    with tempfile.TemporaryDirectory() as directory:
        engine = create_engine(f"sqlite:///{directory}/bench.db")
        errordb.create_table(engine)
        errorgroups.create_group_tables(engine)
        batch = [_event(f"{i % 10:016x}") for i in range(100)]
        started = time.perf_counter()
        for _ in range(20):
            with engine.begin() as conn:
                errorgroups.upsert_groups(conn, "sqlite", batch)
        result["upsert_100_events_10_groups_ms"] = (time.perf_counter() - started) / 20 * 1e3
        engine.dispose()
    return result


def rows(result: dict[str, Any]) -> list[list[str]]:
    """The groups' rows of ``python -m bench``'s table."""
    us = "{:.2f} µs".format
    out = [
        [
            f"chain facts (fingerprint, text, type), {frames}-frame traceback, chain seen before,"
            " a message of its own (fingerprint made anew)",
            f"{us(result[f'fingerprint_{frames}_us'])} "
            f"({us(result[f'fingerprint_{frames}_uncached_us'])})",
            "a few µs",
            f"formatting it: {us(result[f'format_{frames}_us'])}",
        ]
        for frames in (5, 20)
    ]
    return out + [
        [
            "chain facts, 2 chained × 10 frames, seen before, a message of its own",
            us(result["fingerprint_chained_us"]),
            "-",
            "-",
        ],
        [
            "message fingerprint (repeated / unique message)",
            f"{us(result['message_cached_us'])} / {us(result['message_unique_us'])}",
            "-",
            "-",
        ],
        [
            "GroupBook.add (one group / 2,000 groups in 1,000)",
            f"{us(result['add_us'])} / {us(result['add_evicting_us'])}",
            "-",
            f"parsing the event: {us(result['parse_us'])}",
        ],
        ["GroupBook.add, no fingerprint sent", us(result["add_no_fingerprint_us"]), "-", "-"],
        [
            "GroupBook.groups(limit=100) of 1,000",
            f"{result['groups_100_of_1000_ms']:.2f} ms",
            "-",
            "-",
        ],
        [
            "upsert_groups, 100 events into 10 groups (SQLite)",
            f"{result['upsert_100_events_10_groups_ms']:.1f} ms",
            "-",
            "-",
        ],
    ]


if __name__ == "__main__":
    print(table(rows(run()), ["figure", "measured", "target", "baseline (same run)"]))
