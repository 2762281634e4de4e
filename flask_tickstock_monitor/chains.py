"""What an error event takes from its exception chain, worked out once per chain.

Errors recur at the same places, so the parts of an event that depend only on where the chain
was raised (its type name, the traceback text but for the messages, the default fingerprint and
the category the exception types say) are remembered, keyed by the chain's ids, types and
instruction offsets. Making them anew cost the publisher 26k instructions an event of a 6-frame
traceback (callgrind), 40 % of an event's build; a hit costs the key, one lookup and, when the
message differs from the last event's of that chain (an id or a value in it: the common case),
joining the message into the text. Messages are not in the key: a chain whose message varies
would miss every time (twice the build, measured before they left it).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import categories, fingerprint
from .tracebacks import (
    ExceptionData,
    Pieces,
    exception_text,
    join_traceback,
    traceback_pieces,
    truncate_traceback,
)

#: Chains remembered at most; the memo starts over when full.
MAX_CHAINS = 4096


class ChainFacts(NamedTuple):
    error_type: str
    #: "Type: message" of the newest exception (what an event without a message says)
    described: str
    #: the standard traceback text, or ``None`` when the newest exception was never raised
    traceback: str | None
    fingerprint: str
    #: the category the exception types say (newest first), or ``None``
    category: str | None


class ChainMemo:
    """The facts of each exception chain seen, for one app (its traceback limit)."""

    def __init__(self, traceback_limit: int, size: int = MAX_CHAINS):
        self.traceback_limit = traceback_limit
        self.size = size
        # key -> _Entry. The entry holds the types and code objects the key names by id, which
        # keeps each id in a key from being another object's while the entry is here.
        self._known: dict[tuple[Any, ...], _Entry] = {}

    def facts(self, exc_data: ExceptionData) -> ChainFacts:
        # offsets as they are (small ints), code objects by id: hashing a code object hashes
        # its bytecode, constants and names, 0.13 us each. An exception without frames (made,
        # never raised) is fingerprinted by its message: then the message is in the key.
        messages: str | tuple[str, ...]
        if len(exc_data) == 1:  # no chain: the common case, without a loop
            kind, messages, frames, note = exc_data[0]
            key: tuple[Any, ...] = (id(kind), note, frames[1::2], *map(id, frames[::2]))
            if not frames:
                key += (messages,)
        else:
            key, messages = (), ()
            for kind, message, frames, note in exc_data:
                key += (id(kind), note, frames[1::2], *map(id, frames[::2]))
                if not frames:
                    key += (message,)
                messages += (message,)
        entry = self._known.get(key)
        if entry is None:
            if len(self._known) >= self.size:
                self._known.clear()
            entry = self._known[key] = _Entry(exc_data)
        elif entry.messages == messages:  # the same error again: nothing to join
            return entry.facts  # type: ignore[return-value]
        message = exc_data[-1][1]
        if entry.head is None:  # newest never raised: no traceback
            traceback = None
        elif entry.pieces is None:  # one exception: its text is the head and the message
            traceback = exception_text(entry.head, message)
            if len(traceback) > self.traceback_limit:
                traceback = truncate_traceback(traceback, self.traceback_limit)
        else:
            traceback = join_traceback(entry.pieces, exc_data, self.traceback_limit)
        facts = tuple.__new__(  # ChainFacts(...) without the call through its __new__
            ChainFacts,
            (
                entry.error_type,
                f"{entry.error_type}: {message}",
                traceback,
                entry.fingerprint,
                entry.category,
            ),
        )
        entry.messages, entry.facts = messages, facts
        return facts

    def __len__(self) -> int:
        return len(self._known)


class _Entry:
    """What the memo keeps of one chain: its facts but for the messages, and the last facts."""

    __slots__ = (
        "held",
        "error_type",
        "head",
        "pieces",
        "fingerprint",
        "category",
        "messages",
        "facts",
    )

    def __init__(self, exc_data: ExceptionData):
        self.held = tuple((kind, frames[::2]) for kind, _, frames, _ in exc_data)
        self.error_type: str = exc_data[-1][0].__name__
        pieces = traceback_pieces(exc_data)
        #: the text before the newest exception's ": message" (``None``: never raised); with
        #: one exception, all of it (then ``pieces`` is ``None``: nothing else to join)
        self.head: str | None = None
        self.pieces: Pieces | None = pieces
        if exc_data[-1][2]:
            head, type_name, _ = pieces[-1]
            self.head = head + type_name
            if len(pieces) == 1:
                self.pieces = None
        self.fingerprint = fingerprint.exception_fingerprint(exc_data)
        self.category = categories.for_types([info[0] for info in reversed(exc_data)])
        self.messages: str | tuple[str, ...] | None = None
        self.facts: ChainFacts | None = None
