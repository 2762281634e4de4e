"""The demo app on the embedded default: what the README's first command serves."""

from __future__ import annotations

import pytest

from example_app import create_app, monitor


@pytest.fixture
def demo(tickstock_memory_url):
    app = create_app(
        {
            "TICKSTOCK_MONITOR_REDIS_URL": tickstock_memory_url,
            "TESTING": True,
            "PROPAGATE_EXCEPTIONS": False,
        }
    )
    yield app
    monitor.shutdown(app=app)


@pytest.mark.parametrize(
    ("path", "status", "origin", "severity", "message"),
    [
        ("/fail/unhandled", 500, "unhandled", "error", "ZeroDivisionError: division by zero"),
        (
            "/fail/handled",
            500,
            "handled_5xx",
            "error",
            "HTTP 500 INTERNAL SERVER ERROR from handled: PricingError:"
            " quote feed returned no prices for AAPL",
        ),
        ("/fail/log", 200, "logging", "error", "threshold bar calculation skipped for nasdaq100"),
        ("/fail/signal", 200, "signal", "warning", "signal calculation-failed"),
    ],
)
def test_each_failure_is_published_once(
    demo, tickstock_events, path, status, origin, severity, message
):
    assert demo.test_client().get(path).status_code == status
    assert monitor.flush(2.0, app=demo)
    (event,) = tickstock_events.wait_for_errors(1)
    assert (event["origin"], event["severity"], event["message"]) == (origin, severity, message)
    assert monitor.stats(demo)["published"] == 1


def test_index_lists_what_was_published(demo, tickstock_events):
    client = demo.test_client()
    client.get("/fail/unhandled")
    assert monitor.flush(2.0, app=demo)
    tickstock_events.wait_for_errors(1)
    page = client.get("/").get_data(as_text=True)
    assert "Published (1)" in page
    assert "ZeroDivisionError: division by zero" in page
