"""The dashboard's JSON API (docs/dashboard-api.md): the live view, error groups and their
detail, resolve/ignore/reopen behind a CSRF check, errors paged back, each instance's metric
series.

Groups and the errors' history come from the durable error log when one is configured (what
it keeps survives a restart), else from the subscriber's memory. Every response is bounded;
a bad parameter is a 400 naming it, an unknown id a 404.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, request

from . import events
from .dashboard_query import (
    ApiError,
    Filters,
    annotate,
    for_list,
    instance_order,
    parse_choice,
    parse_cursor,
    parse_filters,
    parse_limit,
)
from .groups import SORTS, STATUSES
from .recent import CURSOR_PREFIX as MEMORY_CURSOR

if TYPE_CHECKING:
    from .dashboard import DashboardPlane
    from .errorlog import ErrorLog

#: POST api/groups/<fp>/<action> -> the status it sets
ACTIONS = {"resolve": "resolved", "ignore": "ignored", "reopen": "open"}
#: Events shown with a group, errors in the view
GROUP_EVENTS = 20
VIEW_ERRORS = 100
NOT_DURABLE = "the durable error log is not configured"


def reply(body: Any, status: int = 200) -> Response:
    """JSON (orjson when installed: the view is served every second), never cached."""
    response = Response(events.dumps(body), status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def register(bp: Blueprint, plane: DashboardPlane) -> None:
    """Add the API's routes to the dashboard's blueprint."""
    api = DashboardApi(plane)
    bp.register_error_handler(ApiError, lambda exc: reply({"error": exc.message}, exc.status))
    bp.add_url_rule("/api/view", "view", lambda: reply(api.view(parse_filters(request.args))))
    bp.add_url_rule("/api/groups", "groups", lambda: reply(api.groups(request.args)))
    bp.add_url_rule(
        "/api/groups/<path:fingerprint>", "group", lambda fingerprint: reply(api.group(fingerprint))
    )
    bp.add_url_rule(
        "/api/groups/<path:fingerprint>/<action>",
        "group_action",
        lambda fingerprint, action: reply(api.act(fingerprint, action)),
        methods=["POST"],
    )
    bp.add_url_rule("/api/errors", "errors", lambda: reply(api.errors(request.args)))
    bp.add_url_rule(
        "/api/instances/<path:instance_id>/series",
        "instance_series",
        lambda instance_id: reply(api.series(instance_id)),
    )


class DashboardApi:
    def __init__(self, plane: DashboardPlane):
        self.plane = plane
        self.subscriber = plane.subscriber

    @property
    def errorlog(self) -> ErrorLog | None:
        return self.plane.state.errorlog

    def _database(self, read: Callable[[Any], Any]) -> Any:
        """``read(engine)`` on the durable log; a database that cannot answer is a 503."""
        assert self.errorlog is not None
        try:
            return self.errorlog.query(read)
        except Exception as exc:
            self.plane.count_read_error(exc)
            message = f"the durable error log cannot be read ({type(exc).__name__})"
            raise ApiError(503, message) from None

    def _history(self) -> Any:
        from . import dashboard_history  # SQLAlchemy: only with a database configured

        return dashboard_history

    # the live view ----------------------------------------------------------------------------

    def view(self, filters: Filters) -> dict[str, Any]:
        sub = self.subscriber
        now = sub.clock()
        known = sub.instances()
        whereabouts = {iid: (i["host"], i["pid"]) for iid, i in known.items()}
        rate = sub.error_rate()
        recent = (
            sub.history.filtered(filters.match_event, VIEW_ERRORS) if filters else rate["recent"]
        )
        rate["recent"] = [annotate(event, whereabouts) for event in recent]
        where = filters.match_group if filters else None
        groups = sub.book.groups(limit=VIEW_ERRORS, where=where)
        return {
            "generated_at": now,
            "now": now,
            "connected": sub.subscription.connected,
            "durable": self.errorlog is not None,
            "filters": filters.as_dict(),
            "instances": sorted(
                (i for i in known.values() if filters.match_instance(i)), key=instance_order
            ),
            "instances_total": len(known),
            "errors": rate,
            "groups": [for_list(group) for group in groups],
            "errors_per_minute": sub.book.errors_per_minute(),
            "facets": self.facets(known),
            "stats": sub.stats(),
            "invalidations": list(self.plane.relay.recent),
            "this_instance": self.plane.state.instance_id,
        }

    def facets(self, known: dict[str, dict[str, Any]], limit: int = 200) -> dict[str, list[str]]:
        out = {name: set(keys) for name, keys in self.subscriber.book.keys(limit).items()}
        for instance in known.values():
            for name in ("component", "release"):
                if isinstance(instance.get(name), str):
                    out[name].add(instance[name])
        out["instance"].update(known)
        return {name: sorted(values)[:limit] for name, values in out.items()}

    # groups -----------------------------------------------------------------------------------

    def groups(self, args: Any) -> dict[str, Any]:
        filters = parse_filters(args)
        status = parse_choice(args, "status", STATUSES, None)
        sort = parse_choice(args, "sort", SORTS, "last_seen")
        limit = parse_limit(args)
        if self.errorlog is not None:
            history = self._history()
            found = self._database(lambda e: history.groups(e, filters, status, sort, limit))
            return {"source": "database", "groups": [for_list(g) for g in found]}
        where = filters.match_group if filters else None
        found = self.subscriber.book.groups(sort=sort, status=status, limit=limit, where=where)
        return {"source": "memory", "groups": [for_list(g) for g in found]}

    def group(self, fingerprint: str) -> dict[str, Any]:
        whereabouts = self._whereabouts()
        if self.errorlog is not None:
            history = self._history()
            found, recent = self._database(lambda e: history.group(e, fingerprint, GROUP_EVENTS))
            source = "database"
        else:
            source = "memory"
            found = self.subscriber.book.get(fingerprint)
            recent = self.subscriber.history.filtered(
                lambda event: event.get("fingerprint") == fingerprint, GROUP_EVENTS
            )
            if found is not None and not recent and found.get("last_event"):
                recent = [found["last_event"]]  # its events left the memory: the latest only
        if found is None:
            raise ApiError(404, "unknown group")
        return {
            "source": source,
            "group": for_list(found),
            "events": [annotate(event, whereabouts) for event in recent],
        }

    def act(self, fingerprint: str, action: str) -> dict[str, Any]:
        self.check_csrf()
        status = ACTIONS.get(action)
        if status is None:
            raise ApiError(404, f"unknown action (one of {', '.join(ACTIONS)})")
        if self.errorlog is None:
            raise ApiError(409, NOT_DURABLE)
        history = self._history()
        if not self._database(lambda e: history.set_status(e, fingerprint, status)):
            raise ApiError(404, "unknown group")
        self.subscriber.book.set_status(fingerprint, status)
        found, _ = self._database(lambda e: history.group(e, fingerprint, 0))
        if found is None:
            raise ApiError(404, "unknown group")
        return {"group": for_list(found)}

    def check_csrf(self) -> None:
        """The page's token in ``X-CSRF-Token``; a browser's ``Origin`` naming this server."""
        token = request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(token.encode(), self.plane.csrf_token().encode()):
            raise ApiError(403, "csrf")
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
            raise ApiError(403, "csrf")
        if request.headers.get("Sec-Fetch-Site") == "cross-site":
            raise ApiError(403, "csrf")

    # errors and series ------------------------------------------------------------------------

    def errors(self, args: Any) -> dict[str, Any]:
        filters = parse_filters(args)
        limit = parse_limit(args)
        whereabouts = self._whereabouts()
        if self.errorlog is not None:
            history = self._history()
            before = parse_cursor(args, history.CURSOR_PREFIX)
            found, cursor = self._database(lambda e: history.errors(e, filters, before, limit))
            source = "database"
        else:
            before = parse_cursor(args, MEMORY_CURSOR)
            match = filters.match_event if filters else None
            found, number = self.subscriber.history.page(before, limit, match)
            cursor = None if number is None else f"{MEMORY_CURSOR}{number}"
            source = "memory"
        return {
            "source": source,
            "errors": [annotate(event, whereabouts) for event in found],
            "next_before": cursor,
        }

    def series(self, instance_id: str) -> dict[str, Any]:
        store = self.subscriber.series
        now = self.subscriber.clock()
        metrics = store.series(instance_id, now)
        if metrics is None:
            raise ApiError(404, "unknown instance")
        return {
            "id": instance_id,
            "bucket_s": store.bucket_s,
            "series_start": now - store.window_s,
            "metrics": metrics,
        }

    def _whereabouts(self) -> dict[str, tuple[Any, Any]]:
        return {iid: (i["host"], i["pid"]) for iid, i in self.subscriber.instances().items()}
