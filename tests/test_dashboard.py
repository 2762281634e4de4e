"""The dashboard: off by default, guarded, a JSON view, and a live page in headless Chromium."""

from __future__ import annotations

import fnmatch
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from browserutil import assert_nothing_ran, chromium, plain
from flask import Flask, request
from flask_socketio import SocketIO
from relayutil import invalidation, publish, relay_of, serving, wait_for

from flask_tickstock_monitor import TickStockMonitor
from flask_tickstock_monitor.config import ConfigurationError

HOSTILE = '<img src=x onerror="document.body.dataset.pwned=1">'


def allow_header() -> bool:
    return request.headers.get("X-Monitor-Key") == "let-me-in"


def heartbeat(instance_id: str, status: str = "healthy", **metrics: Any) -> dict[str, Any]:
    return {
        "type": "health_check",
        "component": "market_data_service",
        "status": status,
        "timestamp": time.time(),
        "metrics": metrics or {"symbols_tracked": 70},
        "instance": {
            "id": instance_id,
            "host": "web-1",
            "pid": 4242,
            "boot_id": "b1",
            "uptime_s": 812.5,
        },
        "seq": int(time.time() * 10),
        "interval_s": 30,
    }


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def dashboard_app(redis_server) -> Iterator[Any]:
    """``make(socketio=True, **config)`` → (app, monitor, base URL), served on loopback."""
    stack = ExitStack()
    made: list[tuple[Flask, TickStockMonitor]] = []

    def make(socketio: bool = True, **config: Any):
        app = Flask(f"dashboard_app{len(made)}")
        app.config.update(
            TICKSTOCK_MONITOR_REDIS_URL=redis_server.url, TICKSTOCK_MONITOR_DASHBOARD=True, **config
        )
        if socketio:
            SocketIO(app, async_mode="threading")

        @app.get("/boom")
        def boom() -> Any:
            raise RuntimeError(HOSTILE)

        monitor = TickStockMonitor(app)
        made.append((app, monitor))
        monitor.register_cache("relationship", {"nasdaq100": 1}, app=app)
        assert app.extensions["tickstock_monitor"].planes["dashboard"].subscriber.wait_connected()
        assert relay_of(app).wait_connected()
        return app, monitor, stack.enter_context(serving(app))

    yield make
    for app, monitor in made:
        monitor.shutdown(timeout=1.0, app=app)
    stack.close()


def test_off_by_default(make_app, tickstock_memory_url):
    app, monitor = make_app(tickstock_memory_url)
    assert app.test_client().get("/monitor/").status_code == 404
    assert "dashboard" not in app.extensions["tickstock_monitor"].planes


def test_auth_hook_refuses_with_403(dashboard_app):
    app, monitor, url = dashboard_app()
    monitor.dashboard_auth(allow_header)
    assert get(f"{url}/monitor/")[0] == 403
    assert get(f"{url}/monitor/api/view")[0] == 403
    assert get(f"{url}/monitor/static/dashboard.js")[0] == 403
    status, body = get(f"{url}/monitor/api/view", {"X-Monitor-Key": "let-me-in"})
    assert status == 200 and json.loads(body)["connected"] is True


def test_auth_from_config_names_a_function(dashboard_app):
    app, monitor, url = dashboard_app(
        TICKSTOCK_MONITOR_DASHBOARD_AUTH="test_dashboard:allow_header",
        TICKSTOCK_MONITOR_DASHBOARD_URL_PREFIX="/ops/monitor/",
    )
    assert get(f"{url}/ops/monitor/")[0] == 403
    assert get(f"{url}/ops/monitor/", {"X-Monitor-Key": "let-me-in"})[0] == 200


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("DASHBOARD_AUTH", "nowhere.mod:check", "TICKSTOCK_MONITOR_DASHBOARD_AUTH: cannot import"),
        ("DASHBOARD_AUTH", 42, "TICKSTOCK_MONITOR_DASHBOARD_AUTH must be a callable"),
        ("DASHBOARD_URL_PREFIX", "monitor", "TICKSTOCK_MONITOR_DASHBOARD_URL_PREFIX must start"),
    ],
)
def test_bad_dashboard_config_names_the_key(make_app, tickstock_memory_url, key, value, message):
    with pytest.raises(ConfigurationError, match=message):
        make_app(
            tickstock_memory_url,
            TICKSTOCK_MONITOR_DASHBOARD=True,
            **{f"TICKSTOCK_MONITOR_{key}": value},
        )


