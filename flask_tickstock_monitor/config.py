"""Every configuration key, its TickStockAppV2 fallbacks, its default and its check, in one table.

Every key is read once, in ``init_app``, before anything is attached to the app; a bad value
raises :class:`ConfigurationError` naming the key, so a typo fails at start-up rather than
silently disabling monitoring. Each plane receives its section (:class:`HealthConfig`, …).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from . import convert as c
from .constants import (
    CHANNEL_ERRORS,
    CHANNEL_INVALIDATION,
    CHANNEL_MONITORING,
    DEFAULT_ENVIRONMENT,
    DEFAULT_IGNORE_LOGGERS,
    DEFAULT_REDIS_URL,
    DEFAULT_SOURCE,
    PREFIX,
)
from .convert import ConfigurationError
from .transport import urls

__all__ = ["KEYS", "ConfigReader", "ConfigurationError", "Key", "MonitorConfig", "load_config"]


@dataclass(frozen=True)
class Key:
    """``TICKSTOCK_MONITOR_<name>``; where it is absent, each fallback name in ``app.config``,
    then in the environment (TickStockAppV2 keeps its settings there)."""

    name: str
    default: Any
    convert: Callable[[str, Any], Any]
    fallbacks: tuple[str, ...] = ()


T = TypeVar("T")

_positive_int = c.positive(int)
_positive_float = c.positive(float)

#: Every key of ours, by section. A default of ``None`` is worked out from other keys.
KEYS: dict[str, Key] = {
    key.name: key
    for key in (
        # core
        Key("ENABLED", True, c.as_bool, ("MONITORING_ENABLED",)),
        Key("REDIS_URL", None, c.as_str, ("REDIS_URL",)),  # REDIS_HOST… first: resolve_redis_url
        Key("SENTINELS", (), c.as_str_tuple),
        Key("SENTINEL_SERVICE", None, c.as_str),
        Key("SHARDED_PUBSUB", False, c.as_bool),
        Key("INSTANCE_ID", None, lambda key, value: c.as_str(key, str(value))),
        Key("COMPONENT", None, c.as_str),  # the app's import name
        Key("SOURCE", DEFAULT_SOURCE, c.as_str),
        Key("RELEASE", None, c.as_str, ("TICKSTOCK_RELEASE",)),  # else the app's version
        Key("ENVIRONMENT", DEFAULT_ENVIRONMENT, c.as_str, ("TICKSTOCK_ENVIRONMENT",)),
        Key("CHANNEL_ERRORS", CHANNEL_ERRORS, c.as_str, ("REDIS_ERROR_CHANNEL",)),
        Key("CHANNEL_MONITORING", CHANNEL_MONITORING, c.as_str),
        Key("CHANNEL_INVALIDATION", CHANNEL_INVALIDATION, c.as_str),
        # the publisher
        Key("QUEUE_SIZE", 10_000, _positive_int),
        Key("BATCH_SIZE", 512, _positive_int),
        Key("PUBLISH_LINGER", 0.02, c.at_least(float, 0)),
        Key("SOCKET_TIMEOUT", 0.5, _positive_float),
        Key("EXIT_FLUSH_TIMEOUT", 2.0, c.at_least(float, 0)),
        # errors
        Key("ERRORS_ENABLED", True, c.as_bool, ("ERROR_CHANNEL_ENABLED",)),
        Key("CAPTURE_LOGGING", True, c.as_bool),
        Key("LOG_LEVEL", logging.ERROR, c.as_level),
        Key("IGNORE_LOGGERS", (), c.as_str_tuple),
        Key("CAPTURE_5XX", True, c.as_bool),
        Key("BEFORE_SEND", None, c.as_callable),
        Key("IGNORE_EXCEPTIONS", (), c.as_exception_types),
        Key("INCLUDE_QUERY", False, c.as_bool),
        Key("INCLUDE_HEADERS", False, c.as_bool),
        Key("INCLUDE_CLIENT_IP", False, c.as_bool),
        Key("SCRUB_KEYS", (), c.as_str_tuple),
        Key("SCRUB_HEADERS", (), c.as_str_tuple),
        Key("THROTTLE_WINDOW", 60.0, _positive_float),
        Key("THROTTLE_LIMIT", 10, c.at_least(int, 0)),
        Key("MAX_MESSAGE_CHARS", 4_096, c.at_least(int, 64)),
        Key("MAX_TRACEBACK_CHARS", 32_768, c.at_least(int, 256)),
        Key("MAX_CONTEXT_BYTES", 16_384, c.at_least(int, 256)),
        Key("MAX_CONTEXT_DEPTH", 5, c.at_least(int, 1)),
        Key("MAX_CONTEXT_ITEMS", 50, c.at_least(int, 1)),
        # health
        Key("HEALTH_ENABLED", True, c.as_bool),
        Key("HEALTH_INTERVAL", 30.0, _positive_float, ("HEALTH_CHECK_INTERVAL",)),
        Key("HEALTH_CHECK_TIMEOUT", 2.0, _positive_float, ("HEALTH_CHECK_TIMEOUT",)),
        Key("HEALTH_POLL", None, _positive_float),  # min(interval, 5)
        Key("HEALTH_JITTER", 0.1, c.as_fraction),
        Key("HEALTH_LATEST_TTL", None, _positive_float),  # 3 intervals
        Key("HEALTH_ENDPOINT", None, c.as_path),
        # the probes (probes.py)
        Key("LIVENESS_ENDPOINT", None, c.as_path),
        Key("READINESS_ENDPOINT", None, c.as_path),
        Key("READINESS_CHECKS", (), c.as_str_tuple),  # checks critical for readiness, e.g. redis
        Key("LIVENESS_STALL", 60.0, _positive_float),
        Key("DRAIN_ON_SIGTERM", True, c.as_bool),
        # relay and Socket.IO
        Key("RELAY_ENABLED", True, c.as_bool),
        Key("RELAY_QUEUE_SIZE", 10_000, c.at_least(int, 1)),
        Key("RELAY_MAX_MESSAGE_BYTES", 262_144, c.at_least(int, 256)),
        Key("RELAY_MAX_KEYS", 10_000, c.at_least(int, 1)),
        Key("RELAY_CLEAR_ON_RECONNECT", True, c.as_bool),
        Key("SOCKETIO_ENABLED", True, c.as_bool),
        Key("SOCKETIO_NAMESPACE", "/", c.as_namespace),
        Key("SOCKETIO_MONITOR_NAMESPACE", "/tickstock-monitor", c.as_namespace),
        Key("SOCKETIO_RELAY_MONITORING", True, c.as_bool),
        # the dashboard
        Key("DASHBOARD", False, c.as_bool),
        Key("DASHBOARD_URL_PREFIX", "/monitor", c.as_prefix),
        Key("DASHBOARD_AUTH", None, c.as_callable),  # also guards the probes' details, metrics
        # Prometheus metrics (exporter.py)
        Key("METRICS_ENDPOINT", None, c.as_metrics_path),
        Key("METRICS_AUTH", None, c.as_callable),
        Key("METRICS_TOKEN", None, c.as_str),
        Key("METRICS_PROCESS", True, c.as_bool),
        Key("METRICS_CLUSTER", True, c.as_bool),
        Key("METRICS_MAX_GROUPS", 500, c.at_least(int, 0)),
        Key("OFFLINE_TTL", 600.0, c.at_least(float, 0)),
        # the durable error log
        Key("DATABASE_URI", None, c.as_database_url),
        Key("DATABASE_ENABLED", True, c.as_bool),
        Key("DATABASE_MIN_SEVERITY", "error", c.as_severity),
        Key("DATABASE_BUFFER_SIZE", 10_000, _positive_int),
        Key("DATABASE_BATCH_SIZE", 100, _positive_int),
        Key("DATABASE_TIMEOUT", 2.0, _positive_float),
        Key("DATABASE_RETRY_MAX_DELAY", 30.0, _positive_float),
    )
}


class ConfigReader:
    """Reads keys from ``app.config``, then the TickStockAppV2 names, then the environment."""

    def __init__(self, config: Mapping[str, Any], environ: Mapping[str, str] | None = None):
        self.config = config
        self.environ = os.environ if environ is None else environ

    def raw(self, name: str, *fallbacks: str) -> tuple[str, Any] | None:
        """``(key, value)`` of the first of ``TICKSTOCK_MONITOR_<name>`` and ``fallbacks`` that is
        set, or ``None``."""
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

    def __getitem__(self, name: str) -> Any:
        """The checked value of the key ``name`` of :data:`KEYS`, or its default."""
        key = KEYS[name]
        found = self.raw(name, *key.fallbacks)
        return key.default if found is None else key.convert(*found)


@dataclass(frozen=True)
class HealthConfig:
    enabled: bool
    interval: float
    check_timeout: float
    poll: float
    jitter: float
    latest_ttl: float
    endpoint: str | None
    liveness_endpoint: str | None = None
    readiness_endpoint: str | None = None
    readiness_checks: tuple[str, ...] = ()
    liveness_stall: float = 60.0
    drain_on_sigterm: bool = True


@dataclass(frozen=True)
class RelayConfig:
    enabled: bool
    queue_size: int
    max_message_bytes: int
    max_keys: int
    clear_on_reconnect: bool


@dataclass(frozen=True)
class SocketConfig:
    enabled: bool
    namespace: str
    monitor_namespace: str
    relay_monitoring: bool


@dataclass(frozen=True)
class DashboardConfig:
    url_prefix: str


@dataclass(frozen=True)
class MetricsConfig:
    endpoint: str | None
    auth: Callable[[], bool] | None
    token: str | None
    process: bool
    cluster: bool
    max_groups: int
    offline_ttl: float


@dataclass(frozen=True)
class ErrorLogConfig:
    url: Any  # a sqlalchemy.engine.URL: SQLAlchemy is imported only when a database is set
    min_severity: str = "error"
    buffer_size: int = 10_000
    batch_size: int = 100
    timeout: float = 2.0
    retry_max_delay: float = 30.0


@dataclass(frozen=True)
class MonitorConfig:
    """The validated configuration of one app."""

    enabled: bool = True
    redis_url: str = DEFAULT_REDIS_URL
    errors_enabled: bool = True
    health_interval: float = 30.0
    component: str = "app"
    source: str = DEFAULT_SOURCE
    release: str | None = None
    environment: str = DEFAULT_ENVIRONMENT
    instance_id: str | None = None
    channel_errors: str = CHANNEL_ERRORS
    channel_monitoring: str = CHANNEL_MONITORING
    channel_invalidation: str = CHANNEL_INVALIDATION
    queue_size: int = 10_000
    batch_size: int = 512
    publish_linger: float = 0.02
    socket_timeout: float = 0.5
    exit_flush_timeout: float = 2.0
    capture_logging: bool = True
    log_level: int = logging.ERROR
    ignore_loggers: tuple[str, ...] = DEFAULT_IGNORE_LOGGERS
    capture_5xx: bool = True
    #: edits or drops each error event on the building thread (else monitor.before_send)
    before_send: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    #: exception classes, or names of classes, never published (their subclasses neither)
    ignore_exceptions: tuple[type | str, ...] = ()
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
    #: who may see the dashboard, the probes' details and the metrics (else monitor.dashboard_auth)
    dashboard_auth: Callable[[], bool] | None = None
    #: The planes' sections: ``None`` for a part that is off (or not read: monitoring is off).
    health: HealthConfig | None = None
    relay: RelayConfig | None = None
    socketio: SocketConfig | None = None
    dashboard: DashboardConfig | None = None
    metrics: MetricsConfig | None = None
    errorlog: ErrorLogConfig | None = None


def resolve_redis_url(r: ConfigReader) -> str:
    """``TICKSTOCK_MONITOR_REDIS_URL``; else, as TickStockAppV2 connects (its ``REDIS_URL`` is
    only an on/off switch there), ``REDIS_HOST`` with ``_PORT`` / ``_DB`` / ``_PASSWORD``; else
    ``REDIS_URL``; else the default."""
    found = r.raw("REDIS_URL")
    if found is not None:
        return c.as_str(*found)
    parts = [r.raw("_UNUSED_", f"REDIS_{name}") for name in ("HOST", "PORT", "DB", "PASSWORD")]
    host, port, db, password = [p if p is not None and str(p[1]).strip() else None for p in parts]
    if host is not None:
        return c.redis_url_from_parts(host, port, db, password)
    found = r.raw("_UNUSED_", "REDIS_URL")
    return DEFAULT_REDIS_URL if found is None else c.as_str(*found)


def _redis_url(r: ConfigReader) -> str:
    """The one URL every client of this app is made from (publisher, planes, CLI): the
    topology keys are folded into it."""
    url = resolve_redis_url(r)
    sentinels = r["SENTINELS"]
    if sentinels:
        service = r["SENTINEL_SERVICE"]
        if not service:
            raise ConfigurationError(
                f"{PREFIX}SENTINEL_SERVICE: set the master's service name (e.g. 'mymaster') to"
                f" go with {PREFIX}SENTINELS"
            )
        try:
            url = urls.sentinel_url(url, sentinels, service)
        except ValueError as exc:
            raise ConfigurationError(f"{PREFIX}SENTINELS: {exc}") from None
    if r["SHARDED_PUBSUB"]:
        try:
            url = urls.with_sharded_pubsub(url)
        except ValueError as exc:
            raise ConfigurationError(f"{PREFIX}SHARDED_PUBSUB: {exc}") from None
    try:
        urls.check_url(url)
    except ValueError as exc:
        raise ConfigurationError(f"{PREFIX}REDIS_URL: {exc}") from None
    return url


def _section(kind: type[T], r: ConfigReader, prefix: str = "", **worked_out: Any) -> T:
    """``kind`` with each field read from the key ``prefix + FIELD`` (``queue_size`` of the relay
    from ``RELAY_QUEUE_SIZE``), but for the fields ``worked_out`` gives."""
    values = {
        field.name: r[prefix + field.name.upper()]
        for field in fields(kind)  # type: ignore[arg-type]
        if field.name not in worked_out
    }
    return kind(**values, **worked_out)


def _health(r: ConfigReader) -> HealthConfig:
    interval = r["HEALTH_INTERVAL"]
    poll, ttl = r["HEALTH_POLL"], r["HEALTH_LATEST_TTL"]
    return _section(
        HealthConfig,
        r,
        "HEALTH_",
        poll=min(interval, 5.0) if poll is None else poll,
        latest_ttl=3 * interval if ttl is None else ttl,
        **{name: r[name.upper()] for name in _PROBE_FIELDS},
    )


#: The probes' keys are not prefixed HEALTH_, but their settings are the health plane's.
_PROBE_FIELDS = (
    "liveness_endpoint",
    "readiness_endpoint",
    "readiness_checks",
    "liveness_stall",
    "drain_on_sigterm",
)


def _errorlog(r: ConfigReader) -> ErrorLogConfig | None:
    url = r["DATABASE_URI"]
    if url is None or not r["DATABASE_ENABLED"]:
        return None
    return _section(ErrorLogConfig, r, "DATABASE_", url=url)


def load_config(
    config: Mapping[str, Any], import_name: str, environ: Mapping[str, str] | None = None
) -> MonitorConfig:
    """Build and validate the configuration of one app (raises :class:`ConfigurationError`)."""
    r = ConfigReader(config, environ)
    enabled = r["ENABLED"]
    return _section(
        MonitorConfig,
        r,
        redis_url=_redis_url(r),
        component=r["COMPONENT"] or import_name,
        release=r["RELEASE"] or c.installed_version(import_name),
        ignore_loggers=DEFAULT_IGNORE_LOGGERS + r["IGNORE_LOGGERS"],
        # The relay is made even when monitoring is off: caches still register.
        relay=_section(RelayConfig, r, "RELAY_"),
        socketio=_section(SocketConfig, r, "SOCKETIO_"),
        health=_health(r) if enabled else None,
        dashboard=_section(DashboardConfig, r, "DASHBOARD_")
        if enabled and r["DASHBOARD"]
        else None,
        metrics=(
            _section(MetricsConfig, r, "METRICS_", offline_ttl=r["OFFLINE_TTL"])
            if enabled
            else None
        ),
        errorlog=_errorlog(r) if enabled else None,
    )
