"""The checks behind every configuration key: each takes ``(key, value)`` and returns the value
as the monitor wants it, or raises :class:`ConfigurationError` whose message names ``key``."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from .events import SEVERITIES

Converter = Callable[[str, Any], Any]


class ConfigurationError(RuntimeError):
    """A configuration value is missing or invalid; the message names the key."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigurationError(f"{key} must be a boolean (true/false), got {value!r}")


def as_number(
    key: str, value: Any, kind: type, *, minimum: float | None = None, allow_zero: bool = True
) -> Any:
    if isinstance(value, bool):
        raise ConfigurationError(f"{key} must be a number, got {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{key} must be a number, got {value!r}") from None
    if not allow_zero and number <= 0:
        raise ConfigurationError(f"{key} must be greater than 0, got {value!r}")
    if minimum is not None and number < minimum:
        raise ConfigurationError(f"{key} must be at least {minimum}, got {value!r}")
    return number


def positive(kind: type) -> Converter:
    """A number of ``kind`` greater than 0."""
    return lambda key, value: as_number(key, value, kind, minimum=0, allow_zero=False)


def at_least(kind: type, minimum: float) -> Converter:
    return lambda key, value: as_number(key, value, kind, minimum=minimum)


def as_fraction(key: str, value: Any) -> float:
    """A number from 0 up to (not including) 1."""
    number = float(as_number(key, value, float, minimum=0))
    if number >= 1:
        raise ConfigurationError(f"{key} must be below 1, got {value!r}")
    return number


def as_str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{key} must be a non-empty string, got {value!r}")
    return value.strip()


def as_str_tuple(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, Iterable) or isinstance(value, Mapping):
        raise ConfigurationError(f"{key} must be a list of strings, got {value!r}")
    items = tuple(value)
    if not all(isinstance(item, str) and item.strip() for item in items):
        raise ConfigurationError(f"{key} must be a list of non-empty strings, got {value!r}")
    return tuple(item.strip() for item in items)


def as_level(key: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        level = logging.getLevelName(value.strip().upper())
        if isinstance(level, int):
            return level
    raise ConfigurationError(f"{key} must be a logging level name or number, got {value!r}")


def as_severity(key: str, value: Any) -> str:
    severity = str(value).strip().lower()
    if severity not in SEVERITIES:
        raise ConfigurationError(f"{key} must be one of {', '.join(SEVERITIES)}, got {value!r}")
    return severity


def as_path(key: str, value: Any) -> str:
    """A URL rule such as ``/healthz``."""
    path = as_str(key, value)
    if not path.startswith("/"):
        raise ConfigurationError(f"{key} must start with '/', got {value!r}")
    return path


def as_prefix(key: str, value: Any) -> str:
    """A blueprint's URL prefix: ``/monitor`` (a trailing slash dropped), or ``/``."""
    return as_path(key, value).rstrip("/") or "/"


def as_metrics_path(key: str, value: Any) -> str:
    """The metrics endpoint's rule: a path, not the site's root."""
    path = as_path(key, value)
    if path.rstrip("/") == "":
        raise ConfigurationError(f"{key} must not be '/', got {value!r}")
    return path


def as_namespace(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        raise ConfigurationError(f"{key} must be a Socket.IO namespace such as '/', got {value!r}")
    return value


def as_callable(key: str, value: Any) -> Callable[..., Any]:
    """A callable, or ``"package.module:function"`` naming one."""
    if isinstance(value, str) and ":" in value:
        module, _, name = value.partition(":")
        try:
            value = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"{key}: cannot import {value!r} ({exc})") from None
    if not callable(value):
        raise ConfigurationError(f"{key} must be a callable or 'module:function', got {value!r}")
    return value  # type: ignore[no-any-return]


def as_exception_types(key: str, value: Any) -> tuple[type | str, ...]:
    """Exception classes, or their names (``"KeyError"``, ``"myapp.errors.Timeout"``; a string
    may list several, comma-separated)."""
    if isinstance(value, str):
        value = as_str_tuple(key, value)
    elif isinstance(value, type):
        value = (value,)
    if not isinstance(value, Iterable) or isinstance(value, Mapping):
        value = (value,)
    items = tuple(value)
    for item in items:
        is_class = isinstance(item, type) and issubclass(item, BaseException)
        if not is_class and not (isinstance(item, str) and item.strip()):
            raise ConfigurationError(
                f"{key} must be a list of exception classes or class names, got {value!r}"
            )
    return tuple(item.strip() if isinstance(item, str) else item for item in items)


@functools.lru_cache(maxsize=64)
def installed_version(import_name: str) -> str | None:
    """The version of the installed distribution that provides the app's top-level package
    (the release an app reports when none is configured), or ``None``."""
    top = import_name.partition(".")[0]
    try:
        names = importlib.metadata.packages_distributions().get(top) or ()
        return importlib.metadata.version(names[0]) if names else None
    except Exception:  # broken metadata must not stop init_app
        return None


def redis_url_from_parts(
    host: tuple[str, Any],
    port: tuple[str, Any] | None,
    db: tuple[str, Any] | None,
    password: tuple[str, Any] | None,
) -> str:
    """A ``redis://`` URL from TickStockAppV2's ``REDIS_HOST`` / ``_PORT`` / ``_DB`` /
    ``_PASSWORD`` (each a ``(key, value)`` as found, or ``None``)."""
    host_name = as_str(*host)
    port_number = as_number(*port, int, minimum=1) if port else 6379
    db_number = as_number(*db, int, minimum=0) if db else 0
    auth = f":{quote(str(password[1]), safe='')}@" if password and password[1] else ""
    return f"redis://{auth}{host_name}:{port_number}/{db_number}"


DATABASE_DIALECTS = ("postgresql", "sqlite")


def as_database_url(key: str, value: Any) -> Any:
    """A SQLAlchemy URL we can write to; ``postgresql://`` uses psycopg 3 when it is the driver
    installed (SQLAlchemy's default, psycopg2, usually is not). SQLAlchemy is imported only
    here, when a database is configured (the 'db' extra)."""
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import make_url

    try:
        url = make_url(as_str(key, value))
    except sa_exc.ArgumentError:
        raise ConfigurationError(f"{key} is not a database URL: {value!r}") from None
    backend = url.get_backend_name()
    if backend == "postgres":
        url = url.set(drivername="postgresql")
        backend = "postgresql"
    if backend not in DATABASE_DIALECTS:
        raise ConfigurationError(
            f"{key} must be a postgresql:// or sqlite:// URL, got {backend!r} in {value!r}"
        )
    if url.drivername == "postgresql":
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            url = url.set(drivername="postgresql+psycopg")
    try:
        url.get_dialect().import_dbapi()
    except (sa_exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigurationError(
            f"{key}: no driver for {url.drivername!r} ({exc}); install the 'db' extra"
        ) from None
    return url