def test_json_view_has_instances_errors_and_invalidations(dashboard_app, redis_server):
    app, monitor, url = dashboard_app()
    client = redis_server.client()
    publish(client, heartbeat("worker-7", symbols_tracked=70), "tickstock:monitoring")
    app.test_client().get("/boom")
    publish(client, invalidation(keys=["nasdaq100"]))

    def view() -> dict[str, Any]:
        return json.loads(get(f"{url}/monitor/api/view")[1])

    assert wait_for(
        lambda: (v := view())["instances"] and v["errors"]["recent"] and v["invalidations"]
    )
    current = view()
    [instance] = current["instances"]
    assert (instance["id"], instance["state"], instance["metrics"]) == (
        "worker-7",
        "healthy",
        {"symbols_tracked": 70},
    )
    [error] = current["errors"]["recent"]
    assert (error["message"], error["severity"], error["error_type"]) == (
        f"RuntimeError: {HOSTILE}",
        "error",
        "RuntimeError",
    )
    assert [i["keys"] for i in current["invalidations"]] == [["nasdaq100"]]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.mark.browser
@pytest.mark.parametrize("socketio", [True, False], ids=["socketio", "polling"])
def test_page_follows_errors_and_heartbeats(dashboard_app, redis_server, browser, socketio):
    app, monitor, url = dashboard_app(socketio=socketio)
    client = redis_server.client()
    publish(client, heartbeat("worker-7", symbols_tracked=70), "tickstock:monitoring")
    assert wait_for(
        lambda: app.extensions["tickstock_monitor"].planes["dashboard"].subscriber.instances()
    )
    page = browser.new_page()
    try:
        page.goto(f"{url}/monitor/")
        row = page.locator('[data-key="worker-7"]')
        row.wait_for(timeout=5000)  # a late-opened page shows what is known at once
        text = plain(row.inner_text())
        assert "healthy" in text and "symbols_tracked: 70" in text
        page.locator("#link", has_text="live" if socketio else "polling").wait_for(timeout=5000)
        if socketio:  # the official socket.io-client (vendored), upgraded to a WebSocket
            page.wait_for_function(
                "window.tickstockSocket.io.engine.transport.name === 'websocket'"
            )
            assert page.evaluate("window.tickstockSocket.nsp") == "/tickstock-monitor"

        app.test_client().get("/boom")  # an error raised in the app
        message = page.locator("#errors li .message")
        message.first.wait_for(timeout=5000)
        assert message.first.text_content() == f"RuntimeError: {HOSTILE}"  # shown as text ...
        assert page.locator("#errors img").count() == 0  # ... never as HTML
        assert page.evaluate("document.body.dataset.pwned") is None
        assert "RuntimeError" in plain(page.locator("#errors li").first.inner_text())

        publish(
            client, heartbeat("worker-7", "degraded", symbols_tracked=12), "tickstock:monitoring"
        )
        page.locator('[data-key="worker-7"] .pill.degraded').wait_for(timeout=5000)
        assert "symbols_tracked: 12" in plain(row.inner_text())

        monitor.invalidate("relationship", ["nasdaq100"], scope="universe", app=app)
        item = page.locator("#invalidations li", has_text="nasdaq100")
        item.wait_for(timeout=5000)
        assert "relationship: keys nasdaq100 (scope universe)" in plain(item.inner_text())
    finally:
        page.close()


