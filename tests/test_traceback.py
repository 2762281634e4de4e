"""Tracebacks as the publisher formats them: the same frames, lines and chain as Python's."""

from __future__ import annotations

import traceback
import types

from flask_tickstock_monitor import tracebacks


class FeedError(Exception):
    pass


def parse(raw):
    return {
        "price": int(
            raw,
        ),
    }


def load(raw):
    try:
        return parse(raw)
    except ValueError as exc:
        raise FeedError("bad feed") from exc


def handle(raw):
    try:
        load(raw)
    except FeedError:
        return 1 / 0


def caught(func, *args):
    try:
        func(*args)
    except Exception as exc:
        return exc
    raise AssertionError("did not raise")


def python_lines(exc):
    """Python's own text, without 3.11's column markers (which we do not compute)."""
    lines = "".join(traceback.format_exception(exc)).splitlines()
    return [line for line in lines if line.strip() and set(line.strip()) - set("^~")]


def test_frames_lines_and_chain_match_python():
    exc = caught(handle, "x")
    ours = tracebacks.format_traceback(exc, 100_000).splitlines()
    assert [line for line in ours if line.strip()] == python_lines(exc)
    # both chain notes, oldest exception first
    assert ours[-1] == "ZeroDivisionError: division by zero"
    assert "ValueError: invalid literal for int() with base 10: 'x'" in ours


def test_line_numbers_are_those_of_the_traceback():
    exc = caught(handle, "x")
    for error, (_, _, frames, _) in zip(
        (exc.__context__.__cause__, exc.__context__, exc),
        tracebacks.extract_exception(exc),
        strict=True,
    ):
        tb, expected = error.__traceback__, []
        while tb is not None:
            expected.append((tb.tb_frame.f_code.co_name, tb.tb_lineno))
            tb = tb.tb_next
        pairs = zip(frames[::2], frames[1::2], strict=True)
        assert [(code.co_name, tracebacks.line_number(code, at)) for code, at in pairs] == expected


def test_extract_keeps_no_frames():
    exc = caught(handle, "x")
    data = tracebacks.extract_exception(exc)
    assert len(data) == 3
    for kind, message, frames, note in data:
        assert isinstance(kind, type) and isinstance(message, str) and isinstance(note, str)
        assert frames and len(frames) % 2 == 0
        assert all(type(code) is types.CodeType for code in frames[::2])
        assert all(type(at) is int for at in frames[1::2])


def test_unprintable_message_and_long_text_keep_the_end():
    class Broken(Exception):
        def __str__(self):
            raise RuntimeError("no")

    exc = caught(lambda: (_ for _ in ()).throw(Broken()))
    text = tracebacks.format_traceback(exc, 100_000)
    assert text.endswith("Broken: <unprintable>\n")
    short = tracebacks.format_traceback(exc, 60)
    assert len(short) == 60 and short.endswith("Broken: <unprintable>\n")
