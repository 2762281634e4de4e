"""Observability for Flask apps on Redis: errors, health heartbeats and cache invalidation."""

from .config import ConfigurationError
from .extension import TickStockMonitor
from .publisher import MonitoringPublisher
from .subscriber import MonitoringSubscriber

__all__ = ["ConfigurationError", "MonitoringPublisher", "MonitoringSubscriber", "TickStockMonitor"]
