"""The dashboard's JSON API (docs/dashboard-api.md) on a real redis-server: the view's
additions (now, received_at/skewed, ordering, instances by state, facets, filters), error groups
and their detail, resolve/ignore/reopen behind CSRF, errors paged back, instance series, from
the subscriber's memory and from the durable error log (SQLite and PostgreSQL, also after a
restart), the auth guard, bad parameters and hostile text."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from conftest import wait_for
from relayutil import publish
from servers import free_port

from flask_tickstock_monitor import events
from flask_tickstock_monitor.dashboard_query import instance_order
from flask_tickstock_monitor.recent import RecentErrors
from flask_tickstock_monitor.series import SeriesStore

ERRORS = "tickstock:errors"
MONITORING = "tickstock:monitoring"
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon"]
HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>\u202etxt.exe\x00'


def error(message: str, **fields: Any) -> dict[str, Any]:
    """An error event as a publisher sends it (``fields`` override or add)."""
    event = events.error_event(
        "tickstock_app",
        fields.pop("component", "web"),
        fields.pop("severity", "error"),
        message,
        fields.pop("timestamp", time.time()),
        error_type=fields.pop("error_type", "RuntimeError"),
        traceback_text="Traceback (most recent call last):\n  boom\nRuntimeError: " + message,
        context=fields.pop("context", {"user": "u1"}),
    )
    event["instance_id"] = fields.pop("instance", "web-1:100")
    event.update(fields)
    return event


def beat(instance_id: str, status: str = "healthy", **metrics: Any) -> dict[str, Any]:
    return {
        "type": "health_check",
        "component": "web" if not instance_id.startswith("worker") else "worker",
        "status": status,
        "timestamp": time.time(),
        "interval_s": 30,
        "metrics": metrics or {"memory_usage_mb": 80.5},
        "health": {
            "components": {
                "redis": {"status": "healthy", "latency_ms": 0.4},
                "database": {"status": status, "details": "pool 3/10"},
            }
        },
        "instance": {"id": instance_id, "host": "web-host", "pid": 100, "boot_id": "b1"},
    }


@pytest.fixture
def dash(make_app, redis_server) -> Callable[..., Any]:
    """``dash(**config)`` → a Dash: an app with the dashboard on this test's redis-server."""

    def make(**config: Any) -> Dash:
        app, monitor = make_app(redis_server.url, TICKSTOCK_MONITOR_DASHBOARD=True, **config)
        return Dash(app, monitor, redis_server.client())

    return make


