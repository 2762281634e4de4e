"""The chain memo: an event's parts that depend only on its exception chain, made once per
chain and never mixed up between chains that differ in a type, a message, a place or a cause."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flask_tickstock_monitor import categories, fingerprint, tracebacks
from flask_tickstock_monitor.chains import ChainFacts, ChainMemo


def make_facts(exc_data, traceback_limit):
    """The facts made from scratch: what the memo must give."""
    kind, message, frames, _note = exc_data[-1]
    error_type = kind.__name__
    return ChainFacts(
        error_type,
        f"{error_type}: {message}",
        tracebacks.format_traceback(exc_data, traceback_limit) if frames else None,
        fingerprint.exception_fingerprint(exc_data),
        categories.for_types([info[0] for info in reversed(exc_data)]),
    )


def parse(raw):
    return int(raw)


def load(raw):
    try:
        return parse(raw)
    except ValueError as exc:
        raise KeyError("bad feed") from exc


def divide(n):
    return 1 / n


def caught(func, *args):
    try:
        func(*args)
    except Exception as exc:
        return tracebacks.extract_exception(exc)
    raise AssertionError("did not raise")


def test_facts_are_those_made_from_scratch():
    memo = ChainMemo(32_768)
    data = caught(load, "x")
    facts = memo.facts(data)
    assert facts == make_facts(data, 32_768)
    assert facts.error_type == "KeyError"
    assert facts.described == "KeyError: 'bad feed'"
    assert facts.traceback == tracebacks.format_traceback(data, 32_768)
    assert "direct cause" in facts.traceback and "ValueError" in facts.traceback
    assert facts.fingerprint == fingerprint.exception_fingerprint(data)
    # the newest type that says a category: KeyError says none, its cause ValueError does
    assert facts.category == categories.derive([KeyError, ValueError], None) == "validation"


def test_the_same_chain_again_is_one_entry_and_the_same_facts():
    memo = ChainMemo(32_768)
    first = memo.facts(caught(load, "x"))
    again = memo.facts(caught(load, "x"))  # new objects, same types, places, messages
    assert again is first and len(memo) == 1


def test_chains_that_differ_anywhere_get_their_own_facts():
    memo = ChainMemo(32_768)
    base = caught(load, "x")
    other_message = caught(load, "y")  # ValueError's message differs, deep in the chain
    other_place = caught(divide, 0)
    never_raised = ((ZeroDivisionError, "made", (), ""),)
    seen = [memo.facts(data) for data in (base, other_message, other_place, never_raised)]
    # a message is not a place: the first two share an entry, each with its own text
    assert len(memo) == 3
    assert seen[0].traceback != seen[1].traceback and "'y'" in seen[1].traceback
    assert seen[2].error_type == "ZeroDivisionError" and "divide" in seen[2].traceback
    assert seen[3].traceback is None and seen[3].described == "ZeroDivisionError: made"
    for data, facts in zip((base, other_message, other_place, never_raised), seen, strict=True):
        assert facts == make_facts(data, 32_768)


def test_a_message_that_varies_reuses_the_chain_and_each_event_gets_its_own():
    memo = ChainMemo(32_768)
    datas = [caught(load, f"order-{n}") for n in range(50)]
    seen = [memo.facts(data) for data in datas]
    assert len(memo) == 1  # one chain: not 50 entries, each made from scratch
    for n, (data, facts) in enumerate(zip(datas, seen, strict=True)):
        assert facts == make_facts(data, 32_768)
        assert f"'order-{n}'" in facts.traceback
    assert len({facts.fingerprint for facts in seen}) == 1  # where, not what: one group
    assert memo.facts(caught(load, "order-49")) is seen[-1]  # the last one again: reused
    # after another message, an earlier one again is joined anew, not taken from the last
    assert memo.facts(datas[3]) == seen[3] and memo.facts(datas[3]) is not seen[3]


def test_a_never_raised_exception_is_fingerprinted_by_its_message():
    memo = ChainMemo(32_768)
    one = memo.facts(((ValueError, "disk full", (), ""),))
    other = memo.facts(((ValueError, "quota exceeded", (), ""),))
    assert one.fingerprint != other.fingerprint and len(memo) == 2
    assert one == make_facts(((ValueError, "disk full", (), ""),), 32_768)


def test_the_same_function_at_another_line_is_another_chain():
    def twice(flag):
        if flag:
            raise RuntimeError("same")
        raise RuntimeError("same")

    memo = ChainMemo(32_768)
    one, two = memo.facts(caught(twice, True)), memo.facts(caught(twice, False))
    assert one.traceback != two.traceback and len(memo) == 2


def test_the_traceback_limit_is_the_apps():
    data = caught(load, "x")
    facts = ChainMemo(256).facts(data)
    assert len(facts.traceback) == 256 and facts.traceback.startswith(tracebacks.TRUNCATED)


def test_the_memo_is_bounded():
    memo = ChainMemo(32_768, size=3)
    for n in range(10):
        memo.facts(((ValueError, f"message {n}", (), ""),))
        assert len(memo) <= 3


def fail_with(message):
    raise RuntimeError(message) if message is not None else RuntimeError()


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(st.one_of(st.none(), st.text(max_size=40)), min_size=1, max_size=6),
    limit=st.integers(min_value=len(tracebacks.TRUNCATED) + 1, max_value=2_000),
    chained=st.booleans(),
)
def test_whatever_the_messages_and_limit_the_facts_are_those_made_from_scratch(
    messages, limit, chained
):
    """One memo, events of the same chain in turn with messages of their own (empty too),
    alone or chained: each gets exactly the facts made from scratch, never a neighbour's."""
    memo = ChainMemo(limit)
    for message in messages:
        data = caught(fail_with, message)
        if chained:
            data = ((KeyError, "cause", data[0][2], tracebacks._CAUSE), *data)
        assert memo.facts(data) == make_facts(data, limit)
    assert len(memo) == 1
