"""Adapters that let one invalidation message reach any kind of local cache.

An adapter has two operations, ``invalidate(keys, scope)`` and ``clear(scope)``; :func:`adapt`
picks one by what the registered object can do, in this order:

- a Flask-Caching ``Cache`` or a cachelib backend (``delete_many`` / ``clear``),
- a ``dict`` or any ``MutableMapping`` (delete keys / ``clear``),
- an object with ``invalidate(cache_type=None, key=None)``, as TickStockAppV2's
  ``RelationshipCache``: ``scope`` becomes ``cache_type``, each key in turn,
- an object with ``reset_cache()`` (TickStockAppV2's ``CacheControl``) or ``clear()``: any
  invalidation clears it, since it cannot forget single keys,
- a callable, called with the whole message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

from flask import Flask

Message = Mapping[str, Any]


class CacheAdapter:
    """Applies invalidations to one registered cache."""

    kind = "abstract"

    def __init__(self, cache: Any):
        self.cache = cache

    def invalidate(self, keys: Sequence[str], scope: str | None, message: Message) -> None:
        raise NotImplementedError

    def clear(self, scope: str | None, message: Message) -> None:
        raise NotImplementedError


class FlaskCachingAdapter(CacheAdapter):
    kind = "flask_caching"

    def __init__(self, cache: Any, app: Flask):
        super().__init__(cache)
        self.app = app

    # A Flask-Caching ``Cache`` can serve several apps; the app context picks this app's backend.
    def invalidate(self, keys: Sequence[str], scope: str | None, message: Message) -> None:
        with self.app.app_context():
            self.cache.delete_many(*keys)

    def clear(self, scope: str | None, message: Message) -> None:
        with self.app.app_context():
            self.cache.clear()


class MappingAdapter(CacheAdapter):
    kind = "mapping"

    def invalidate(self, keys: Sequence[str], scope: str | None, message: Message) -> None:
        cache: MutableMapping[Any, Any] = self.cache
        for key in keys:
            cache.pop(key, None)

    def clear(self, scope: str | None, message: Message) -> None:
        self.cache.clear()


class InvalidateAdapter(CacheAdapter):
    """``invalidate(cache_type, key)``; without a scope it forgets everything, as it documents."""

    kind = "invalidate"

    def invalidate(self, keys: Sequence[str], scope: str | None, message: Message) -> None:
        for key in keys:
            self.cache.invalidate(cache_type=scope, key=key)

    def clear(self, scope: str | None, message: Message) -> None:
        self.cache.invalidate(cache_type=scope)


class ResetAdapter(CacheAdapter):
    kind = "reset"

    def __init__(self, cache: Any, method: Callable[[], Any]):
        super().__init__(cache)
        self.method = method

    def invalidate(self, keys: Sequence[str], scope: str | None, message: Message) -> None:
        self.method()

    def clear(self, scope: str | None, message: Message) -> None:
        self.method()


class CallableAdapter(CacheAdapter):
    kind = "callable"

    def invalidate(self, keys: Sequence[str], scope: str | None, message: Message) -> None:
        self.cache(dict(message))

    def clear(self, scope: str | None, message: Message) -> None:
        self.cache(dict(message))


def adapt(cache: Any, app: Flask) -> CacheAdapter:
    """The adapter for ``cache``; ``TypeError`` names what a cache must offer."""
    if callable(getattr(cache, "delete_many", None)) and callable(getattr(cache, "clear", None)):
        return FlaskCachingAdapter(cache, app)
    if isinstance(cache, MutableMapping):
        return MappingAdapter(cache)
    if callable(getattr(cache, "invalidate", None)):
        return InvalidateAdapter(cache)
    for name in ("reset_cache", "clear"):
        method = getattr(cache, name, None)
        if callable(method):
            return ResetAdapter(cache, method)
    if callable(cache):
        return CallableAdapter(cache)
    raise TypeError(
        f"cannot invalidate a {type(cache).__name__}: register a dict or MutableMapping, a"
        " Flask-Caching Cache, an object with invalidate(cache_type, key), reset_cache() or"
        " clear(), or a callable taking the message"
    )
