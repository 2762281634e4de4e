"""Message builders and validators for the three channels (see DESIGN.md, "Message contracts").

Builders run on the publisher thread, never on a request thread. Validators are the only way a
received message reaches any code: JSON only, nothing is unpickled or evaluated.
"""

from __future__ import annotations

import functools
import itertools
import json
import linecache
import math
import os
import random
import re
import types
from collections.abc import Iterable, Mapping
from typing import Any

SEVERITIES = ("warning", "error", "critical")
STATUSES = ("healthy", "degraded", "unhealthy")
ACTIONS = ("invalidate", "clear")

#: Keys whose values are replaced by :data:`SCRUBBED` wherever they appear in ``context``.
DEFAULT_SCRUB_KEYS = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "jwt",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "authorization",
    "auth",
    "cookie",
    "session",
    "csrf",
    "xsrf",
    "private_key",
    "credit_card",
    "creditcard",
    "card_number",
    "cc_num",
    "cvv",
    "cvc",
    "ssn",
    "social_security",
    "dsn",
)
#: Request headers whose values are never published.
DEFAULT_SCRUB_HEADERS = (
    "authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "proxy-authorization",
)
SCRUBBED = "[scrubbed]"
TRUNCATED = "…[truncated]"


try:  # the "fast" extra: ~10x quicker than the standard library on our small messages
    import orjson
except ImportError:  # pragma: no cover - depends on the install
    orjson = None  # type: ignore[assignment]


def dumps(message: Any) -> bytes:
    """Serialise a message as compact JSON; values JSON cannot hold become their ``str``."""
    if orjson is not None:
        try:
            return orjson.dumps(message, default=str)
        except TypeError:  # ints past 64 bits, non-string keys: the slow path can do them
            pass
    return json.dumps(message, default=str, separators=(",", ":")).encode()


class InvalidMessage(ValueError):
    """A received message broke its contract. ``reason`` is a short, countable code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_V4_SET = (0x4000 << 64) | (0x8000 << 48)


def _uuid_text(number: int) -> str:
    h = "%032x" % (number & _V4_CLEAR | _V4_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# A process's ids: 80 random bits for the process (new in a forked child: the salt, the first
# 24 characters of each id, with the version 4 and variant bits set) above a 48-bit counter
# that starts at a random point (so that the Nth id of every process does not end alike) and
# steps by a large odd number, so ids do not look serial: the low 48 bits of start + k * step
# differ for every k below 2**48 (one to one, as an odd multiplier is), at the cost of one
# addition where a multiplication cost 12 % of an id. An id costs one format of the counter;
# ``id_number`` takes the number now and lets ``id_text`` make the text later (on the publisher
# thread), the same text however often it is asked.
_id_numbers = itertools.count()
_id_salt = 0
_id_prefix = ""
_COUNTER_BITS = (1 << 48) - 1
_ID_STEP = 0x9E3779B97F4A7C15 & _COUNTER_BITS


def _new_id_salt() -> None:
    global _id_numbers, _id_salt, _id_prefix
    _id_salt = random.getrandbits(80) << 48
    _id_prefix = _uuid_text(_id_salt)[:24]
    _id_numbers = itertools.count(random.getrandbits(48), _ID_STEP)  # 2**48 ids before a wrap


_new_id_salt()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_id_salt)


def new_id() -> str:
    """A version 4 UUID string, unique to this process (random salt, counter): 3x cheaper than
    ``uuid.uuid4()`` on the request thread. Ids are not secrets."""
    return _id_prefix + "%012x" % (next(_id_numbers) & _COUNTER_BITS)


def id_number() -> int:
    """A number that :func:`id_text` turns into this process's next unique version 4 UUID."""
    return _id_salt | (next(_id_numbers) & _COUNTER_BITS)


def id_text(number: int) -> str:
    """The UUID string of an :func:`id_number`."""
    salt = number & ~_COUNTER_BITS
    prefix = _id_prefix if salt == _id_salt else _uuid_text(salt)[:24]  # else: made before a fork
    return prefix + "%012x" % (number & _COUNTER_BITS)


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(TRUNCATED))] + TRUNCATED


