"""The live monitoring dashboard: an optional blueprint (``TICKSTOCK_MONITOR_DASHBOARD``).

One page and one JSON view of the same data: every instance that beats (status, last seen,
stale/offline, key metrics) from a :class:`~.subscriber.MonitoringSubscriber`, the error feed,
and the invalidations this process applied. The page renders from the JSON view at once, then
follows the relay's Socket.IO events on the monitoring namespace, or polls the view every
second where Socket.IO is not available.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, abort, jsonify, render_template, url_for

from .config import DashboardConfig
from .state import Plane
from .subscriber import MonitoringSubscriber

if TYPE_CHECKING:
    from .state import MonitorState

AuthCheck = Callable[[], bool]


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

        @bp.get("/api/view")
        def view() -> Any:
            response = jsonify(self.view())
            response.headers["Cache-Control"] = "no-store"
            return response

        return bp

    def page_config(self) -> dict[str, Any]:
        """The page's one template variable (docs/dashboard-api.md, "The page")."""
        endpoint = "tickstock_monitor_dashboard."
        return {
            "urls": {"view": url_for(endpoint + "view")},
            "socket": self.socket_info(),
            "poll_ms": 1000,
        }

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
        out = self.subscriber.view()
        out["invalidations"] = list(self.relay.recent)
        out["this_instance"] = self.state.instance_id
        return out

    def start(self) -> None:
        self.subscriber.start()

    def stop(self) -> None:
        self.subscriber.stop(timeout=1.0)

    def stats(self) -> dict[str, Any]:
        return self.subscriber.stats()
