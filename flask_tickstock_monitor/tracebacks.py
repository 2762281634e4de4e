"""Tracebacks without frames: what an exception's traceback needs, copied on the thread that
raised it, and the standard text made from that copy later, on the publisher thread."""

from __future__ import annotations

import functools
import linecache
import types
from typing import Any

from .events import TRUNCATED

#: An exception reduced to what its traceback needs, on the thread that raised it: for each
#: exception of the chain, oldest first, (type, message, frames, note that follows it), where
#: frames is flat: code object, instruction offset, code object, offset, … (one tuple to
#: allocate, not one a frame). Code objects and types live as long as the program does; frames,
#: which hold a request's objects, are not kept. Names and lines are looked up later, off that
#: thread. Tuples, not lists: the collector stops tracking a tuple of untracked things (code
#: objects, numbers, strings) at its first look, so the frames of an error waiting in the queue
#: are not walked by every collection that comes after (it does keep tracking the tuple that
#: holds the type, and the one holding those: it tracks every type object).
ExceptionInfo = tuple[type, str, tuple[Any, ...], str]
ExceptionData = tuple[ExceptionInfo, ...]


def extract_exception(exc: BaseException) -> ExceptionData:
    """Copy out of ``exc`` what a traceback needs, so no frame is kept alive in a queue.

    Holding the exception until the publisher thread formats it would keep every frame of the
    request alive and promote them into older GC generations: a cost the request thread pays.
    Line numbers are not read here: ``tb_lineno`` decodes the line table on each access.
    """
    if exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__):
        return (_extract_one(exc, ""),)  # the common case: no chain to walk
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    note = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, note))
        if current.__cause__ is not None:
            current, note = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, note = current.__context__, _CONTEXT
        else:
            current = None
    return tuple([_extract_one(error, note) for error, note in reversed(chain)])


def _extract_one(error: BaseException, note: str) -> ExceptionInfo:
    frames: list[Any] = []
    tb: types.TracebackType | None = error.__traceback__
    while tb is not None:
        frames += (tb.tb_frame.f_code, tb.tb_lasti)  # fewer steps than two appends
        tb = tb.tb_next
    try:
        message = str(error)
    except Exception:  # a broken __str__ must not lose the event
        message = "<unprintable>"
    return (type(error), message, tuple(frames), note)


def line_number(code: types.CodeType, offset: int) -> int | None:
    """The line of the instruction at ``offset`` in ``code``: what ``tb_lineno`` reports."""
    for start, end, line in code.co_lines():
        if start <= offset < end:
            return line
    return None


@functools.lru_cache(maxsize=4096)
def _frame_text(code: types.CodeType, offset: int) -> str:
    """A frame's two lines of a traceback. Errors recur at the same places: made once each."""
    filename, lineno = code.co_filename, line_number(code, offset)
    text = f'  File "{filename}", line {lineno}, in {code.co_name}\n'
    line = linecache.getline(filename, lineno).strip() if lineno else ""
    return f"{text}    {line}\n" if line else text


def format_traceback(exc: BaseException | ExceptionData, limit: int) -> str:
    """The standard "Traceback (most recent call last)" text, chained causes included.

    Written out here because ``traceback.format_exception`` locates the error's columns by
    parsing source code, which costs ~300 us an exception on 3.11: more than the request.
    """
    data = extract_exception(exc) if isinstance(exc, BaseException) else exc
    return join_traceback(traceback_pieces(data), data, limit)


#: Per exception of a chain, what its traceback text says but for the message: the header and
#: frames before the exception's line, its type's name, the note that follows it.
Pieces = tuple[tuple[str, str, str], ...]


def traceback_pieces(data: ExceptionData) -> Pieces:
    """The parts of ``data``'s traceback text that its messages do not change."""
    pieces = []
    for kind, _message, frames, note in data:
        head = "Traceback (most recent call last):\n" if frames else ""
        head += "".join(map(_frame_text, frames[::2], frames[1::2]))
        pieces.append((head, _type_name(kind), note))
    return tuple(pieces)


def join_traceback(pieces: Pieces, data: ExceptionData, limit: int) -> str:
    """The traceback text of ``data`` from its :func:`traceback_pieces` and its messages."""
    parts: list[str] = []
    for (head, type_name, note), info in zip(pieces, data, strict=True):
        parts.append(exception_text(head + type_name, info[1]))
        if note:
            parts.append(note)
    text = "".join(parts)
    return text if len(text) <= limit else truncate_traceback(text, limit)


def exception_text(before: str, message: str) -> str:
    """An exception's part of a traceback: ``before`` (its frames and type name), then its
    message, if it has one, as the standard traceback writes it."""
    return f"{before}: {message}\n" if message else f"{before}\n"


def truncate_traceback(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, keeping the end: the innermost frames and the
    exception's line are what a reader needs."""
    return TRUNCATED + text[-(limit - len(TRUNCATED)) :]


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _type_name(kind: type) -> str:
    """How a traceback names an exception type: qualified unless it is a builtin."""
    module = kind.__module__
    if module in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{module}.{kind.__qualname__}"
