"""A stand-in for the dashboard's server side, for the browser tests of the page itself.

It serves the real template and static files and answers the JSON API of
docs/dashboard-api.md from data a test sets (``Stub.view``, ``groups``, ``errors``, …), and
records what the page asked (``requests``, ``actions``), so a test can put exactly the hostile,
huge or skewed data it needs in front of the page. The server's own behaviour is tested in
tests/test_dashboard_api.py; end-to-end runs are in tests/test_dashboard.py.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Flask, abort, jsonify, render_template, request

NOW = 1_765_100_000.0


def instance(iid: str, state: str = "healthy", **extra: Any) -> dict[str, Any]:
    return {
        "id": iid,
        "component": "market_data",
        "host": "web-1",
        "pid": 4242,
        "state": state,
        "status": state,
        "last_seen": time.time() - 2,
        "age_s": 2.0,
        "interval_s": 30.0,
        "beats": 10,
        "lost_beats": 0,
        "restarts": 0,
        "uptime_s": 812.5,
        "release": "v1",
        "metrics": {"memory_usage_mb": 81.2, "symbols_tracked": 70},
        "components": {
            "redis": {"status": "healthy", "latency_ms": 0.4},
            "database": {"status": state, "details": f"database is {state}"},
        },
        **extra,
    }


def error(n: int, received_at: float | None = None, **extra: Any) -> dict[str, Any]:
    at = time.time() - n if received_at is None else received_at
    return {
        "error_id": f"e{n:05d}",
        "type": "application_error",
        "source": "app",
        "severity": "error",
        "component": "web",
        "message": f"error number {n}",
        "error_type": "RuntimeError",
        "timestamp": at,
        "received_at": at,
        "skewed": False,
        "traceback": "Traceback (most recent call last):\n  boom\nRuntimeError",
        "context": {"path": "/x", "user": 7},
        "instance_id": "web-1:4242",
        "host": "web-1",
        "pid": 4242,
        "fingerprint": f"fp{n % 3}",
        "release": "v1",
        "environment": "production",
        "cursor": f"m:{100000 - n}",
        **extra,
    }


def group(fp: str, **extra: Any) -> dict[str, Any]:
    return {
        "fingerprint": fp,
        "message": f"message of {fp}",
        "error_type": "RuntimeError",
        "severity": "error",
        "count": 42,
        "first_seen": time.time() - 3000,
        "last_seen": time.time() - 5,
        "status": "open",
        "new": True,
        "regression": False,
        "series": [i % 4 for i in range(60)],
        "series_start": time.time() - 3540,
        "severities": {"error": 42},
        "components": {"web": 42},
        "instances": {"web-1:4242": 42},
        "releases": {"v1": 42},
        "environments": {"production": 42},
        **extra,
    }


class Stub:
    """The API's data, set by a test; ``app()`` serves it with the real page."""

    def __init__(self, *, durable: bool = False, csrf_token: str = "t0ken") -> None:
        self.durable = durable
        self.csrf_token = csrf_token
        self.instances: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []  # newest received first
        self.groups: list[dict[str, Any]] = []
        self.invalidations: list[dict[str, Any]] = []
        self.series: dict[str, dict[str, Any]] = {}
        self.facets: dict[str, list[str]] = {}
        self.errors_per_minute: dict[str, Any] | None = None  # else made from ``errors``
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.actions: list[tuple[str, str, str | None]] = []

    def view(self) -> dict[str, Any]:
        now = time.time()
        recent = self.errors[:100]
        per_minute = [0] * 59 + [len(self.errors)]
        return {
            "generated_at": now,
            "now": now,
            "connected": True,
            "durable": self.durable,
            "instances": self.instances,
            "instances_total": len(self.instances),
            "errors": {"window_s": 300.0, "count": len(recent), "per_min": 1.0, "recent": recent},
            "groups": self.groups,
            "errors_per_minute": self.errors_per_minute
            or {
                "by": "severity",
                "bucket_s": 60,
                "series_start": (now // 60 - 59) * 60,
                "series": {"error": per_minute},
                "total": per_minute,
            },
            "facets": self.facets,
            "stats": {},
            "invalidations": self.invalidations,
            "this_instance": "this:1",
        }

    def app(self) -> Flask:
        app = Flask("dashstub")
        bp = Blueprint(
            "tickstock_monitor_dashboard",
            "flask_tickstock_monitor.dashboard",
            url_prefix="/monitor",
            template_folder="templates",
            static_folder="static",
            static_url_path="/static",
        )

        @bp.before_request
        def remember() -> None:
            self.requests.append((request.path, dict(request.args)))

        @bp.get("/")
        def page() -> str:
            prefix = "/monitor/api"
            config = {
                "urls": {
                    "view": f"{prefix}/view",
                    "groups": f"{prefix}/groups",
                    "group": f"{prefix}/groups/__FP__",
                    "group_action": f"{prefix}/groups/__FP__/__ACTION__",
                    "errors": f"{prefix}/errors",
                    "instance_series": f"{prefix}/instances/__ID__/series",
                },
                "socket": {"available": False, "path": "/socket.io/", "namespace": "/m"},
                "csrf_token": self.csrf_token,
                "durable": self.durable,
                "poll_ms": 300,
            }
            return render_template("tickstock_monitor_dashboard.html", config=config)

        @bp.get("/api/view")
        def view() -> Any:
            return jsonify(self.view())

        @bp.get("/api/groups")
        def groups() -> Any:
            return jsonify(
                {"source": "database" if self.durable else "memory", "groups": self.groups}
            )

        @bp.get("/api/groups/<path:fp>")
        def one_group(fp: str) -> Any:
            for g in self.groups:
                if g["fingerprint"] == fp:
                    events = [e for e in self.errors if e.get("fingerprint") == fp][:20]
                    return jsonify({"source": "memory", "group": g, "events": events})
            return jsonify({"error": "unknown group"}), 404

        @bp.post("/api/groups/<path:fp>/<action>")
        def act(fp: str, action: str) -> Any:
            token = request.headers.get("X-CSRF-Token")
            self.actions.append((fp, action, token))
            if token != self.csrf_token:
                return jsonify({"error": "csrf"}), 403
            if not self.durable:
                return jsonify({"error": "the durable error log is not configured"}), 409
            for g in self.groups:
                if g["fingerprint"] == fp:
                    g["status"] = {"resolve": "resolved", "ignore": "ignored"}.get(action, "open")
                    return jsonify({"group": g})
            abort(404)

        @bp.get("/api/errors")
        def errors() -> Any:
            limit = int(request.args.get("limit", 100))
            before = request.args.get("before")
            rows = self.errors
            if before is not None:
                n = int(before.split(":")[1])
                rows = [e for e in rows if int(e["cursor"].split(":")[1]) < n]
            page = rows[:limit]
            more = len(rows) > limit
            return jsonify(
                {
                    "source": "memory",
                    "errors": page,
                    "next_before": page[-1]["cursor"] if more else None,
                }
            )

        @bp.get("/api/instances/<path:iid>/series")
        def series(iid: str) -> Any:
            if iid not in self.series:
                return jsonify({"error": "unknown instance"}), 404
            return jsonify(
                {
                    "id": iid,
                    "bucket_s": 5.0,
                    "series_start": time.time() - 3600,
                    "metrics": self.series[iid],
                }
            )

        app.register_blueprint(bp)
        return app
