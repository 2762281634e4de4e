"""What an error event takes from its exception chain, worked out once per chain.

Errors recur at the same places, so the parts of an event that depend only on the chain (its
type name, the "Type: message" line, the traceback text, the default fingerprint and the
category the exception types say) are remembered, keyed by the chain's ids, types, messages and
instruction offsets. Making them anew cost the publisher 26k instructions an event of a 6-frame
traceback (callgrind), 40 % of an event's build; a hit costs the key and one lookup.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import categories, fingerprint
from .tracebacks import ExceptionData, format_traceback

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
        # key -> (the types and code objects the key names by id, the facts). Holding them
        # keeps each id in a key from being another object's while the entry is here.
        self._known: dict[tuple[Any, ...], tuple[tuple[Any, ...], ChainFacts]] = {}

    def facts(self, exc_data: ExceptionData) -> ChainFacts:
        key: tuple[Any, ...] = ()
        for kind, message, frames, note in exc_data:
            # offsets as they are (small ints), code objects by id: hashing a code object
            # hashes its bytecode, constants and names, 0.13 us each
            key += (id(kind), message, note, frames[1::2], *map(id, frames[::2]))
        known = self._known.get(key)
        if known is not None:
            return known[1]
        facts = make_facts(exc_data, self.traceback_limit)
        if len(self._known) >= self.size:
            self._known.clear()
        held = tuple((kind, frames[::2]) for kind, _, frames, _ in exc_data)
        self._known[key] = (held, facts)
        return facts

    def __len__(self) -> int:
        return len(self._known)


def make_facts(exc_data: ExceptionData, traceback_limit: int) -> ChainFacts:
    kind, message, frames, _note = exc_data[-1]
    error_type = kind.__name__
    return ChainFacts(
        error_type,
        f"{error_type}: {message}",
        format_traceback(exc_data, traceback_limit) if frames else None,
        fingerprint.exception_fingerprint(exc_data),
        categories.for_types([info[0] for info in reversed(exc_data)]),
    )
