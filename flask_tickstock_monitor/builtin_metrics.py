"""The metrics every heartbeat carries without being asked: the cache hit rate of the caches
given to ``register_cache`` and the number of Socket.IO connections (memory comes from psutil)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def cache_hit_rate(caches: Mapping[str, Any]) -> float | None:
    """Hits over lookups (a 0–1 fraction) of every cache that reports ``hits`` and ``misses``.

    Counts are used, never a cache's own ``hit_rate``: TickStockAppV2's RelationshipCache reports
    that one as a percentage.
    """
    hits = lookups = 0
    for cache in caches.values():
        counts = _hit_counts(cache)
        if counts is not None:
            hits += counts[0]
            lookups += counts[0] + counts[1]
    return round(hits / lookups, 4) if lookups else None


def _hit_counts(cache: Any) -> tuple[int, int] | None:
    for target in (cache, getattr(cache, "cache", None)):  # a registered adapter may wrap it
        if target is None:
            continue
        for method in ("get_stats", "stats"):
            stats = getattr(target, method, None)
            if callable(stats):
                found = stats()
                if (
                    isinstance(found, Mapping)
                    and _is_count(found.get("hits"))
                    and _is_count(found.get("misses"))
                ):
                    return int(found["hits"]), int(found["misses"])
        hits: Any = getattr(target, "hits", None)
        misses: Any = getattr(target, "misses", None)
        if _is_count(hits) and _is_count(misses):
            return int(hits), int(misses)
    return None


def _is_count(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def active_websockets(socketio: Any) -> int | None:
    """Connections to this process's Socket.IO server, counted without touching its handlers."""
    manager = getattr(getattr(socketio, "server", None), "manager", None)
    if manager is None:
        return None
    connections = set()
    for namespace in list(manager.get_namespaces()):
        for _sid, eio_sid in manager.get_participants(namespace, None):
            connections.add(eio_sid)
    return len(connections)
