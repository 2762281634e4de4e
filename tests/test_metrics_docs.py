"""docs/prometheus-alerts.yml and docs/grafana-dashboard.json against what the endpoint exports.

A real run (an app with every plane, its own heartbeat, a rejected invalidation, an error
group) is scraped once; every metric named in a rule, in the rules' unit tests and in a
dashboard query must be in that scrape. promtool (Debian's ``prometheus`` package, installed
by scripts/test.sh) checks the rules, runs their unit tests, checks the dashboard's queries
as PromQL and lints the exposition itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from conftest import wait_for
from flask import Flask
from servers import RedisServer
from test_metrics import parse

from flask_tickstock_monitor import TickStockMonitor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = os.path.join(ROOT, "docs", "prometheus-alerts.yml")
RULE_TESTS = os.path.join(ROOT, "tests", "prometheus-alerts.test.yml")
DASHBOARD = os.path.join(ROOT, "docs", "grafana-dashboard.json")
METRIC = re.compile(r"\btickstock_[a-zA-Z0-9_]+")


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: scripts/test.sh installs it (apt-get install prometheus)"
    return subprocess.run([tool, *args], input=stdin, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> Iterator[bytes]:
    """One scrape of the endpoint of an app that has every plane and has done a bit of each."""
    server = RedisServer().start()
    path = tmp_path_factory.mktemp("errorlog")
    app = Flask("docs_app")
    app.config.update(
        TICKSTOCK_MONITOR_REDIS_URL=server.url,
        TICKSTOCK_MONITOR_HEALTH_INTERVAL=0.2,
        TICKSTOCK_MONITOR_DATABASE_URI=f"sqlite:///{path}/errors.db",
        TICKSTOCK_MONITOR_DASHBOARD=True,
        TICKSTOCK_MONITOR_METRICS_ENDPOINT="/metrics",
    )
    monitor = TickStockMonitor(app)
    monitor.register_cache("relationship", {}, app=app)
    plane = app.extensions["tickstock_monitor"].metrics
    now = time.time()
    plane.groups = lambda: [
        {"fingerprint": "a1b2c3d4e5f60718", "message": "ZeroDivisionError: division by zero",
         "error_type": "ZeroDivisionError", "count": 3, "first_seen": now - 60, "last_seen": now,
         "severities": {"error": 3}, "components": {"docs_app": 3}, "series": [0] * 59 + [3],
         "series_start": now // 60 * 60 - 59 * 60, "status": "open", "new": True,
         "regression": False}
    ]  # fmt: skip
    try:
        client = server.client()
        relay = app.extensions["tickstock_monitor"].planes["relay"]
        assert relay.wait_connected(5)
        client.publish("tickstock:cache:invalidation", b'{"type": "cache_invalidation"}')
        assert wait_for(lambda: monitor.stats(app)["relay"]["rejected_total"] == 1, 5)
        assert wait_for(
            lambda: client.exists("tickstock:monitoring:latest:" + relay.state.instance_id), 5
        )
        # the publisher notes its round trip just after the batch (with the beat) reached Redis
        assert wait_for(lambda: monitor.stats(app)["last_latency_ms"] is not None, 5)
        response = app.test_client().get("/metrics")
        assert response.status_code == 200
        yield response.data
    finally:
        monitor.shutdown(app=app)
        server.stop()


@pytest.fixture(scope="module")
def exported(exposition: bytes) -> dict[str, set[str]]:
    """Each exported sample name, with the label names it carries."""
    out: dict[str, set[str]] = {}
    for name, samples in parse(exposition).items():
        for labels, _ in samples:
            out.setdefault(name, set()).update(labels)
    return out


def rules() -> list[dict[str, Any]]:
    with open(RULES) as f:
        document = yaml.safe_load(f)
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    panels = list(dashboard["panels"])
    queries = []
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        queries += [target["expr"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["query"]["query"])
    return queries


def test_the_alert_rules_pass_promtool():
    checked = promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert b"SUCCESS: 10 rules found" in checked.stdout
    tested = promtool("test", "rules", RULE_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_rules_the_issue_asks_for_are_there():
    names = {rule["alert"] for rule in rules()}
    assert {
        "TickstockInstanceStale",
        "TickstockInstanceOffline",
        "TickstockErrorRateHigh",
        "TickstockEventsDropped",
        "TickstockBreakerOpen",
    } <= names
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_every_metric_the_rules_use_is_exported(exported):
    for rule in rules():
        used = set(METRIC.findall(rule["expr"]))
        assert used, rule["alert"]
        assert used <= set(exported), (rule["alert"], used - set(exported))


def test_the_rules_unit_tests_use_exported_series_and_labels(exported):
    with open(RULE_TESTS) as f:
        document = yaml.safe_load(f)
    series = [s["series"] for test in document["tests"] for s in test["input_series"]]
    assert series
    for text in series:
        name, _, labels = text.partition("{")
        assert name in exported, name
        label_names = set(re.findall(r"(\w+)=", labels))
        assert label_names == exported[name], (name, label_names ^ exported[name])


def test_every_metric_the_dashboard_uses_is_exported(exported):
    queries = dashboard_queries()
    assert len(queries) >= 20
    for query in queries:
        used = set(METRIC.findall(query))
        assert used, query
        assert used <= set(exported), (query, used - set(exported))


def test_the_dashboard_queries_are_promql(tmp_path):
    grafana = {"$__rate_interval": "1m", "$environment": ".*", "$component": ".*"}
    recorded = []
    for i, query in enumerate(q for q in dashboard_queries() if not q.startswith("label_values")):
        for variable, value in grafana.items():
            query = query.replace(variable, value)
        recorded.append({"record": f"dashboard:query_{i}", "expr": query})
    rules_file = tmp_path / "dashboard-queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    checked = promtool("check", "rules", str(rules_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_exposition_passes_promtools_lint(exposition):
    linted = promtool("check", "metrics", stdin=exposition)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert linted.stdout == linted.stderr == b""