class Dash:
    def __init__(self, app: Any, monitor: Any, redis: Any):
        self.app, self.monitor, self.redis = app, monitor, redis
        self.plane = app.extensions["tickstock_monitor"].dashboard
        self.subscriber = self.plane.subscriber
        assert self.subscriber.wait_connected()
        self.client = app.test_client()

    def get(self, path: str, **params: Any) -> tuple[int, Any]:
        response = self.client.get(f"/monitor/{path}", query_string=params)
        body = response.get_json() if response.is_json else response.data
        return response.status_code, body

    def ok(self, path: str, **params: Any) -> Any:
        status, body = self.get(path, **params)
        assert status == 200, body
        return body

    def post(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        response = self.client.post(f"/monitor/{path}", headers=headers or {})
        return response.status_code, response.get_json(silent=True)

    def config(self) -> dict[str, Any]:
        page = self.client.get("/monitor/").get_data(as_text=True)
        found = re.search(r'<script id="config" type="application/json">(.*?)</script>', page)
        assert found is not None
        return json.loads(found.group(1))  # type: ignore[no-any-return]

    def errors(self, *sent: dict[str, Any]) -> None:
        """Publish error events and wait until the subscriber has them all."""
        expected = self.subscriber.errors_received + len(sent)
        for event in sent:
            publish(self.redis, event, ERRORS)
        assert wait_for(lambda: self.subscriber.errors_received >= expected)

    def beats(self, *sent: dict[str, Any]) -> None:
        expected = self.subscriber.health_received + len(sent)
        for one in sent:
            publish(self.redis, one, MONITORING)
        assert wait_for(lambda: self.subscriber.health_received >= expected)


# --- the page and the view ---------------------------------------------------------------


def test_the_page_has_one_config_with_the_urls_token_and_socket(dash):
    d = dash()
    config = d.config()
    assert config["urls"] == {
        "view": "/monitor/api/view",
        "groups": "/monitor/api/groups",
        "group": "/monitor/api/groups/__FP__",
        "group_action": "/monitor/api/groups/__FP__/__ACTION__",
        "errors": "/monitor/api/errors",
        "instance_series": "/monitor/api/instances/__ID__/series",
    }
    assert re.fullmatch(r"[0-9a-f]{64}", config["csrf_token"])
    assert config["durable"] is False and config["poll_ms"] == 1000
    assert set(config["socket"]) == {"available", "path", "namespace"}
    assert config["socket"]["available"] is False  # no Flask-SocketIO on this app: poll


def test_the_token_is_an_hmac_of_the_secret_key_the_same_in_every_process(dash):
    first = dash(SECRET_KEY="s3cret").config()["csrf_token"]
    second = dash(SECRET_KEY="s3cret").config()["csrf_token"]
    other = dash(SECRET_KEY="another").config()["csrf_token"]
    assert first == second != other


def test_skewed_errors_are_marked_and_ordered_by_when_they_were_received(dash):
    d = dash()
    d.errors(error("from the future", timestamp=1e11))
    d.errors(error("on time"))
    view = d.ok("api/view")
    assert abs(view["now"] - time.time()) < 5
    future, on_time = view["errors"]["recent"][1], view["errors"]["recent"][0]
    assert (on_time["message"], future["message"]) == ("on time", "from the future")
    assert future["skewed"] is True and on_time["skewed"] is False
    assert on_time["received_at"] >= future["received_at"] > view["now"] - 60
    assert future["timestamp"] == 1e11  # kept as sent, never trusted for the order
    paged = d.ok("api/errors")["errors"]
    assert [e["message"] for e in paged] == ["on time", "from the future"]
    assert paged[1]["skewed"] is True


def test_instances_keep_host_pid_components_and_are_sorted_by_state(dash):
    d = dash()
    d.beats(
        beat("web-b", "healthy"),
        beat("web-a", "healthy"),
        beat("web-d", "degraded"),
        beat("web-u", "unhealthy"),
        {**beat("web-gone", "healthy"), "interval_s": 0.05},
    )
    time.sleep(0.3)  # more than three of web-gone's intervals: offline
    view = d.ok("api/view")
    assert [i["id"] for i in view["instances"]] == ["web-u", "web-gone", "web-d", "web-a", "web-b"]
    assert [i["state"] for i in view["instances"]][:3] == ["unhealthy", "offline", "degraded"]
    web_d = view["instances"][2]
    assert (web_d["host"], web_d["pid"]) == ("web-host", 100)
    assert web_d["components"]["database"] == {"status": "degraded", "details": "pool 3/10"}
    assert view["instances_total"] == 5


def test_the_state_order_puts_stale_after_offline():
    states = ["healthy", "stale", "unknown", "offline", "degraded", "unhealthy"]
    ordered = sorted(({"id": s, "state": s} for s in states), key=instance_order)
    assert [i["state"] for i in ordered] == [
        "unhealthy",
        "offline",
        "stale",
        "degraded",
        "unknown",
        "healthy",
    ]


def some_errors() -> list[dict[str, Any]]:
    return [
        error("disk full", severity="critical", component="db", instance="db-1:1", release="v2"),
        error("Timeout talking to Polygon", component="feed", release="v1", environment="staging"),
        error("KeyError: 'AAPL'", error_type="KeyError", component="web", release="v1"),
        error("warned", severity="warning", component="web", instance="web-2:2"),
    ]


def test_the_view_filters_errors_and_groups_and_lists_facets(dash):
    d = dash()
    d.beats(beat("worker-1"), beat("web-1:100"))
    d.errors(*some_errors())
    view = d.ok("api/view")
    assert view["facets"]["severity"] == ["critical", "error", "warning"]
    assert view["facets"]["component"] == ["db", "feed", "web", "worker"]
    assert view["facets"]["release"] == ["v1", "v2"]
    assert view["facets"]["environment"] == ["production", "staging"]
    assert {"db-1:1", "web-1:100", "web-2:2", "worker-1"} <= set(view["facets"]["instance"])

    def messages(**params: Any) -> list[str]:
        return [e["message"] for e in d.ok("api/view", **params)["errors"]["recent"]]

    assert messages(severity="critical") == ["disk full"]
    assert messages(severity="critical,warning") == ["warned", "disk full"]
    assert messages(component=["db", "feed"]) == ["Timeout talking to Polygon", "disk full"]
    assert messages(instance="web-2:2") == ["warned"]
    assert messages(release="v1", component="web") == ["KeyError: 'AAPL'"]
    assert messages(environment="staging") == ["Timeout talking to Polygon"]
    assert messages(q="POLYGON") == ["Timeout talking to Polygon"]
    assert messages(q="keyerror") == ["KeyError: 'AAPL'"]  # the error type matches too
    assert messages(severity="critical", q="nothing like it") == []
    filtered = d.ok("api/view", component="worker")
    assert [i["id"] for i in filtered["instances"]] == ["worker-1"]
    assert filtered["instances_total"] == 2
    assert filtered["filters"] == {"component": ["worker"]}
    groups = d.ok("api/view", severity="critical")["groups"]
    assert [g["message"] for g in groups] == ["disk full"]
    assert groups[0]["severity"] == "critical" and "last_event" not in groups[0]


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("api/view", {"limit": "x"}, None),  # the view takes no limit: ignored
        ("api/groups", {"limit": "ten"}, "limit: not a whole number"),
        ("api/groups", {"limit": "0"}, "limit: must be between 1 and 500"),
        ("api/errors", {"limit": "501"}, "limit: must be between 1 and 500"),
        ("api/groups", {"status": "closed"}, "status: must be one of open, resolved, ignored"),
        ("api/groups", {"sort": "random"}, "sort: must be one of last_seen, count"),
        ("api/errors", {"before": "d:12"}, "before: not a cursor of this source"),
        ("api/errors", {"before": "m:-1"}, "before: a bad cursor"),
        ("api/view", {"q": "x" * 201}, "q: longer than 200 characters"),
        ("api/errors", {"severity": "e" * 201}, "severity: a value longer than 200"),
        ("api/groups", {"component": ",".join(map(str, range(51)))}, "component: at most 50"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(dash, path, params, message):
    status, body = dash().get(path, **params)
    if message is None:
        assert status == 200
    else:
        assert status == 400 and body["error"].startswith(message), body


# --- groups, memory --------------------------------------------------------------------------


def test_groups_from_memory_with_their_detail(dash):
    d = dash()
    d.beats(beat("web-1:100"))
    d.errors(*some_errors(), *[error("disk full", severity="critical", component="db")] * 2)
    listed = d.ok("api/groups")
    assert listed["source"] == "memory"
    by_message = {g["message"]: g for g in listed["groups"]}
    disk = by_message["disk full"]
    assert disk["count"] == 3 and disk["status"] == "open" and disk["new"] is True
    assert len(disk["series"]) == 60 and sum(disk["series"]) == 3
    assert disk["instances"] == {"web-1:100": 2, "db-1:1": 1}
    assert disk["releases"] == {"v2": 1} and disk["severity"] == "critical"
    assert [g["message"] for g in d.ok("api/groups", sort="count", limit=1)["groups"]] == [
        "disk full"
    ]
    assert d.ok("api/groups", status="resolved")["groups"] == []
    assert [g["message"] for g in d.ok("api/groups", q="aapl")["groups"]] == ["KeyError: 'AAPL'"]

    detail = d.ok(f"api/groups/{disk['fingerprint']}")
    assert detail["source"] == "memory" and detail["group"]["count"] == 3
    assert len(detail["events"]) == 3
    newest = detail["events"][0]
    assert newest["traceback"].endswith("RuntimeError: disk full")
    assert newest["context"] == {"user": "u1"}
    assert (newest["host"], newest["pid"]) == ("web-host", 100)  # its instance is known
    assert newest["fingerprint"] == disk["fingerprint"]
    status, body = d.get("api/groups/0123456789abcdef")
    assert (status, body) == (404, {"error": "unknown group"})


def test_a_group_keyed_by_a_fingerprint_with_a_slash(dash):
    d = dash()
    d.errors(error("custom", fingerprint="a/b c"))
    detail = d.ok("api/groups/a%2Fb%20c")
    assert detail["group"]["fingerprint"] == "a/b c" and detail["events"][0]["message"] == "custom"


def test_a_group_shows_at_most_20_events(dash):
    d = dash()
    d.errors(*[error("same again", context={"n": n}) for n in range(25)])
    [group] = d.ok("api/groups")["groups"]
    detail = d.ok(f"api/groups/{group['fingerprint']}")
    assert [e["context"]["n"] for e in detail["events"]] == list(range(24, 4, -1))


# --- actions and CSRF ------------------------------------------------------------------------


def test_actions_need_the_durable_log_409(dash):
    d = dash()
    d.errors(error("disk full"))
    [group] = d.ok("api/groups")["groups"]
    token = d.config()["csrf_token"]
    status, body = d.post(f"api/groups/{group['fingerprint']}/resolve", {"X-CSRF-Token": token})
    assert (status, body) == (409, {"error": "the durable error log is not configured"})
    status, body = d.post(f"api/groups/{group['fingerprint']}/resolve")
    assert (status, body) == (403, {"error": "csrf"})  # CSRF is checked first


# --- the durable log ---------------------------------------------------------------------------


def write_through_the_app(d: Dash, messages: list[tuple[str, str]]) -> None:
    """Errors captured by the app: published (the subscriber) and written (the database)."""
    expected = d.subscriber.errors_received + len(messages)
    for message, severity in messages:
        assert d.monitor.publish_error(message, severity=severity, app=d.app) is not None
    assert d.monitor.flush(10, app=d.app)
    assert d.monitor.state(d.app).errorlog.flush(10)
    assert wait_for(lambda: d.subscriber.errors_received >= expected)


@pytest.fixture
def durable(dash, database_url) -> Iterator[Callable[[], Dash]]:
    def make() -> Dash:
        return dash(
            TICKSTOCK_MONITOR_DATABASE_URI=database_url,
            TICKSTOCK_MONITOR_THROTTLE_LIMIT=1000,
            TICKSTOCK_MONITOR_DATABASE_MIN_SEVERITY="warning",
            TICKSTOCK_MONITOR_RELEASE="v7",
            SECRET_KEY="shared",
        )

    yield make


def test_durable_groups_detail_and_actions_with_csrf(durable):
    d = durable()
    write_through_the_app(d, [("disk full", "critical")] * 3 + [("queue slow", "warning")])
    listed = d.ok("api/groups")
    assert listed["source"] == "database" and d.config()["durable"] is True
    disk = next(g for g in listed["groups"] if g["message"] == "disk full")
    assert disk["count"] == 3 and disk["releases"] == {"v7": 3} and disk["severity"] == "critical"
    assert [g["message"] for g in d.ok("api/groups", severity="warning")["groups"]] == [
        "queue slow"
    ]
    assert [g["message"] for g in d.ok("api/groups", q="DISK")["groups"]] == ["disk full"]
    assert d.ok("api/groups", release="v6")["groups"] == []
    detail = d.ok(f"api/groups/{disk['fingerprint']}")
    assert detail["source"] == "database" and len(detail["events"]) == 3
    event = detail["events"][0]
    assert event["message"] == "disk full" and event["release"] == "v7"
    assert event["fingerprint"] == disk["fingerprint"] and event["cursor"].startswith("d:")
    assert event["instance_id"] == d.monitor.state(d.app).instance_id
    assert "fingerprint" not in event["context"]  # lifted back out of the row's context

    path = f"api/groups/{disk['fingerprint']}/resolve"
    token = d.config()["csrf_token"]
    for headers in (
        {},
        {"X-CSRF-Token": "0" * 64},
        {"X-CSRF-Token": token, "Origin": "http://evil.example"},
        {"X-CSRF-Token": token, "Origin": "null"},
        {"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"},
    ):
        assert d.post(path, headers) == (403, {"error": "csrf"}), headers
    assert d.ok("api/groups", status="resolved")["groups"] == []  # nothing was changed
    status, body = d.post(path, {"X-CSRF-Token": token, "Origin": "http://localhost"})
    assert status == 200 and body["group"]["status"] == "resolved"
    assert [g["message"] for g in d.ok("api/groups", status="resolved")["groups"]] == ["disk full"]
    assert d.subscriber.book.get(disk["fingerprint"])["status"] == "resolved"
    status, body = d.post(f"api/groups/{disk['fingerprint']}/reopen", {"X-CSRF-Token": token})
    assert status == 200 and body["group"]["status"] == "open"
    assert d.post(f"api/groups/{disk['fingerprint']}/delete", {"X-CSRF-Token": token})[0] == 404
    assert d.post("api/groups/ffffffffffffffff/ignore", {"X-CSRF-Token": token}) == (
        404,
        {"error": "unknown group"},
    )


def test_history_survives_a_restart(durable):
    first = durable()
    write_through_the_app(first, [(f"{word} failed", "error") for word in WORDS])
    write_through_the_app(first, [("disk full", "critical")] * 2)
    first.monitor.shutdown(timeout=2.0, app=first.app)

    fresh = durable()  # a new app and subscriber on the same database: its memory is empty
    assert fresh.subscriber.errors_received == 0
    groups = fresh.ok("api/groups")
    assert groups["source"] == "database"
    assert sorted(g["message"] for g in groups["groups"]) == sorted(
        ["disk full"] + [f"{word} failed" for word in WORDS]
    )
    errors = fresh.ok("api/errors")
    assert errors["source"] == "database" and len(errors["errors"]) == 7
    assert [e["message"] for e in errors["errors"][:2]] == ["disk full", "disk full"]
    assert [e["message"] for e in fresh.ok("api/errors", severity="critical")["errors"]] == [
        "disk full",
        "disk full",
    ]
    disk = next(g for g in groups["groups"] if g["message"] == "disk full")
    assert len(fresh.ok(f"api/groups/{disk['fingerprint']}")["events"]) == 2


def test_a_database_that_cannot_answer_is_a_503(dash):
    d = dash(
        TICKSTOCK_MONITOR_DATABASE_URI=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x"
    )
    for path in ("api/groups", "api/errors", "api/groups/0123456789abcdef"):
        status, body = d.get(path)
        assert status == 503 and body["error"].startswith("the durable error log cannot be read")
    assert d.plane.stats()["read_errors"] == 3
    assert d.ok("api/view")["durable"] is True  # the live view does not need the database


def test_durable_errors_page_without_duplicates_or_gaps(durable):
    d = durable()
    write_through_the_app(d, [(f"error {n:03}", "error") for n in range(120)])
    seen = page_through(d, limit=50)
    assert [len(page) for page in seen] == [50, 50, 20]
    messages = [e["message"] for page in seen for e in page]
    assert messages == [f"error {n:03}" for n in range(119, -1, -1)]


def page_through(d: Dash, limit: int, between: Callable[[], None] | None = None) -> list[Any]:
    pages, before = [], None
    while True:
        params = {"limit": limit, **({"before": before} if before else {})}
        body = d.ok("api/errors", **params)
        pages.append(body["errors"])
        before = body["next_before"]
        if before is None:
            return pages
        if between is not None:
            between()


# --- errors paged from memory ------------------------------------------------------------------


def test_memory_errors_page_without_duplicates_or_gaps_while_more_arrive(dash):
    d = dash()
    d.errors(*[error(f"error {n:03}") for n in range(250)])
    arriving = iter(range(1000, 1100))
    pages = page_through(d, 100, lambda: d.errors(error(f"late {next(arriving)}")))
    assert [len(page) for page in pages] == [100, 100, 50]
    assert len(d.ok("api/view")["errors"]["recent"]) == 100  # the view shows the newest 100
    messages = [e["message"] for page in pages for e in page]
    assert messages == [f"error {n:03}" for n in range(249, -1, -1)]
    assert d.ok("api/errors", limit=1)["errors"][0]["message"] == "late 1001"
    filtered = d.ok("api/errors", q="error 00", limit=5)
    assert [e["message"] for e in filtered["errors"]] == [f"error 00{n}" for n in range(9, 4, -1)]
    rest = d.ok("api/errors", q="error 00", limit=5, before=filtered["next_before"])
    assert [e["message"] for e in rest["errors"]] == [f"error 00{n}" for n in range(4, -1, -1)]
    assert rest["next_before"] is None


def test_the_memory_of_errors_is_bounded_in_count_and_bytes():
    store = RecentErrors(100, max_bytes=64 * 1024, max_event_bytes=4096)
    for n in range(300):
        store.add({"message": f"m{n}", "n": n}, float(n), "fp", 100)
    assert len(store) == 100 and store.newest(1)[0]["n"] == 299
    for n in range(50):
        kept = store.add({"message": "x" * 100_000, "n": n}, 0.0, "fp", 100_000)
        assert len(events.dumps(kept)) < 4096 + 256
    assert store.stats()["bytes"] <= 64 * 1024 and len(store) < 20


# --- instance series -------------------------------------------------------------------------


def test_instance_series_over_the_last_hour(dash):
    d = dash()
    d.beats(beat("web-1:100", memory_usage_mb=80.5, symbols_tracked=70, label="text"))
    body = d.ok("api/instances/web-1%3A100/series")
    assert body["id"] == "web-1:100" and body["bucket_s"] == 5.0
    assert abs(body["series_start"] - (time.time() - 3600)) < 5
    metrics = body["metrics"]
    assert set(metrics) == {"memory_usage_mb", "symbols_tracked", "redis_latency_ms"}
    [[at, value]] = metrics["memory_usage_mb"]
    assert value == 80.5 and abs(at - time.time()) < 5
    assert metrics["redis_latency_ms"][0][1] == 0.4
    status, body = d.get("api/instances/nobody/series")
    assert (status, body) == (404, {"error": "unknown instance"})


def test_series_are_bounded_per_metric_instance_and_overall():
    store = SeriesStore(max_metrics=4, max_series=10, max_instances=3)
    start = 1_700_000_000.0
    for step in range(2 * 720 + 13):  # two hours and a bit of beats every 5 s
        at = start + step * 5
        store.add("web-1", at, {"metrics": {f"m{i}": step for i in range(6)}})
    now = start + (2 * 720 + 12) * 5
    series = store.series("web-1", now)
    assert series is not None and sorted(series) == ["m0", "m1", "m2", "m3"]  # the first four
    points = series["m0"]
    assert len(points) == 720 and points[-1] == [now, 2 * 720 + 12]
    assert points[0][0] > now - 3600 and [p[0] for p in points] == sorted(p[0] for p in points)
    for name in ("web-2", "web-3", "web-4"):
        store.add(name, now, {"metrics": {f"m{i}": 1 for i in range(6)}})
    assert store.series("web-1", now) is None  # the least recently updated went first
    stats = store.stats()
    assert stats["instances"] == 3 and stats["series"] <= 10 and stats["refused"] > 0


def test_many_beats_in_one_bucket_keep_the_latest():
    store = SeriesStore()
    for n in range(10):
        store.add("web-1", 1000.0 + n * 0.4, {"metrics": {"m": n}})
    assert store.series("web-1", 1010.0) == {"m": [[1003.6, 9]]}


# --- the guard and hostile text ------------------------------------------------------------


def test_every_endpoint_is_behind_the_auth_guard(dash):
    d = dash()
    d.errors(error("disk full"))
    d.monitor.dashboard_auth(lambda: False)
    for path in (
        "",
        "api/view",
        "api/groups",
        "api/groups/0123456789abcdef",
        "api/errors",
        "api/instances/web-1/series",
    ):
        assert d.get(path)[0] == 403, path
    assert d.post("api/groups/0123456789abcdef/resolve")[0] == 403


def test_hostile_text_stays_data(dash):
    d = dash()
    d.beats({**beat(HOSTILE), "metrics": {HOSTILE: 1.5}})
    d.errors(error(HOSTILE, component=HOSTILE, context={HOSTILE: HOSTILE}, release=HOSTILE))
    response = d.client.get("/monitor/api/view")
    assert response.mimetype == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"  # never sniffed as HTML
    view = response.get_json()
    [event] = view["errors"]["recent"]
    assert event["message"] == HOSTILE and event["context"] == {HOSTILE: HOSTILE}
    assert view["instances"][0]["id"] == HOSTILE and HOSTILE in view["facets"]["component"]
    [group] = d.ok("api/groups", release=HOSTILE)["groups"]
    assert group["message"] == HOSTILE
    series = d.ok("api/instances/" + quote(HOSTILE, safe="") + "/series")
    assert series["id"] == HOSTILE and list(series["metrics"]) == [HOSTILE, "redis_latency_ms"]
    status, body = d.get("api/groups/" + quote(HOSTILE[:30], safe=""))
    assert (status, body) == (404, {"error": "unknown group"})  # nothing of it echoed back
    page = d.client.get("/monitor/").get_data(as_text=True)
    assert HOSTILE not in page  # the page carries no received text, only the config
