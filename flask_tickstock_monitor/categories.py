"""An error's ``category``, in TickStockAppV2's terms (its ``ERROR_CATEGORIES``, and ``system``,
the catch-all its own start-up code logs with), so that its ``error_logs.category`` is filled.

Worked out on the thread that builds the event (never a request's): from the exception types
of the chain, newest first (each type's classes, by name and by module), then from the logger
or component name; else ``system``. A category given per call, or set by ``before_send``, wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: TickStockAppV2's ``ERROR_CATEGORIES``, in its order.
APPV2_CATEGORIES = (
    "pattern",
    "database",
    "network",
    "validation",
    "performance",
    "security",
    "configuration",
    "integration",
    "websocket",
    "redis",
)
#: Not in that list, but what TickStockAppV2 itself logs uncategorised errors with.
FALLBACK = "system"
CATEGORIES = (*APPV2_CATEGORIES, FALLBACK)

#: Top-level modules whose exceptions say what failed.
_MODULES = {
    "redis": "redis",
    "sqlalchemy": "database",
    "psycopg": "database",
    "psycopg2": "database",
    "sqlite3": "database",
    "pymysql": "database",
    "asyncpg": "database",
    "socket": "network",
    "ssl": "network",
    "requests": "network",
    "urllib3": "network",
    "httpx": "network",
    "aiohttp": "network",
    "http": "network",
    "socketio": "websocket",
    "engineio": "websocket",
    "flask_socketio": "websocket",
    "websocket": "websocket",
    "websockets": "websocket",
    "jwt": "security",
    "itsdangerous": "security",
    "flask_wtf": "security",
    "pydantic": "validation",
    "pydantic_core": "validation",
    "marshmallow": "validation",
    "jsonschema": "validation",
}

#: Classes, by name, anywhere in an exception's MRO (first match of the MRO wins).
_CLASSES = {
    # werkzeug's: a missing form/query key is bad input, not a bug (it is also a KeyError)
    "BadRequestKeyError": "validation",
    "BadRequest": "validation",
    "Unauthorized": "security",
    "Forbidden": "security",
    "CSRFError": "security",
    "PermissionError": "security",
    "ValidationError": "validation",
    "ValueError": "validation",
    "UnicodeError": "validation",
    "ConnectionError": "network",
    "TimeoutError": "network",
    "MemoryError": "performance",
    "RecursionError": "performance",
    "ImportError": "configuration",
    "ConfigurationError": "configuration",
    "ImproperlyConfigured": "configuration",
}

#: Words of a logger or component name (split at ``.``, ``_``, ``-``, ``:``).
_WORDS = {
    "redis": "redis",
    "db": "database",
    "database": "database",
    "sql": "database",
    "sqlalchemy": "database",
    "postgres": "database",
    "postgresql": "database",
    "psycopg": "database",
    "sqlite": "database",
    "socketio": "websocket",
    "engineio": "websocket",
    "websocket": "websocket",
    "websockets": "websocket",
    "pattern": "pattern",
    "patterns": "pattern",
    "tickstockpl": "integration",
    "integration": "integration",
    "auth": "security",
    "security": "security",
    "login": "security",
    "config": "configuration",
    "configuration": "configuration",
    "requests": "network",
    "urllib3": "network",
    "httpx": "network",
    "network": "network",
}
_SPLIT = re.compile(r"[._\-:\s/]+")

_by_type: dict[type, str | None] = {}
_by_name: dict[str, str | None] = {}


def for_type(kind: type) -> str | None:
    """The category an exception class says, or ``None``."""
    found = _by_type.get(kind, "")
    if found != "":
        return found
    category = None
    for base in kind.__mro__:
        top = base.__module__.partition(".")[0]
        if top in _MODULES:
            category = _MODULES[top]
            break
        if base.__name__ in _CLASSES:
            category = _CLASSES[base.__name__]
            break
    if len(_by_type) < 1_000:
        _by_type[kind] = category
    return category


def for_name(name: str | None) -> str | None:
    """The category a logger or component name says, or ``None``."""
    if not name:
        return None
    found = _by_name.get(name, "")
    if found != "":
        return found
    category = next((_WORDS[word] for word in _SPLIT.split(name.lower()) if word in _WORDS), None)
    if len(_by_name) < 10_000:
        _by_name[name] = category
    return category


def for_types(types: Iterable[type]) -> str | None:
    """The category the first of ``types`` that says one says (newest first), or ``None``."""
    for kind in types:
        category = for_type(kind)
        if category is not None:
            return category
    return None


def derive(types: Iterable[type], name: str | None) -> str:
    """The category of an error: the exception types (newest first), then ``name``."""
    return for_types(types) or for_name(name) or FALLBACK


def check(category: object) -> str | None:
    """A per-call category: ``None``, or a non-empty string (any: the app's list is open)."""
    if category is None or (isinstance(category, str) and category.strip()):
        return category
    raise ValueError(f"category must be a non-empty string, got {category!r}")