def test_example_app_serves_the_dashboard(tickstock_memory_url):
    from example_app import create_app, monitor

    app = create_app({"TICKSTOCK_MONITOR_REDIS_URL": tickstock_memory_url, "TESTING": True})
    try:
        client = app.test_client()
        assert client.get("/monitor/").status_code == 200
        assert client.get("/invalidate/nasdaq100").json["cached"] == ["sp500"]
        view = client.get("/monitor/api/view").json
        assert [(i["cache"], i["keys"], i["local"]) for i in view["invalidations"]] == [
            ("relationship", ["nasdaq100"], True)
        ]
    finally:
        monitor.shutdown(app=app)


def error_event(n: int, **fields: Any) -> dict[str, Any]:
    """An error as a publisher sends it on tickstock:errors."""
    return {
        "type": "application_error",
        "error_id": f"e2e-{n:05d}",
        "source": "TickStockAppV2",
        "severity": "error",
        "component": "web",
        "message": f"error number {n}",
        "timestamp": time.time(),
        "context": {"n": n},
        "instance_id": "web-1:4242",
        **fields,
    }


@pytest.mark.browser
def test_page_pauses_and_pages_back_on_the_real_api(dashboard_app, redis_server, browser):
    app, monitor, url = dashboard_app(socketio=True)
    client = redis_server.client()
    subscriber = app.extensions["tickstock_monitor"].planes["dashboard"].subscriber
    for n in range(150):
        publish(client, error_event(n), "tickstock:errors")
    assert wait_for(lambda: subscriber.errors_received >= 150)
    page = browser.new_page()
    try:
        page.goto(f"{url}/monitor/")
        page.locator("#link", has_text="live").wait_for(timeout=5000)
        items = page.locator("#errors > li")
        items.nth(99).wait_for(timeout=5000)
        assert items.count() == 100 and "error number 149" in items.first.inner_text()
        page.locator("#older").click()  # api/errors from the subscriber's memory, by cursor
        items.nth(149).wait_for(timeout=5000)
        assert "error number 0" in items.nth(149).text_content()
        page.locator("#older", has_text="no older errors").wait_for(timeout=5000)

        page.locator("#link", has_text="paused").wait_for()  # reading back paused the feed:
        publish(client, error_event(500, message="while paused"), "tickstock:errors")
        page.locator("#missed", has_text="1 update(s) held back").wait_for(timeout=5000)
        page.wait_for_timeout(1200)
        assert page.locator("#errors li", has_text="while paused").count() == 0
        page.locator("#pause").click()
        page.locator("#errors li", has_text="while paused").wait_for(timeout=5000)
        assert "error number 149" not in items.first.inner_text()
        assert items.count() == 100  # back to the newest errors
    finally:
        page.close()


@pytest.mark.browser
def test_group_resolve_and_instance_charts_on_the_real_api(
    dashboard_app, redis_server, browser, tmp_path
):
    app, monitor, url = dashboard_app(
        socketio=True,
        TICKSTOCK_MONITOR_DATABASE_URI=f"sqlite:///{tmp_path}/errors.db",
        TICKSTOCK_MONITOR_DATABASE_MIN_SEVERITY="warning",
        SECRET_KEY="dashboard-test",
    )
    client = redis_server.client()
    for _ in range(3):
        monitor.publish_error(f"disk full {HOSTILE}", severity="critical", app=app)
    assert monitor.flush(10, app=app) and monitor.state(app).errorlog.flush(10)
    for memory in (80.5, 81.0, 82.5):
        publish(client, heartbeat("worker-7", memory_usage_mb=memory), "tickstock:monitoring")
        time.sleep(0.05)
    page = browser.new_page()
    try:
        page.goto(f"{url}/monitor/?severity=critical")
        page.locator("#groups-source", has_text="from database").wait_for(timeout=5000)
        row = page.locator("#groups-body tr", has_text="disk full")
        row.wait_for(timeout=5000)
        row.click()
        page.locator("#detail .events li").nth(2).wait_for(timeout=5000)
        assert "severity=critical" in page.url and "group=" in page.url
        page.locator('#detail button[data-action="resolve"]').click()  # with the CSRF token
        page.locator("#groups-body .pill", has_text="resolved").wait_for(timeout=5000)
        status = json.loads(get(f"{url}/monitor/api/groups?status=resolved")[1])
        assert [g["message"] for g in status["groups"]] == [f"disk full {HOSTILE}"]

        page.locator('#instances-body [data-key="worker-7"]').click()
        charts = page.locator("#instances-body .instance-detail .metric-chart")
        charts.first.wait_for(timeout=5000)
        assert "memory_usage_mb" in charts.first.inner_text()
        assert_nothing_ran(page)
    finally:
        page.close()


