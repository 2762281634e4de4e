"""Configuration keys, their TickStockAppV2 fallbacks, and validation.

Every key is read once, in ``init_app``; a bad value raises :class:`ConfigurationError`
naming the key, so a typo fails at start-up rather than silently disabling monitoring.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

PREFIX = "TICKSTOCK_MONITOR_"

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_SOURCE = "TickStockAppV2"

#: Loggers whose records are never published: our own, and the loggers TickStockAppV2 uses to
#: re-log every message it receives on ``tickstock:errors`` (publishing those would loop).
DEFAULT_IGNORE_LOGGERS = (
    "flask_tickstock_monitor",
    "src.core.services.error_subscriber",
    "src.core.services.enhanced_logger",
)


class ConfigurationError(RuntimeError):
    """A configuration value is missing or invalid; the message names the key."""


@dataclass(frozen=True)
class MonitorConfig:
    """The validated configuration of one app."""

    enabled: bool = True
    redis_url: str = DEFAULT_REDIS_URL
    errors_enabled: bool = True
    health_interval: float = 30.0
    component: str = "app"
    source: str = DEFAULT_SOURCE
    channel_errors: str = "tickstock:errors"
    channel_monitoring: str = "tickstock:monitoring"
    channel_invalidation: str = "tickstock:cache:invalidation"
    queue_size: int = 10_000
    batch_size: int = 512
    publish_linger: float = 0.02
    socket_timeout: float = 0.5
    exit_flush_timeout: float = 2.0
    capture_logging: bool = True
    log_level: int = logging.ERROR
    ignore_loggers: tuple[str, ...] = DEFAULT_IGNORE_LOGGERS
    capture_5xx: bool = True
    include_query: bool = False
    include_headers: bool = False
    include_client_ip: bool = False
    scrub_keys: tuple[str, ...] = ()
    scrub_headers: tuple[str, ...] = ()
    throttle_window: float = 60.0
    throttle_limit: int = 10
    max_message_chars: int = 4_096
    max_traceback_chars: int = 32_768
    max_context_bytes: int = 16_384
    max_context_depth: int = 5
    max_context_items: int = 50


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


class ConfigReader:
    """Reads keys from ``app.config``, then the TickStockAppV2 names, then the environment."""

    def __init__(self, config: Mapping[str, Any], environ: Mapping[str, str] | None = None):
        self.config = config
        self.environ = os.environ if environ is None else environ

    def raw(self, name: str, *fallbacks: str) -> tuple[str, Any] | None:
        """Return ``(key, value)`` of the first key that is set, or ``None``."""
        key = PREFIX + name
        if self.config.get(key) is not None:
            return key, self.config[key]
        for fallback in fallbacks:
            if self.config.get(fallback) is not None:
                return fallback, self.config[fallback]
        for fallback in fallbacks:
            if fallback in self.environ:
                return fallback, self.environ[fallback]
        return None

    def get(
        self, name: str, default: Any, convert: Callable[[str, Any], Any], *fallbacks: str
    ) -> Any:
        found = self.raw(name, *fallbacks)
        if found is None:
            return default
        return convert(*found)


def resolve_redis_url(reader: ConfigReader) -> str:
    found = reader.raw("REDIS_URL", "REDIS_URL")
    if found is not None:
        return as_str(*found)
    host = reader.raw("_UNUSED_", "REDIS_HOST")
    if host is None:
        return DEFAULT_REDIS_URL
    host_name = as_str(*host)
    port = reader.raw("_UNUSED_", "REDIS_PORT")
    port_number = as_number(*port, int, minimum=1) if port else 6379
    db = reader.raw("_UNUSED_", "REDIS_DB")
    db_number = as_number(*db, int, minimum=0) if db else 0
    password = reader.raw("_UNUSED_", "REDIS_PASSWORD")
    auth = f":{quote(str(password[1]), safe='')}@" if password and password[1] else ""
    return f"redis://{auth}{host_name}:{port_number}/{db_number}"


def load_config(
    config: Mapping[str, Any], import_name: str, environ: Mapping[str, str] | None = None
) -> MonitorConfig:
    """Build and validate the configuration of one app (raises :class:`ConfigurationError`)."""
    r = ConfigReader(config, environ)
    number = as_number

    def positive(kind: type) -> Callable[[str, Any], Any]:
        return lambda key, value: number(key, value, kind, minimum=0, allow_zero=False)

    def at_least(kind: type, minimum: float) -> Callable[[str, Any], Any]:
        return lambda key, value: number(key, value, kind, minimum=minimum)

    from .topology import url_from_config
    from .transport import check_url  # the transport owns the URL schemes it can serve

    redis_url = url_from_config(r, resolve_redis_url(r))
    try:
        check_url(redis_url)
    except ValueError as exc:
        raise ConfigurationError(f"{PREFIX}REDIS_URL: {exc}") from None

    return MonitorConfig(
        enabled=r.get("ENABLED", True, as_bool, "MONITORING_ENABLED"),
        redis_url=redis_url,
        errors_enabled=r.get("ERRORS_ENABLED", True, as_bool, "ERROR_CHANNEL_ENABLED"),
        health_interval=r.get("HEALTH_INTERVAL", 30.0, positive(float), "HEALTH_CHECK_INTERVAL"),
        component=r.get("COMPONENT", import_name, as_str),
        source=r.get("SOURCE", DEFAULT_SOURCE, as_str),
        channel_errors=r.get("CHANNEL_ERRORS", "tickstock:errors", as_str, "REDIS_ERROR_CHANNEL"),
        channel_monitoring=r.get("CHANNEL_MONITORING", "tickstock:monitoring", as_str),
        channel_invalidation=r.get("CHANNEL_INVALIDATION", "tickstock:cache:invalidation", as_str),
        queue_size=r.get("QUEUE_SIZE", 10_000, positive(int)),
        batch_size=r.get("BATCH_SIZE", 512, positive(int)),
        publish_linger=r.get("PUBLISH_LINGER", 0.02, at_least(float, 0)),
        socket_timeout=r.get("SOCKET_TIMEOUT", 0.5, positive(float)),
        exit_flush_timeout=r.get("EXIT_FLUSH_TIMEOUT", 2.0, at_least(float, 0)),
        capture_logging=r.get("CAPTURE_LOGGING", True, as_bool),
        log_level=r.get("LOG_LEVEL", logging.ERROR, as_level),
        ignore_loggers=DEFAULT_IGNORE_LOGGERS + r.get("IGNORE_LOGGERS", (), as_str_tuple),
        capture_5xx=r.get("CAPTURE_5XX", True, as_bool),
        include_query=r.get("INCLUDE_QUERY", False, as_bool),
        include_headers=r.get("INCLUDE_HEADERS", False, as_bool),
        include_client_ip=r.get("INCLUDE_CLIENT_IP", False, as_bool),
        scrub_keys=r.get("SCRUB_KEYS", (), as_str_tuple),
        scrub_headers=r.get("SCRUB_HEADERS", (), as_str_tuple),
        throttle_window=r.get("THROTTLE_WINDOW", 60.0, positive(float)),
        throttle_limit=r.get("THROTTLE_LIMIT", 10, at_least(int, 0)),
        max_message_chars=r.get("MAX_MESSAGE_CHARS", 4_096, at_least(int, 64)),
        max_traceback_chars=r.get("MAX_TRACEBACK_CHARS", 32_768, at_least(int, 256)),
        max_context_bytes=r.get("MAX_CONTEXT_BYTES", 16_384, at_least(int, 256)),
        max_context_depth=r.get("MAX_CONTEXT_DEPTH", 5, at_least(int, 1)),
        max_context_items=r.get("MAX_CONTEXT_ITEMS", 50, at_least(int, 1)),
    )
