"""Names the whole package shares: the extension's key, the config prefix, the channels and
the keys kept in Redis, the Socket.IO events. Defined here once; nothing here imports."""

from __future__ import annotations

#: Where the per-app state lives: ``app.extensions[EXTENSION_KEY]``.
EXTENSION_KEY = "tickstock_monitor"
#: Every configuration key of ours starts with it (see :mod:`.config`).
PREFIX = "TICKSTOCK_MONITOR_"

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_SOURCE = "TickStockAppV2"
DEFAULT_ENVIRONMENT = "production"

#: The three channels (DESIGN.md, "Message contracts").
CHANNEL_ERRORS = "tickstock:errors"
CHANNEL_MONITORING = "tickstock:monitoring"
CHANNEL_INVALIDATION = "tickstock:cache:invalidation"

#: Loggers whose records are never published: our own, and the loggers TickStockAppV2 uses to
#: re-log every message it receives on ``tickstock:errors`` (publishing those would loop).
DEFAULT_IGNORE_LOGGERS = (
    "flask_tickstock_monitor",
    "src.core.services.error_subscriber",
    "src.core.services.enhanced_logger",
)

#: Event names sent to browsers over Socket.IO.
INVALIDATION_EVENT = "cache_invalidated"
HEALTH_EVENT = "tickstock_health"
ERROR_EVENT = "tickstock_error"


def latest_key(channel: str, instance_id: str) -> str:
    """Where the latest beat of an instance is kept (a plain string key with an expiry)."""
    return f"{channel}:latest:{instance_id}"
