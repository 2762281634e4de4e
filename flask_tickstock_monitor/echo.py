"""Proof that a log record is the echo of an error this process published.

TickStockAppV2 re-logs every message it receives on ``tickstock:errors`` (its ErrorSubscriber
hands it to EnhancedLogger, which logs it again at its severity). Publishing that record would
make a loop. A record is an echo only when something proves it is ours, never because its text
looks like a message we sent (the same ``logger.error`` text, logged again, is a new error):

- one of our recent ``error_id``\\ s is in the record's fields or in its text;
- it was logged inside :func:`handling` a message of ours (MonitoringSubscriber's callbacks);
- it was logged while the code that called the logger holds a received message that carries
  one of our ids: the frames above the logging call (outside a request) hold the raw message,
  its parsed dict, ... as TickStockAppV2's subscriber and EnhancedLogger do.

A record logged while handling someone else's message is not an echo of ours; its event names
that message in ``echo_of``, which is what lets the other side recognise its own echo in turn.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUID_TEXT = re.compile(_UUID)
_UUID_BYTES = re.compile(_UUID.encode())
#: Received messages are looked for in this many frames above the logging call, in strings up
#: to this size (a message is capped far below it by every reader).
MAX_FRAMES = 8
MAX_SCANNED = 65_536
#: Frames not looked into: logging's, and ours (what we received is marked by handling()).
_SKIPPED = (os.path.dirname(logging.__file__), os.path.dirname(os.path.abspath(__file__)))

#: The ids of the received error message whose handling is running (see :func:`handling`).
_handling: ContextVar[tuple[str, ...]] = ContextVar("tickstock_handling", default=())


def message_ids(message: Mapping[str, Any]) -> tuple[str, ...]:
    """The ids a received error message names: its own and the one it echoes."""
    return tuple(
        value for value in (message.get("error_id"), message.get("echo_of")) if type(value) is str
    )


@contextmanager
def handling(message: Mapping[str, Any]) -> Iterator[None]:
    """What is logged inside is logged while handling ``message`` (a received error event)."""
    token = _handling.set(message_ids(message))
    try:
        yield
    finally:
        _handling.reset(token)


def handling_ours(recent: RecentIds) -> bool:
    """Inside :func:`handling` a message of ours."""
    return any(error_id in recent for error_id in _handling.get())


class RecentIds:
    """The ids of the error events this process built lately (at least the last ``size``, at
    most twice that): added on the building threads, asked on any.

    Two generations of sets, no lock: an add is one set operation, and when the newer
    generation is full it becomes the older one and the oldest is let go. Under eventlet a
    lock here is Python code on every event. Two building threads (the publisher's and the
    error log writer's) turning the generations over at the same moment may let one set go
    early: at worst an id of the last ``size`` is forgotten, so one echo of it would be
    published, whose own echo is then known (its id was just added).
    """

    def __init__(self, size: int = 1_024):
        self._newer: set[str] = set()
        self._older: set[str] = set()
        self._size = size

    def add(self, error_id: str) -> None:
        newer = self._newer
        newer.add(error_id)
        if len(newer) >= self._size:
            self._older = newer
            self._newer = set()

    def __contains__(self, error_id: object) -> bool:
        return error_id in self._newer or error_id in self._older

    def __len__(self) -> int:
        return len(self._newer | self._older)


class Proof:
    """What a look at one record found: ``ours`` (an id of ours: an echo) or ``foreign`` (the
    id of another's message being handled), or neither."""

    __slots__ = ("foreign", "ours")

    def __init__(self) -> None:
        self.ours: str | None = None
        self.foreign: str | None = None

    def see(self, ids: Any, recent: RecentIds) -> bool:
        """Note ``ids``; true once one of ours was seen."""
        for error_id in ids:
            if error_id in recent:
                self.ours = error_id
                return True
            if self.foreign is None:
                self.foreign = error_id
        return False


def examine(record: logging.LogRecord, text: str, recent: RecentIds, frames: bool) -> Proof:
    """Look for proof that ``record`` is an echo of ours; ``frames``: also in the frames of the
    code that logged it (off the request path: a request does not handle a received message)."""
    proof = Proof()
    fields = record.__dict__
    for key in ("error_id", "echo_of"):
        value = fields.get(key)
        if type(value) is str and value in recent:
            proof.ours = value
            return proof
    if proof.see(_handling.get(), recent):
        return proof
    if len(text) >= 36 and len(recent):  # a uuid in the text is ours, or proves nothing
        proof.ours = next((i for i in _UUID_TEXT.findall(text) if i in recent), None)
        if proof.ours is not None:
            return proof
    if frames:
        _examine_frames(proof, recent)
    return proof


def _message_ids(value: Any) -> list[Any]:
    """The ids in a local that may be a received message: its JSON text or bytes, the dict it
    was parsed into, or redis-py's message dict (the JSON under ``data``)."""
    kind = type(value)
    if kind is str:
        return (
            _UUID_TEXT.findall(value) if "error_id" in value and len(value) <= MAX_SCANNED else []
        )
    if kind is bytes or kind is bytearray:
        if b"error_id" not in value or len(value) > MAX_SCANNED:
            return []
        return [found.decode() for found in _UUID_BYTES.findall(value)]
    if kind is dict:
        ids = [item for item in (value.get("error_id"), value.get("echo_of")) if type(item) is str]
        data = value.get("data")
        return ids + _message_ids(data) if data is not None and type(data) is not dict else ids
    return []


def _examine_frames(proof: Proof, recent: RecentIds) -> None:
    """Up the frames of the logging call, to the thread's or the module's first: a module's
    frame (its globals) and what is below it (the import system) hold no received message."""
    frame = sys._getframe(1)
    looked = 0
    while frame is not None and looked < MAX_FRAMES:
        code = frame.f_code
        if code.co_name == "<module>":
            return
        if not code.co_filename.startswith(_SKIPPED):
            looked += 1
            for value in list(frame.f_locals.values()):
                kind = type(value)
                if kind is str or kind is dict or kind is bytes or kind is bytearray:
                    ids = _message_ids(value)
                    if ids and proof.see(ids, recent):
                        return
        frame = frame.f_back  # type: ignore[assignment]