class Scrubber:
    """Removes secrets from a context and caps its depth, breadth and size (truncating, never
    dropping)."""

    def __init__(
        self,
        keys: Iterable[str] = (),
        headers: Iterable[str] = (),
        *,
        max_depth: int = 5,
        max_items: int = 50,
        max_bytes: int = 16_384,
        max_string: int = 1_024,
    ):
        words = [re.escape(k.lower()).replace("_", "[-_ ]?") for k in (*DEFAULT_SCRUB_KEYS, *keys)]
        self._key = re.compile("|".join(words), re.IGNORECASE)
        self.headers = {h.lower() for h in (*DEFAULT_SCRUB_HEADERS, *headers)}
        self.max_depth = max_depth
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_string = max_string
        self._verdicts: dict[str, bool] = {}

    def is_secret_key(self, key: str) -> bool:
        secret = self._verdicts.get(key)
        if secret is None:
            secret = bool(self._key.search(key))
            if len(self._verdicts) < 4096:  # context keys repeat: remember the verdict
                self._verdicts[key] = secret
        return secret

    def headers_view(self, headers: Iterable[tuple[str, str]]) -> dict[str, str]:
        return {
            name: SCRUBBED if name.lower() in self.headers else value for name, value in headers
        }

    def scrub(self, value: Any) -> Any:
        """``value`` without secrets and within the caps: the same object when it needs no change
        (the usual small context), else a cleaned copy."""
        if type(value) is dict and len(value) <= self.max_items:
            # The common context (a few short scalar fields, no secret key) needs no copy: say
            # so in one pass instead of rebuilding it and measuring its JSON. Inline, not a
            # method of its own: a call is a fifth of this check's cost.
            budget = self.max_bytes // 6  # JSON escaping can grow a character to six
            max_string = self.max_string
            verdicts = self._verdicts
            for key, item in value.items():
                # A key already judged not secret is in the verdicts as False: one lookup.
                if verdicts.get(key) is not False and (
                    type(key) is not str or self.is_secret_key(key)
                ):
                    break
                kind = type(item)
                if kind is str:
                    if len(item) > max_string:
                        break
                    budget -= len(item) + len(key) + 24
                elif kind is int or item is None or kind is bool:
                    budget -= len(key) + 24
                elif kind is float and math.isfinite(item):
                    budget -= len(key) + 24
                else:
                    break
            else:
                if budget >= 0:
                    return value
        cleaned = self._clean(value, 0, self.max_string)
        size = len(dumps(cleaned))
        string_cap = self.max_string
        # Shrink every string until the whole context fits; structure is kept so nothing is lost
        # silently, each shortened value says it was truncated.
        while size > self.max_bytes and string_cap > 16:
            string_cap //= 4
            cleaned = self._clean(value, 0, string_cap)
            size = len(dumps(cleaned))
        if size > self.max_bytes:
            return {"_truncated": truncate(dumps(cleaned).decode(), self.max_bytes // 2)}
        return cleaned

    # Called as ``scrubber(value)`` too; the publisher thread calls ``scrub``: an instance's
    # ``__call__`` goes through the type's call slot, which costs an event more than the
    # whole check of a small context (counted with callgrind).
    __call__ = scrub

    def _clean(self, value: Any, depth: int, string_cap: int) -> Any:
        kind = type(value)
        if kind is str:
            return value if len(value) <= string_cap else truncate(value, string_cap)
        if kind is int or value is None or kind is bool:
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if isinstance(value, str):
            return truncate(value, string_cap)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, bytes):
            return truncate(value.decode("utf-8", "replace"), string_cap)
        if depth >= self.max_depth:
            return TRUNCATED
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for i, (key, item) in enumerate(value.items()):
                if i >= self.max_items:
                    out["_truncated_items"] = len(value) - self.max_items
                    break
                name = str(key)
                out[name] = (
                    SCRUBBED
                    if self.is_secret_key(name)
                    else self._clean(item, depth + 1, string_cap)
                )
            return out
        if isinstance(value, (list, tuple, set, frozenset)):
            items = list(value)
            out_list = [
                self._clean(item, depth + 1, string_cap) for item in items[: self.max_items]
            ]
            if len(items) > self.max_items:
                out_list.append(f"{TRUNCATED} {len(items) - self.max_items} more")
            return out_list
        return truncate(repr(value), string_cap)


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
    parts: list[str] = []
    for kind, message, frames, note in data:
        if frames:
            parts.append("Traceback (most recent call last):\n")
        parts.extend(map(_frame_text, frames[::2], frames[1::2]))
        type_name = _type_name(kind)
        parts.append(f"{type_name}: {message}\n" if message else f"{type_name}\n")
        if note:
            parts.append(note)
    text = "".join(parts)
    if len(text) <= limit:
        return text
    # Keep the end: the innermost frames and the exception line are what a reader needs.
    return TRUNCATED + text[-(limit - len(TRUNCATED)) :]


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _type_name(kind: type) -> str:
    """How a traceback names an exception type: qualified unless it is a builtin."""
    module = kind.__module__
    if module in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{module}.{kind.__qualname__}"


def error_event(
    source: str,
    component: str,
    severity: str,
    message: str,
    timestamp: float,
    error_id: str | None = None,
    error_type: str | None = None,
    traceback_text: str | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The error contract: a superset of the seed card's and TickStockAppV2's ``ErrorMessage``;
    callers add their optional fields (``origin``, ``instance_id``, …) to what it returns. The
    one place it is built, for the automatic capture (on the publisher thread, positionally:
    called with keywords and ``**extra`` it cost that thread a quarter more per event) and
    ``MonitoringPublisher`` alike.
    ``context`` becomes the event's own: both callers hand over a scrubbed copy."""
    event: dict[str, Any] = {
        "type": "application_error",
        "error_id": error_id or new_id(),
        "source": source,
        "severity": severity,
        "component": component,
        "message": message,
        "timestamp": timestamp,
        "context": {} if context is None else context,
    }
    if error_type:
        event["error_type"] = error_type
    if traceback_text:
        event["traceback"] = traceback_text
    return event


# --- validation of what arrives on a channel ------------------------------------------------


def parse(raw: bytes | str, max_bytes: int) -> dict[str, Any]:
    """Decode one channel payload into a JSON object, or raise :class:`InvalidMessage`."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not isinstance(raw, (bytes, bytearray)):
        raise InvalidMessage("bad_payload", type(raw).__name__)
    if len(raw) > max_bytes:
        raise InvalidMessage("too_large", f"{len(raw)} bytes > {max_bytes}")
    data: Any = _NOT_READ
    if orjson is not None and _LONG_DIGITS not in raw.translate(_DIGITS_AS_ZERO):
        # orjson reads a 1.3 KB error event in 2.1 us, the standard library in 5.4 us. It reads
        # the same values, except integers past 64 bits, which it turns into floats: a run of
        # 19 digits sends the message to the standard library (1.4 us to look for one). What
        # orjson rejects, the standard library reads again, and rejects or accepts as always
        # (a lone surrogate escape, say).
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    if data is _NOT_READ:
        data = _read_json(raw)
    if not isinstance(data, dict):
        raise InvalidMessage("not_object", type(data).__name__)
    return data  # type: ignore[no-any-return]


def _read_json(raw: bytes | bytearray) -> Any:
    """The standard library's reading of ``raw``, or :class:`InvalidMessage` saying why not."""
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage("not_utf8") from None
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise InvalidMessage("too_deep") from None
    except (ValueError, InvalidMessage) as exc:
        raise InvalidMessage("bad_json", str(exc)[:100]) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every message: json.loads with an option builds a new one each call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
#: Every digit as "0", anything else as a space: a run of 19 digits becomes :data:`_LONG_DIGITS`.
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
#: The shortest integer that may not fit in 64 bits (-9999999999999999999).
_LONG_DIGITS = b"0" * 19
#: Not read yet (``None`` is what JSON's ``null`` reads as).
_NOT_READ = object()


def _require(data: Mapping[str, Any], key: str, kinds: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise InvalidMessage("missing_field", key)
    value = data[key]
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in _tuple(kinds):
        raise InvalidMessage("bad_type", key)
    return value


def _tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _timestamp(data: Mapping[str, Any]) -> float:
    value = _require(data, "timestamp", (int, float))
    if not math.isfinite(value) or value < 0:
        raise InvalidMessage("bad_value", "timestamp")
    return float(value)


def validate_error(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Check the fields TickStockAppV2's ErrorSubscriber requires, plus our own types."""
    for key in ("error_id", "source", "message"):
        _require(data, key, str)
    severity = _require(data, "severity", str)
    if severity not in (*SEVERITIES, "info", "debug"):
        raise InvalidMessage("bad_value", "severity")
    _timestamp(data)
    if "context" in data and data["context"] is not None and not isinstance(data["context"], dict):
        raise InvalidMessage("bad_type", "context")
    return data


def validate_health(data: Mapping[str, Any]) -> Mapping[str, Any]:
    _require(data, "component", str)
    status = _require(data, "status", str)
    if status not in STATUSES:
        raise InvalidMessage("bad_value", "status")
    _timestamp(data)
    if "metrics" in data and not isinstance(data["metrics"], dict):
        raise InvalidMessage("bad_type", "metrics")
    if "instance" in data and not isinstance(data["instance"], dict):
        raise InvalidMessage("bad_type", "instance")
    return data


def validate_invalidation(data: Mapping[str, Any], *, max_keys: int = 10_000) -> Mapping[str, Any]:
    if data.get("type") != "cache_invalidation":
        raise InvalidMessage("bad_value", "type")
    cache = _require(data, "cache", str)
    if not cache or len(cache) > 200:
        raise InvalidMessage("bad_value", "cache")
    action = _require(data, "action", str)
    if action not in ACTIONS:
        raise InvalidMessage("bad_value", "action")
    _timestamp(data)
    if action == "invalidate":
        keys = _require(data, "keys", list)
        if not keys:
            raise InvalidMessage("bad_value", "keys")
        if len(keys) > max_keys:
            raise InvalidMessage("too_many_keys", str(len(keys)))
        if not all(isinstance(k, str) for k in keys):
            raise InvalidMessage("bad_type", "keys")
    elif data.get("keys") is not None:
        raise InvalidMessage("bad_value", "keys")
    scope = data.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise InvalidMessage("bad_type", "scope")
    for key in ("origin", "invalidation_id"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise InvalidMessage("bad_type", key)
    return data
