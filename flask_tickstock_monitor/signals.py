"""Blinker signals. The sender is always the real Flask app, never a proxy.

Receivers run on the monitor's background threads (publisher, scheduler, listener), except
``event_dropped``, which can also run on the thread whose event was dropped: keep receivers short.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: An error event reached Redis. kwargs: ``event`` (the published dict).
error_published = _signals.signal("tickstock-error-published")

#: A heartbeat reached Redis. kwargs: ``event`` (the published dict).
health_published = _signals.signal("tickstock-health-published")

#: An invalidation was applied to local caches. kwargs: ``message`` (the contract dict),
#: ``caches`` (names touched), ``local`` (True when applied by ``monitor.invalidate``).
cache_invalidated = _signals.signal("tickstock-cache-invalidated")

#: Caches were cleared because invalidations may have been missed while disconnected.
#: kwargs: ``caches`` (names cleared), ``reason``.
cache_gap_cleared = _signals.signal("tickstock-cache-gap-cleared")

#: Something was not delivered. kwargs: ``reason`` (a short code), ``count``.
event_dropped = _signals.signal("tickstock-event-dropped")