def test_the_package_ships_the_page_and_its_vendored_libraries():
    """Every static file (the vendored libraries and their licences too) is package data, and
    the vendored files are the versions scripts/vendor.sh pins."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).resolve().parent.parent
    package = root / "flask_tickstock_monitor"
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["flask_tickstock_monitor"]
    files = [p.relative_to(package).as_posix() for p in (package / "static").rglob("*")]
    files += ["templates/tickstock_monitor_dashboard.html"]
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert missing == [] and "static/vendor/socket.io.min.js" in files

    pins = dict(
        re.findall(
            r"^(SOCKET_IO_CLIENT|UPLOT)=(\S+)$", (root / "scripts/vendor.sh").read_text(), re.M
        )
    )
    vendor = package / "static" / "vendor"
    assert (
        f"Socket.IO v{pins['SOCKET_IO_CLIENT']}" in (vendor / "socket.io.min.js").read_text()[:200]
    )
    assert f"(v{pins['UPLOT']})" in (vendor / "uPlot.iife.min.js").read_text()[:200]
    for licence in ("socket.io-client.LICENSE", "uPlot.LICENSE"):
        assert "MIT License" in (vendor / licence).read_text()


@pytest.mark.browser
@pytest.mark.parametrize("socketio", [True, False], ids=["socketio", "polling"])
def test_a_skewed_error_is_marked_not_pinned_on_top(dashboard_app, redis_server, browser, socketio):
    app, monitor, url = dashboard_app(socketio=socketio)
    client = redis_server.client()
    page = browser.new_page()
    try:
        page.goto(f"{url}/monitor/")
        page.locator("#link", has_text="live" if socketio else "polling").wait_for(timeout=5000)
        publish(
            client, error_event(1, message="from the future", timestamp=1e11), "tickstock:errors"
        )
        page.locator("#errors li", has_text="from the future").wait_for(timeout=5000)
        publish(client, error_event(2, message="on time"), "tickstock:errors")
        page.locator("#errors li", has_text="on time").wait_for(timeout=5000)
        items = page.locator("#errors > li")
        assert "on time" in items.nth(0).inner_text()  # by when it was received
        assert "from the future" in items.nth(1).inner_text()
        assert items.nth(1).locator(".pill.skewed").text_content() == "clock skew"
        assert "stamped 5138-11-16" in plain(items.nth(1).inner_text())
    finally:
        page.close()


def test_health_components_show_their_lowercase_state(dashboard_app, redis_server, browser):
    # Beats carry TickStockAppV2's "OK"/"DEGRADED" in a component's status and our state beside
    # it; the page shows the state (and, for an older beat, the lowercase status it has).
    app, _monitor, url = dashboard_app()
    beat = heartbeat("worker-8")
    beat["health"] = {
        "status": "degraded",
        "components": {
            "database": {"status": "DEGRADED", "state": "degraded", "details": "pool 9/10"},
            "cache": {"status": "healthy"},
        },
    }
    publish(redis_server.client(), beat, "tickstock:monitoring")
    page = browser.new_page()
    try:
        page.goto(f"{url}/monitor/")
        row = page.locator('[data-key="worker-8"]')
        row.wait_for(timeout=5000)
        text = plain(row.inner_text())
        assert "database: degraded (pool 9/10)" in text and "cache: healthy" in text
        assert "DEGRADED" not in text
    finally:
        page.close()
