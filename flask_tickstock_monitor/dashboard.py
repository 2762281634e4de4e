"""The live monitoring dashboard: an optional blueprint (``TICKSTOCK_MONITOR_DASHBOARD``).

One page and a JSON API (:mod:`.dashboard_api`, docs/dashboard-api.md) over the same data:
every instance that beats (status, last seen, stale/offline, metrics and their last hour) from
a :class:`~.subscriber.MonitoringSubscriber`, the error feed and its groups (from the durable
error log when configured), and the invalidations this process applied. The page renders from
the JSON view at once, then follows the relay's Socket.IO events on the monitoring namespace,
or polls the view every second where Socket.IO is not available.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, abort, current_app, render_template, url_for

from . import dashboard_api
from ._util import RateLimitedLog
from .config import DashboardConfig
from .state import Plane
from .subscriber import MonitoringSubscriber

if TYPE_CHECKING:
    from .state import MonitorState

AuthCheck = Callable[[], bool]
log = logging.getLogger("flask_tickstock_monitor.dashboard")
#: What the CSRF token is an HMAC of (the key: the app's SECRET_KEY, else a random one)
CSRF_MESSAGE = b"flask-tickstock-monitor dashboard: csrf"
#: The page's placeholders for the URLs with a parameter
PLACEHOLDERS = {"fingerprint": "__FP__", "action": "__ACTION__", "instance_id": "__ID__"}


class DashboardPlane(Plane):
    """Owns the subscriber behind the dashboard and serves the page and the JSON view."""

    stop_in_forking_parent = True

    def __init__(self, state: MonitorState, dashboard: DashboardConfig):
        config = state.config
        self.state = state
        self.url_prefix = dashboard.url_prefix
        self.subscriber = MonitoringSubscriber(
            redis_client=state.client(),
            monitoring_channel=config.channel_monitoring,
            errors_channel=config.channel_errors,
            default_interval=config.health_interval,
        )
        self.relay = state.relay
        self._random_key = os.urandom(32)  # the CSRF key of an app without a SECRET_KEY
        self.read_errors = 0
        self._log = RateLimitedLog(log, 60.0)

    def install(self, app: Flask) -> None:
        """Serve the page and its JSON view on ``app``."""
        app.register_blueprint(self._blueprint())

    def authorized(self) -> bool:
        """The app's check (config, else ``monitor.dashboard_auth``); everyone without one."""
        check = self.state.auth_check()
        return True if check is None else bool(check())

    def _blueprint(self) -> Blueprint:
        bp = Blueprint(
            "tickstock_monitor_dashboard",
            __name__,
            url_prefix=None if self.url_prefix == "/" else self.url_prefix,
            template_folder="templates",
            static_folder="static",
            static_url_path="/static",
        )

        @bp.before_request
        def guard() -> None:
            if not self.authorized():
                abort(403)

        @bp.get("/")
        def page() -> str:
            return render_template("tickstock_monitor_dashboard.html", config=self.page_config())

        dashboard_api.register(bp, self)
        return bp

    def page_config(self) -> dict[str, Any]:
        """The page's one template variable (docs/dashboard-api.md, "The page")."""
        endpoint = "tickstock_monitor_dashboard."
        placeholders: dict[str, Any] = PLACEHOLDERS
        urls = {
            name: url_for(endpoint + name, **{key: placeholders[key] for key in keys})
            for name, keys in (
                ("view", ()),
                ("groups", ()),
                ("group", ("fingerprint",)),
                ("group_action", ("fingerprint", "action")),
                ("errors", ()),
                ("instance_series", ("instance_id",)),
            )
        }
        return {
            "urls": urls,
            "socket": self.socket_info(),
            "csrf_token": self.csrf_token(),
            "durable": self.state.errorlog is not None,
            "poll_ms": 1000,
        }

    def csrf_token(self) -> str:
        """An HMAC of the app's ``SECRET_KEY`` (the same in every worker), else of a key made
        by this process; the POSTs of the API must send it (``X-CSRF-Token``)."""
        secret = current_app.secret_key
        key = secret.encode() if isinstance(secret, str) else (secret or self._random_key)
        return hmac.new(key, CSRF_MESSAGE, hashlib.sha256).hexdigest()

    def count_read_error(self, exc: Exception) -> None:
        self.read_errors += 1
        self._log.warning(
            "read", "the dashboard could not read the durable error log: %s", exc, exc_info=True
        )

    def socket_info(self) -> dict[str, Any]:
        broadcaster = self.relay.broadcaster
        sio = broadcaster.socketio()
        options = getattr(sio, "server_options", None) or {}
        return {
            "available": sio is not None and broadcaster.relay_monitoring,
            "path": "/" + str(options.get("path", "socket.io")).strip("/") + "/",
            "namespace": broadcaster.monitor_namespace,
        }

    def view(self) -> dict[str, Any]:
        """What ``api/view`` serves, without filters."""
        return dashboard_api.DashboardApi(self).view(dashboard_api.Filters())

    def start(self) -> None:
        self.subscriber.start()

    def stop(self) -> None:
        self.subscriber.stop(timeout=1.0)

    def stats(self) -> dict[str, Any]:
        return {**self.subscriber.stats(), "read_errors": self.read_errors}
