"""Screenshots of the dashboard for the README (docs/dashboard*.png), in headless Chromium.

The real page (template, scripts, vendored libraries) with an hour of made-up history served by
the stand-in API of the browser tests (tests/dashstub.py), so the charts have something to show.
Run: .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from browserutil import chromium  # noqa: E402
from dashstub import Stub, error, group, instance  # noqa: E402
from relayutil import serving  # noqa: E402

MESSAGES = [
    ("TimeoutError", "upstream quote feed timed out after 2000 ms", "critical", "market_data"),
    ("KeyError", "KeyError: 'NVDA' not in the universe cache", "error", "web"),
    ("PricingError", "quote feed returned no prices for AAPL", "error", "pricing"),
    ("OperationalError", "could not connect to server: Connection refused", "critical", "web"),
    ("ValueError", "threshold bar calculation skipped for nasdaq100", "warning", "pattern_scan"),
    ("ZeroDivisionError", "division by zero in volatility window", "error", "analytics"),
]


def made_up() -> Stub:
    rng = random.Random(7)
    now = time.time()
    stub = Stub(durable=True)
    states = ["unhealthy", "stale", "degraded", "offline"] + ["healthy"] * 20
    components = ["web", "market_data", "pattern_scan", "pricing"]
    stub.instances = []
    for i, state in enumerate(states):
        component = components[i % 4]
        inst = instance(
            f"{component}-{i // 4 + 1}:{4200 + i}",
            state,
            component=component,
            host=f"app-{i // 4 + 1}",
            pid=4200 + i,
        )
        inst["metrics"] = {
            "memory_usage_mb": round(70 + rng.random() * 60, 1),
            "symbols_tracked": 500 + i,
            "active_websockets": rng.randrange(40),
        }
        inst["last_seen"] = now - (95 if state == "stale" else 400 if state == "offline" else 3)
        if state == "unhealthy":
            inst["components"]["database"]["details"] = "connection refused (pool 0/10)"
        stub.instances.append(inst)
    stub.groups = []
    for n, (etype, message, severity, component) in enumerate(MESSAGES):
        series = [
            max(0, int(3 + 3 * math.sin(m / (5 + n)) + rng.random() * 4 - (n % 3) * 2))
            for m in range(60)
        ]
        stub.groups.append(
            group(
                hashlib.sha1(message.encode()).hexdigest()[:12],
                message=message,
                error_type=etype,
                severity=severity,
                count=sum(series) + 40 * n,
                series=series,
                status="resolved" if n == 4 else "open",
                new=n == 1,
                regression=n == 3,
                severities={severity: sum(series)},
                components={component: sum(series)},
                instances={f"{component}-1:42{n:02d}": 30, f"{component}-2:43{n:02d}": 12},
                releases={"v2.4.1": 30, "v2.4.0": 12},
            )
        )
    stub.errors = []
    for k in range(120):
        etype, message, severity, component = MESSAGES[k % len(MESSAGES)]
        stub.errors.append(
            error(
                k,
                received_at=now - 7 * k,
                message=message,
                error_type=etype,
                severity=severity,
                component=component,
                fingerprint=stub.groups[k % len(MESSAGES)]["fingerprint"],
                instance_id=f"{component}-{k % 3 + 1}:42{k % 20:02d}",
                host=f"app-{k % 3 + 1}",
                pid=4200 + k % 20,
                release="v2.4.1",
                traceback=f"Traceback (most recent call last):\n  app.py:42\n{etype}: {message}",
                context={"path": "/api/quotes", "request_id": f"r-{k:05d}"},
            )
        )
    start = (now // 60 - 59) * 60
    lines = {
        sev: [max(0, int(a + a * math.sin(m / p) + rng.random() * a)) for m in range(60)]
        for sev, a, p in (("critical", 1, 7), ("error", 4, 11), ("warning", 2, 5))
    }
    stub.errors_per_minute = {
        "by": "severity",
        "bucket_s": 60,
        "series_start": start,
        "series": lines,
        "total": [sum(v) for v in zip(*lines.values(), strict=True)],
    }
    stub.facets = {
        "severity": ["critical", "error", "warning"],
        "component": components,
        "release": ["v2.4.0", "v2.4.1"],
        "environment": ["production"],
    }
    stub.invalidations = [
        {
            "cache": "relationship",
            "action": "invalidate",
            "keys": [key],
            "scope": "universe",
            "timestamp": now - 30 * i,
            "local": i % 2 == 0,
            "origin": "app-2:4311",
            "caches": ["relationship"],
            "invalidation_id": f"inv{i}",
        }
        for i, key in enumerate(["nasdaq100", "sp500", "dow30", "russell2000"])
    ]
    first = stub.instances[0]["id"]
    stub.series = {
        first: {
            "memory_usage_mb": [
                [now - 3600 + 5 * j, 80 + 20 * math.sin(j / 90) + rng.random() * 3]
                for j in range(720)
            ],
            "redis_latency_ms": [
                [now - 3600 + 5 * j, 0.3 + rng.random() * 0.4 + (j > 600) * 1.5] for j in range(720)
            ],
            "database_latency_ms": [[now - 3600 + 5 * j, 4 + rng.random() * 3] for j in range(720)],
            "symbols_tracked": [[now - 3600 + 5 * j, 500 + j // 60] for j in range(720)],
        }
    }
    return stub


def main() -> None:
    stub = made_up()
    docs = os.path.join(ROOT, "docs")
    with serving(stub.app()) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(f"{url}/monitor/")
        page.locator("#errors > li").nth(20).wait_for()
        page.wait_for_timeout(800)
        page.screenshot(path=os.path.join(docs, "dashboard.png"))
        page.locator("#groups-body tr").first.click()
        page.locator("#detail .events li").first.wait_for()
        page.locator("#detail .events li button.expand").first.click()
        page.wait_for_timeout(500)
        page.evaluate("document.querySelector('.columns').scrollIntoView()")
        page.evaluate("window.scrollBy(0, -90)")  # below the sticky header
        page.wait_for_timeout(500)  # rows that came into sight are drawn
        page.screenshot(path=os.path.join(docs, "dashboard-group.png"))
        page.goto(f"{url}/monitor/")
        page.locator(f'#instances-body [data-key="{stub.instances[0]["id"]}"]').click()
        page.locator(".instance-detail .metric-chart canvas").nth(3).wait_for()
        page.wait_for_timeout(500)
        page.locator("#instances-section").screenshot(
            path=os.path.join(docs, "dashboard-instances.png")
        )
    print("wrote docs/dashboard.png, docs/dashboard-group.png, docs/dashboard-instances.png")


if __name__ == "__main__":
    main()
