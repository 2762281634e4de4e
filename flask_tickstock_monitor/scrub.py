"""The scrubber: secrets out of an error's context, and its depth, breadth and size capped.

It runs on the publisher thread (and for ``MonitoringPublisher`` on the caller's), never on a
request thread: what a request hands over is a plain dict, cleaned later.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .events import TRUNCATED, dumps, truncate

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
