"""The dashboard page in headless Chromium, against a stand-in API (tests/dashstub.py): hostile
text in every view, layout width, bidi, clock skew, paging, pause, filters in the URL, the
group actions with their CSRF token, instances sorted and scrolling on their own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from browserutil import HOSTILE, HOSTILE_TEXT, assert_nothing_ran, chromium, page_width, plain
from dashstub import Stub, error, group, instance
from relayutil import serving

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    """``open_page(stub, query="")`` -> a page on the stub's dashboard, loaded (polling)."""
    made: list[Any] = []
    with ExitStack() as stack:

        def open_(stub: Stub, query: str = "", width: int = 1280) -> Any:
            url = stack.enter_context(serving(stub.app()))
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.page_errors = []
            page.on("pageerror", lambda exc: page.page_errors.append(str(exc)))
            made.append(page)
            page.goto(f"{url}/monitor/{query}")
            page.locator("#link", has_text="polling").wait_for(timeout=5000)
            return page

        yield open_
        for page in made:
            assert page.page_errors == []  # the page's own script never failed
            page.close()


def hostile_stub() -> Stub:
    stub = Stub(durable=True)
    h = HOSTILE_TEXT
    stub.instances = [
        instance(
            f"id {h}",
            "unhealthy",
            component=f"comp {h}",
            host=h,
            pid=h,
            release=h,
            metrics={h: h, "memory_usage_mb": 80.0},
            components={h: {"status": h, "details": h, h: h}},
        )
    ]
    stub.errors = [
        error(
            1,
            message=h,
            error_type=h,
            component=h,
            severity=h,
            traceback=h,
            context={h: h},
            host=h,
            pid=h,
            release=h,
            environment=h,
            instance_id=h,
            fingerprint=h,
            error_id=h,
        )
    ]
    stub.groups = [
        group(
            h,
            message=h,
            error_type=h,
            status=h,
            releases={h: 1},
            instances={h: 1},
            components={h: 1},
            environments={h: 1},
        )
    ]
    stub.invalidations = [
        {
            "cache": h,
            "action": "invalidate",
            "keys": [h],
            "scope": h,
            "origin": h,
            "timestamp": time.time(),
            "caches": [h],
            "invalidation_id": h,
        }
    ]
    stub.facets = {name: [h] for name in ("severity", "component", "instance", "release")}
    stub.series = {f"id {h}": {h: [[time.time() - 10, 1], [time.time(), 2]]}}
    minute = (time.time() // 60 - 59) * 60
    stub.errors_per_minute = {
        "by": "severity",
        "bucket_s": 60,
        "series_start": minute,
        "series": {h: [1] * 60},
        "total": [1] * 60,
    }  # the chart's legend
    return stub


def test_hostile_text_in_every_view_stays_text(open_page):
    page = open_page(hostile_stub())
    page.locator("#errors > li").first.wait_for(timeout=5000)
    page.locator("#groups-body tr").first.click()  # the group's detail, with its events
    page.locator("#detail .events li").first.wait_for(timeout=5000)
    page.locator("#instances-body .instance").first.click()  # components and charts
    page.locator("#instances-body .instance-detail .metric-chart").first.wait_for(timeout=5000)
    # tracebacks, contexts, long text: all of it opened (each fills itself when opened)
    page.evaluate("document.querySelectorAll('button.expand').forEach((b) => b.click())")
    page.evaluate("document.querySelectorAll('details').forEach((d) => { d.open = true; })")
    page.wait_for_timeout(500)
    assert_nothing_ran(page)
    body = page.locator("body").inner_text()
    for text in HOSTILE:  # shown, as text, in each view
        assert text in body
    for where in ("#errors", "#detail", "#groups-body", "#instances-body", "#invalidations"):
        assert HOSTILE[0] in page.locator(where).text_content(), where  # (out of sight too)
    assert HOSTILE[0] in page.locator("#filter-component").text_content()
    assert HOSTILE[0][:39] in page.locator("#rate-chart .u-legend").text_content()  # (cut)


@pytest.mark.parametrize("width", [1280, 800])
def test_layout_width_holds_with_100kb_message_and_instance_id(open_page, width):
    stub = Stub()
    huge = "x" * 100_000
    stub.instances = [
        instance(
            f"i{huge}", "unhealthy", components={"db": {"status": "unhealthy", "details": huge}}
        )
    ]
    stub.errors = [error(1, message=huge, traceback=huge, fingerprint="fpX", context={"k": huge})]
    stub.groups = [group("fpX", message=huge)]
    stub.facets = {"instance": [f"i{huge}"], "component": [huge]}  # the filters' drop-downs
    stub.invalidations = [
        {
            "cache": huge,
            "action": "invalidate",
            "keys": [huge],
            "timestamp": time.time(),
            "caches": [huge],
        }
    ]
    stub.series = {f"i{huge}": {"memory_usage_mb": [[time.time() - 10, 1], [time.time(), 2]]}}
    page = open_page(stub, width=width)
    page.locator("#errors > li").first.wait_for(timeout=5000)
    page.locator("#groups-body tr").first.click()
    page.locator("#detail .events li").first.wait_for(timeout=5000)
    page.locator("#instances-body .instance").first.click()
    # (a 100 KB id makes too long a URL for the series: the detail says so, in its box)
    page.locator(".instance-detail .charts", has_text="no series").wait_for(timeout=5000)
    width = page_width(page)
    assert width["scroll"] <= width["viewport"] and width["body"] <= width["viewport"], width
    # the whole text is one click away, and opening it does not widen the page either
    page.locator("#errors .message summary").first.click()
    # (filled when the details open: the toggle event comes a moment after the click)
    page.wait_for_function(
        "document.querySelector('#errors .message pre').textContent.length === 100000"
    )
    width = page_width(page)
    assert width["scroll"] <= width["viewport"], width
    box = page.locator("#invalidations").bounding_box()
    assert box["x"] + box["width"] <= width["viewport"]  # the invalidations pane stays on screen
    print(f"layout width with 100 KB message and id: {width}")


def test_rtl_override_and_controls_are_isolated_and_visible(open_page):
    stub = Stub()
    stub.instances = [instance("RTL\u202egnp.exe")]
    stub.errors = [
        error(1, message="file \u202egnp.exe\u202c and \x1b[31mred\x00", fingerprint="f")
    ]
    page = open_page(stub)
    page.locator("#errors > li").first.wait_for(timeout=5000)
    row = page.locator("#instances-body .instance").first
    assert row.locator(".iid").text_content() == "RTL\\u202Egnp.exe"  # shown, not obeyed
    message = page.locator("#errors .message").first
    assert message.text_content() == "file \\u202Egnp.exe\\u202C and \u241b[31mred\u2400"
    text = page.locator("body").inner_text()
    assert "\u202e" not in text and "\x1b" not in text and "\x00" not in text
    for locator in (row.locator(".iid"), message):  # and isolated from its neighbours
        assert locator.evaluate("e => getComputedStyle(e).unicodeBidi") == "isolate"


def test_skewed_timestamp_is_marked_and_not_pinned_on_top(open_page):
    stub = Stub()
    now = time.time()
    skewed = error(9, received_at=now - 30, message="from the future", timestamp=1e11, skewed=True)
    stub.errors = [error(1, received_at=now - 1), error(2, received_at=now - 2), skewed]
    page = open_page(stub)
    items = page.locator("#errors > li")
    items.nth(2).wait_for(timeout=5000)
    assert "error number 1" in items.nth(0).inner_text()  # ordered by received_at
    assert "from the future" in items.nth(2).inner_text()
    assert items.nth(2).locator(".pill.skewed").text_content() == "clock skew"
    assert items.nth(0).locator(".pill.skewed").count() == 0


def test_paging_shows_older_errors(open_page):
    stub = Stub()
    now = time.time()
    stub.errors = [error(n, received_at=now - n) for n in range(250)]
    page = open_page(stub)
    items = page.locator("#errors > li")
    items.nth(99).wait_for(timeout=5000)
    assert items.count() == 100
    page.locator("#older").click()
    page.locator("#link", has_text="paused").wait_for()  # reading back pauses the live feed
    items.nth(199).wait_for(timeout=5000)
    # (text_content: rows out of sight are not laid out, so they have no inner_text)
    assert items.count() == 200 and "error number 199" in items.nth(199).text_content()
    assert [args.get("before") for path, args in stub.requests if path.endswith("/errors")] == [
        "m:99901"  # the oldest shown error's cursor
    ]
    page.locator("#older").click()
    items.nth(249).wait_for(timeout=5000)
    page.locator("#older", has_text="no older errors").wait_for(timeout=5000)
    texts = items.all_text_contents()
    assert len(texts) == 250 and "error number 249" in texts[-1]
    page.locator("#pause").click()  # resumed: the newest again
    page.wait_for_function("document.querySelectorAll('#errors > li').length === 100")


def test_pause_stops_updates_until_resumed(open_page):
    stub = Stub()
    stub.errors = [error(1)]
    page = open_page(stub)
    items = page.locator("#errors > li")
    items.first.wait_for(timeout=5000)
    page.locator("#pause").click()
    page.locator("#link", has_text="paused").wait_for(timeout=2000)
    stub.errors.insert(0, error(0, message="arrived while paused"))
    page.wait_for_timeout(1500)  # five polls' worth
    assert items.count() == 1
    page.locator("#pause").click()
    page.locator("#errors li", has_text="arrived while paused").wait_for(timeout=5000)
    assert items.count() == 2


def test_filters_in_the_url_reproduce_a_view(open_page):
    stub = Stub()
    stub.facets = {"severity": ["critical", "error"], "component": ["db", "web"]}
    stub.errors = [
        error(1, severity="critical", component="db", message="disk full"),
        error(2, severity="error", component="web", message="disk slow"),
        error(3, severity="critical", component="web", message="cpu hot"),
    ]
    page = open_page(stub, "?severity=critical&q=disk")
    page.locator("#errors > li").first.wait_for(timeout=5000)
    assert page.locator("#errors > li .message").all_inner_texts() == ["disk full"]
    assert page.locator("#filter-severity").input_value() == "critical"
    assert page.locator("#filter-q").input_value() == "disk"
    views = [args for path, args in stub.requests if path.endswith("/api/view")]
    assert views[0] == {"severity": "critical", "q": "disk"}  # the server filters too
    page.locator("#filter-component").select_option("db")
    page.wait_for_function("location.search.includes('component=db')")
    linked = page.url
    again = open_page(stub, linked[linked.index("?") :])
    again.locator("#errors > li").first.wait_for(timeout=5000)
    assert again.locator("#errors > li .message").all_inner_texts() == ["disk full"]
    assert again.locator("#filter-component").input_value() == "db"


def test_group_actions_send_the_csrf_token(open_page):
    stub = Stub(durable=True, csrf_token="s3cret-token")
    stub.groups = [group("fp/1 2")]  # any character, "/" included
    stub.errors = [error(1, fingerprint="fp/1 2", message="grouped")]
    page = open_page(stub, "?group=fp%2F1%202")  # a linked detail opens at once
    page.locator("#detail .events li", has_text="grouped").wait_for(timeout=5000)
    page.locator('#detail button[data-action="resolve"]').click()
    page.locator("#groups-body .pill", has_text="resolved").wait_for(timeout=5000)
    assert stub.actions == [("fp/1 2", "resolve", "s3cret-token")]
    stub.csrf_token = "another"  # the server's token changed: refused, and the page says so
    page.locator('#detail button[data-action="reopen"]').click()
    page.locator("#detail .problem", has_text="reopen failed: csrf").wait_for(timeout=5000)


def test_group_actions_hidden_without_the_durable_log(open_page):
    stub = Stub(durable=False)
    stub.groups = [group("fp1")]
    page = open_page(stub, "?group=fp1")
    page.locator("#detail .actions", has_text="need the durable error log").wait_for(timeout=5000)
    assert page.locator("#detail button[data-action]").count() == 0


def test_instances_sorted_by_state_and_scrolling_on_their_own(open_page):
    stub = Stub()
    states = (
        ["healthy"] * 190 + ["stale"] * 3 + ["offline"] * 3 + ["unhealthy"] * 2 + ["degraded"] * 2
    )
    stub.instances = [instance(f"w-{i:03d}", state) for i, state in enumerate(states)]
    stub.errors = [error(1)]
    stub.series = {
        "w-190": {
            "memory_usage_mb": [[time.time() - 60 + i, 80 + i] for i in range(60)],
            "redis_latency_ms": [[time.time() - 60 + i, 0.4] for i in range(60)],
        }
    }
    page = open_page(stub)
    rows = page.locator("#instances-body .instance")
    rows.nth(199).wait_for(timeout=5000)
    order = [rows.nth(i).locator(".pill").text_content() for i in range(10)]
    assert order == ["unhealthy"] * 2 + ["offline"] * 3 + ["stale"] * 3 + ["degraded"] * 2
    feed = page.locator("#errors").bounding_box()
    assert feed["y"] < 1400, feed  # the error feed is not thousands of pixels down
    box = page.locator(".instances-box")
    assert box.evaluate("e => e.scrollHeight > e.clientHeight")  # the table scrolls on its own
    page.locator('#instances-body [data-key="w-190"]').click()  # a stale one: components, charts
    detail = page.locator("#instances-body .instance-detail")
    detail.locator(".metric-chart canvas").nth(1).wait_for(timeout=5000)
    text = plain(detail.inner_text())
    assert "database is stale" in text and "latency_ms: 0.4" in text
    page.locator('#instances-body [data-key="w-190"]').click()  # closed again: row and charts gone
    detail.wait_for(state="detached", timeout=5000)
    page.locator("#instances-section > summary").click()  # and the section collapses
    assert not page.locator(".instances-box").is_visible()


def test_error_context_host_and_pid_are_shown(open_page):
    stub = Stub()
    stub.errors = [error(1, host="db-host-9", pid=31337, context={"order_id": 4711})]
    page = open_page(stub)
    item = page.locator("#errors > li").first
    item.wait_for(timeout=5000)
    text = plain(item.inner_text())
    assert "db-host-9" in text and "31337" in text
    item.locator("button.expand", has_text="context").click()
    assert '"order_id": 4711' in item.locator("pre").last.text_content()
    assert "Traceback" in item.locator("pre").first.text_content()
