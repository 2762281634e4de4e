"""The subscriber's error groups: exact counts, bounded memory, regressions, series in time."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from groupshape import SHAPE_KEYS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_tickstock_monitor import events
from flask_tickstock_monitor.fingerprint import message_fingerprint
from flask_tickstock_monitor.groups import GroupBook
from flask_tickstock_monitor.tallies import (
    DIMENSIONS,
    MAX_KEY_CHARS,
    MINUTES,
    OTHER,
    BoundedCounter,
    bounded_event,
)

T0 = 1_764_879_960.0  # a minute boundary (divisible by 60)


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def event(fingerprint: str = "a1b2c3d4e5f60718", **fields: Any) -> dict[str, Any]:
    base = events.error_event(
        "TickStockAppV2",
        fields.pop("component", "app"),
        fields.pop("severity", "error"),
        fields.pop("message", "ZeroDivisionError: division by zero"),
        T0,
        None,
        fields.pop("error_type", "ZeroDivisionError"),
    )
    base.update(fingerprint=fingerprint, instance_id="host:1", environment="production")
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def book(clock: Clock) -> GroupBook:
    return GroupBook(clock=clock)


# --- one group -----------------------------------------------------------------------------------


def test_a_group_counts_its_events(book: GroupBook, clock: Clock) -> None:
    first = book.add(event(release="1.2.0"))
    assert first.new and not first.regression and first.status == "open"
    clock.now += 30
    second = book.add(event(severity="critical", message="ZeroDivisionError: again"))
    assert not second.new and second.times_seen == 2
    group = book.get("a1b2c3d4e5f60718")
    assert group is not None and set(group) == SHAPE_KEYS
    assert group["count"] == 2
    assert (group["first_seen"], group["last_seen"]) == (T0, T0 + 30)
    assert group["message"] == "ZeroDivisionError: again"  # the last event's
    assert group["error_type"] == "ZeroDivisionError"
    assert group["severities"] == {"error": 1, "critical": 1}
    assert group["components"] == {"app": 2}
    assert group["instances"] == {"host:1": 2}
    assert group["releases"] == {"1.2.0": 1}  # the second event named no release
    assert group["environments"] == {"production": 2}
    assert group["series"][-1] == 2 and sum(group["series"]) == 2
    assert group["series_start"] == T0 - 59 * 60
    assert group["status"] == "open" and group["new"] and not group["regression"]
    assert group["last_event"]["severity"] == "critical"
    assert book.get("0" * 16) is None


def test_received_at_is_when_it_was_seen(book: GroupBook) -> None:
    book.add(event(), received_at=T0 + 120)
    book.add(event(), received_at=T0 + 60)  # out of order: first_seen moves back
    group = book.get("a1b2c3d4e5f60718")
    assert group is not None
    assert (group["first_seen"], group["last_seen"]) == (T0 + 60, T0 + 120)


def test_an_event_of_an_older_publisher_gets_a_message_fingerprint(book: GroupBook) -> None:
    old = event(message="User 12 failed: 'abc'", component="orders")
    del old["fingerprint"], old["instance_id"], old["environment"]
    added = book.add(old)
    assert added.fingerprint == message_fingerprint("orders", "User 99 failed: 'x'")
    assert book.add({**old, "message": "User 7 failed: 'zz'"}).times_seen == 2
    group = book.get(added.fingerprint)
    assert group is not None
    assert group["instances"] == {"TickStockAppV2": 2}  # the source stands in
    assert group["environments"] == {"production": 2}
    assert book.stats()["computed_fingerprints"] == 2


# --- many threads --------------------------------------------------------------------------------


def test_counts_are_exact_under_eight_threads(clock: Clock) -> None:
    book = GroupBook(clock=clock)
    fingerprints = [f"{i:016x}" for i in range(5)]
    per_thread = 2_000
    start = threading.Barrier(8)

    def adder(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            book.add(
                event(
                    fingerprints[i % 5],
                    severity=("error", "critical")[n % 2],
                    instance_id=f"host:{n}",
                    release=f"1.{i % 3}",
                )
            )

    threads = [threading.Thread(target=adder, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    groups = {g["fingerprint"]: g for g in book.groups(limit=None)}
    assert set(groups) == set(fingerprints)
    for group in groups.values():
        assert group["count"] == 8 * per_thread // 5
        assert group["severities"] == {"error": 1600, "critical": 1600}
        assert group["instances"] == {f"host:{n}": 400 for n in range(8)}
        assert sum(group["releases"].values()) == 3200
        assert sum(group["series"]) == 3200
    assert book.stats()["events"] == 16_000
    per_minute = book.errors_per_minute()
    assert per_minute["series"]["error"][-1] == per_minute["series"]["critical"][-1] == 8000
    assert per_minute["total"][-1] == 16_000


# --- bounds --------------------------------------------------------------------------------------


def test_the_least_recently_seen_group_is_evicted(clock: Clock) -> None:
    book = GroupBook(max_groups=3, clock=clock)
    for name in "abc":
        book.add(event(name * 16))
    book.add(event("a" * 16))  # a is seen again: b is now the least recent
    added = book.add(event("d" * 16))
    assert added.new
    assert {g["fingerprint"] for g in book.groups()} == {"a" * 16, "c" * 16, "d" * 16}
    assert book.stats()["evicted"] == 1 and len(book) == 3
    assert book.add(event("b" * 16)).new  # it comes back as a new group
    assert book.stats()["evicted"] == 2


def test_breakdowns_keep_the_top_entries_and_exact_totals(clock: Clock) -> None:
    book = GroupBook(top=3, clock=clock)
    for i in range(40):
        book.add(event(component="busy"))
        book.add(event(component=f"rare-{i}"))
        if i % 2:
            book.add(event(component="often"))
    group = book.get("a1b2c3d4e5f60718")
    assert group is not None
    components = group["components"]
    assert len(components) == 4  # three shown, the rest folded
    assert components["busy"] == 40 and components["often"] == 20
    assert sum(components.values()) == group["count"] == 100
    assert components[OTHER] == 100 - 40 - 20 - components.get(
        next(k for k in components if k.startswith("rare-")), 0
    )


def test_bounded_counter() -> None:
    counter = BoundedCounter(2)
    assert counter.add("a") and counter.add("b")
    counter.add("a")
    assert counter.add("c")  # "b" (1) is the least counted: folded
    assert counter.counts == {"a": 2, "c": 1} and counter.other == 1
    assert counter.top(1) == {"a": 2, OTHER: 2}
    assert counter.total() == 4


def test_long_keys_are_cut(book: GroupBook) -> None:
    book.add(event(component="c" * 10_000, release=12))
    group = book.get("a1b2c3d4e5f60718")
    assert group is not None
    assert list(group["components"]) == ["c" * MAX_KEY_CHARS]
    assert group["releases"] == {"12": 1}


def test_a_huge_event_is_trimmed_keeping_the_end_of_its_traceback() -> None:
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * 50_000 + "KeyError: 'x'"
    huge = event(
        traceback=traceback,
        message="m" * 100_000,
        context={"rows": [{"n": i, "text": "x" * 100} for i in range(5_000)]},
        extra=[["deep"] * 1000] * 100,
    )
    kept = bounded_event(huge, 65_536)
    assert len(events.dumps(kept)) < 70_000
    assert kept["traceback"].endswith("KeyError: 'x'")
    assert kept["traceback"].startswith(events.TRUNCATED)
    assert kept["message"].endswith(events.TRUNCATED)
    assert kept["error_id"] == huge["error_id"] and kept["severity"] == "error"
    small = event()
    assert bounded_event(small, 65_536) == small


def test_rejects_bad_arguments(book: GroupBook) -> None:
    with pytest.raises(ValueError, match="max_groups"):
        GroupBook(max_groups=0)
    with pytest.raises(ValueError, match="sort must be one of last_seen, count"):
        book.groups(sort="age")
    with pytest.raises(ValueError, match="status must be one of open, resolved, ignored"):
        book.groups(status="closed")
    with pytest.raises(ValueError, match="status must be one of"):
        book.set_status("a" * 16, "closed")
    with pytest.raises(ValueError, match="by must be one of severity"):
        book.errors_per_minute(by="colour")


# --- time ----------------------------------------------------------------------------------------


def test_the_series_turns_with_time(book: GroupBook, clock: Clock) -> None:
    book.add(event())  # minute 0
    clock.now += 61
    book.add(event())
    book.add(event())  # minute 1
    clock.now = T0 + 59 * 60 + 5
    book.add(event())  # minute 59
    group = book.get("a1b2c3d4e5f60718")
    assert group is not None
    assert group["series_start"] == T0
    assert group["series"][:2] == [1, 2] and group["series"][-1] == 1
    assert sum(group["series"]) == 4 and len(group["series"]) == MINUTES
    clock.now += 30 * 60  # half an hour later, nothing new: the old minutes scroll off
    group = book.get("a1b2c3d4e5f60718")
    assert group is not None
    assert group["series_start"] == T0 + 30 * 60
    assert group["series"][29] == 1 and sum(group["series"]) == 1
    book.add(event())
    group = book.get("a1b2c3d4e5f60718")
    assert group is not None
    assert group["series"][-1] == 1 and group["series"][29] == 1
    clock.now += 2 * 3600  # the hour is empty; the count is not
    group = book.get("a1b2c3d4e5f60718")
    assert group is not None
    assert group["series"] == [0] * MINUTES and group["count"] == 5
    book.add(event(), received_at=clock.now - 3 * 3600)  # older than the hour: not charted
    group = book.get("a1b2c3d4e5f60718")
    assert group is not None and group["count"] == 6 and sum(group["series"]) == 0


def test_a_group_is_new_for_an_hour(book: GroupBook, clock: Clock) -> None:
    book.add(event())
    clock.now += 3599
    book.add(event())
    assert book.groups()[0]["new"]
    clock.now += 2
    assert not book.groups()[0]["new"]


def test_errors_per_minute_by_severity(book: GroupBook, clock: Clock) -> None:
    book.add(event("a" * 16, severity="error"))
    book.add(event("b" * 16, severity="critical"))
    clock.now += 60
    book.add(event("a" * 16, severity="error"))
    chart = book.errors_per_minute()
    assert chart["by"] == "severity" and chart["bucket_s"] == 60
    assert chart["series_start"] == T0 - 58 * 60
    assert chart["series"]["error"][-2:] == [1, 1]
    assert chart["series"]["critical"][-2:] == [1, 0]
    assert chart["total"][-2:] == [2, 1]
    by_environment = book.errors_per_minute(by="environment")
    assert by_environment["series"] == {"production": chart["total"]}


def test_the_chart_keys_are_bounded(clock: Clock) -> None:
    book = GroupBook(top=2, clock=clock)
    for i in range(10):
        book.add(event(component=f"c{i}"))
    chart = book.errors_per_minute(by="component")
    assert set(chart["series"]) == {"c0", "c1", OTHER}
    assert chart["series"][OTHER][-1] == 8


# --- status and regressions ----------------------------------------------------------------------


def test_a_resolved_group_seen_again_is_open_and_a_regression(book: GroupBook) -> None:
    fp = book.add(event()).fingerprint
    assert book.resolve(fp)
    assert book.groups(status="resolved")[0]["fingerprint"] == fp
    added = book.add(event())
    assert added.regression and added.status == "open"
    group = book.get(fp)
    assert group is not None and group["status"] == "open" and group["regression"]
    assert not book.add(event()).regression  # already one: not news again
    assert book.resolve(fp) and book.get(fp)["regression"] is False  # type: ignore[index]


def test_a_release_the_group_was_never_seen_in_is_a_regression(book: GroupBook) -> None:
    assert not book.add(event(release="1.2.0")).regression  # the first release is no news
    assert not book.add(event(release="1.2.0")).regression
    assert not book.add(event()).regression  # no release named
    added = book.add(event(release="1.3.0"))
    assert added.regression and added.status == "open"
    assert not book.add(event(release="1.2.0")).regression  # seen in it before
    group = book.get(added.fingerprint)
    assert group is not None and group["regression"]
    assert group["releases"] == {"1.2.0": 3, "1.3.0": 1}
    assert book.reopen(added.fingerprint)
    assert not book.get(added.fingerprint)["regression"]  # type: ignore[index]


def test_an_ignored_group_stays_ignored_but_counts(book: GroupBook) -> None:
    fp = book.add(event(release="1.2.0")).fingerprint
    assert book.ignore(fp)
    added = book.add(event(release="2.0.0"))
    assert added.status == "ignored" and not added.regression and added.times_seen == 2
    group = book.get(fp)
    assert group is not None
    assert group["status"] == "ignored" and not group["regression"] and group["count"] == 2
    assert book.stats()["by_status"] == {"open": 0, "resolved": 0, "ignored": 1}


def test_status_of_an_unknown_group(book: GroupBook) -> None:
    assert not book.resolve("f" * 16)
    assert not book.ignore("f" * 16)
    assert not book.reopen("f" * 16)


def test_groups_sorted_filtered_and_limited(book: GroupBook, clock: Clock) -> None:
    for _ in range(3):
        book.add(event("b" * 16))
    clock.now += 1
    book.add(event("a" * 16))
    clock.now += 1
    book.add(event("c" * 16))
    book.add(event("c" * 16))
    assert [g["fingerprint"][0] for g in book.groups()] == ["c", "a", "b"]
    assert [g["fingerprint"][0] for g in book.groups(sort="count")] == ["b", "c", "a"]
    assert [g["fingerprint"][0] for g in book.groups(limit=1)] == ["c"]
    book.resolve("a" * 16)
    assert [g["fingerprint"][0] for g in book.groups(status="open")] == ["c", "b"]
    assert book.groups(limit=0) == []


# --- bounded for any input -----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
any_key = st.one_of(st.none(), st.text(max_size=300), st.integers(), json_values)
arbitrary_events = st.fixed_dictionaries(
    {
        "severity": st.sampled_from(events.SEVERITIES),
        "message": st.text(max_size=3000),
    },
    optional={
        "fingerprint": st.sampled_from([f"{i:016x}" for i in range(12)]) | st.text(max_size=40),
        "component": any_key,
        "instance_id": any_key,
        "source": any_key,
        "release": any_key,
        "environment": any_key,
        "error_type": any_key,
        "traceback": st.text(max_size=5000),
        "context": json_values,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(arbitrary_events, st.floats(min_value=-7200, max_value=7200)), max_size=60),
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=1, max_value=4),
)
def test_memory_stays_bounded_for_any_input(
    added: list[tuple[dict[str, Any], float]], max_groups: int, top: int
) -> None:
    clock = Clock()
    book = GroupBook(max_groups=max_groups, top=top, max_event_bytes=4096, clock=clock)
    created = 0
    for item, offset in added:
        clock.now = T0 + offset
        created += book.add(item).new
    groups = book.groups(limit=None)
    stats = book.stats()
    assert len(groups) == len(book) <= max_groups
    assert stats["events"] == len(added)
    assert stats["evicted"] == created - len(groups)
    assert sum(g["count"] for g in groups) <= len(added)
    # what one group can hold, whatever arrived
    bound = 4096 * 1.2 + len(DIMENSIONS) * (top + 1) * (MAX_KEY_CHARS * 6 + 30) + 3000
    for group in groups:
        assert sum(group["severities"].values()) == group["count"]
        for name in DIMENSIONS:
            assert len(group[name]) <= top + 1
            assert sum(group[name].values()) <= group["count"]
            assert all(len(key) <= MAX_KEY_CHARS for key in group[name])
        assert len(group["series"]) == MINUTES and sum(group["series"]) <= group["count"]
        assert len(events.dumps(group)) <= bound
    chart = book.errors_per_minute(by="component")
    assert len(chart["series"]) <= top + 1
