"""A small Flask app that uses flask-tickstock-monitor: routes that fail in different ways."""

from __future__ import annotations

import logging
import os
from collections import deque
from typing import Any

from blinker import Namespace
from flask import Flask, abort, jsonify, render_template_string
from flask_socketio import SocketIO

from flask_tickstock_monitor import TickStockMonitor
from flask_tickstock_monitor.signals import error_published

monitor = TickStockMonitor()
#: Browsers get ``cache_invalidated`` events; the dashboard follows health and errors live.
socketio = SocketIO()
app_signals = Namespace()
#: An app-defined signal, tracked by the monitor: each send becomes an error event.
calculation_failed = app_signals.signal("calculation-failed")
log = logging.getLogger("example_app.services")

INDEX = """<!doctype html>
<title>flask-tickstock-monitor demo</title>
<h1>flask-tickstock-monitor demo</h1>
<p>Each link fails in its own way; every failure is published to <code>tickstock:errors</code>.</p>
<ul>
  <li><a href="/fail/unhandled">/fail/unhandled</a> — an unhandled exception</li>
  <li><a href="/fail/handled">/fail/handled</a> — an exception the app's own handler
      turns into a 500</li>
  <li><a href="/fail/log">/fail/log</a> — an ERROR log record, request succeeds</li>
  <li><a href="/fail/signal">/fail/signal</a> — an app-defined blinker signal</li>
  <li><a href="/fail/abort">/fail/abort</a> — <code>abort(503)</code></li>
</ul>
<p><a href="/invalidate/nasdaq100">/invalidate/nasdaq100</a> invalidates a key of the
"relationship" cache here and in every other process; <a href="/monitor/">/monitor/</a> is the
live dashboard.</p>
<h2>Published ({{ published|length }})</h2>
<ol reversed>
{% for event in published %}<li><b>{{ event.severity }}</b> {{ event.component }}:
  {{ event.message }}
  <small>({{ event.origin }}, {{ event.error_id }})</small></li>
{% endfor %}</ol>
<p><a href="/stats">/stats</a> shows the monitor's counters.</p>
"""


class PricingError(Exception):
    pass


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        TICKSTOCK_MONITOR_REDIS_URL=os.environ.get("TICKSTOCK_MONITOR_REDIS_URL", "memory://demo"),
        TICKSTOCK_MONITOR_COMPONENT="example_app",
        # the durable error log: `flask --app example_app tickstock errors` lists what it kept
        TICKSTOCK_MONITOR_DATABASE_URI=os.environ.get(
            "TICKSTOCK_MONITOR_DATABASE_URI",
            f"sqlite:///{os.path.join(app.instance_path, 'errors.db')}",
        ),
    )
    app.config.update(config or {})
    app.config.setdefault("TICKSTOCK_MONITOR_DASHBOARD", True)
    socketio.init_app(app, async_mode="threading")
    monitor.init_app(app)
    relationship: dict[str, list[str]] = {"nasdaq100": ["AAPL", "MSFT"], "sp500": ["AAPL"]}
    monitor.register_cache("relationship", relationship, app=app)
    monitor.track_signal(calculation_failed, severity="warning", app=app)
    published: deque[dict[str, Any]] = deque(maxlen=50)

    @error_published.connect_via(app, weak=False)
    def remember(sender: Flask, event: dict[str, Any], **_: Any) -> None:
        published.appendleft(event)

    @app.errorhandler(PricingError)
    def pricing_failed(exc: PricingError) -> Any:
        return jsonify(error="pricing is unavailable"), 500

    @app.route("/")
    def index() -> str:
        return render_template_string(INDEX, published=list(published))

    @app.route("/fail/unhandled")
    def unhandled() -> Any:
        symbols = 0
        return {"per_symbol": 100 / symbols}

    @app.route("/fail/handled")
    def handled() -> Any:
        raise PricingError("quote feed returned no prices for AAPL")

    @app.route("/fail/log")
    def logged() -> Any:
        log.error("threshold bar calculation skipped for %s", "nasdaq100")
        return {"ok": True}

    @app.route("/fail/signal")
    def signalled() -> Any:
        calculation_failed.send(app, universe_key="nasdaq100", symbol_count=102)
        return {"ok": True}

    @app.route("/fail/abort")
    def aborted() -> Any:
        abort(503)

    @app.route("/invalidate/<key>")
    def invalidate(key: str) -> Any:
        invalidation_id = monitor.invalidate("relationship", [key], scope="universe", app=app)
        return {"invalidation_id": invalidation_id, "cached": sorted(relationship)}

    @app.route("/stats")
    def stats() -> Any:
        return jsonify(monitor.stats(app))

    return app
