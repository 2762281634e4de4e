"""``flask tickstock`` diagnostics against Sentinel and Cluster (classic and sharded) URLs."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from topologies import wait_for

from flask_tickstock_monitor.cli import tickstock
from flask_tickstock_monitor.transport import Subscription, connect
from flask_tickstock_monitor.transport.clients import channel_counts, publish_one, subscriber_counts

ERRORS = "tickstock:errors"
MONITORING = "tickstock:monitoring"
INVALIDATION = "tickstock:cache:invalidation"


@pytest.fixture(params=["sentinel", "cluster", "cluster-sharded"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "sentinel":
        url = str(request.getfixturevalue("sentinel_group").url)
    else:
        url = str(request.getfixturevalue("cluster_group").url)
        if request.param == "cluster-sharded":
            url += "?sharded_pubsub=true"
    # the servers are shared by the module: start from no subscribers left by another test
    client = connect(url)
    wait_for(lambda: not channel_counts(client, "tickstock*"), 10, "no subscribers left")
    return url


@pytest.fixture
def app(url: str, make_app: Callable[..., Any]) -> Any:
    return make_app(url)[0]


class Listener:
    """A subscription made the way the URL says (classic or sharded, on the right nodes)."""

    def __init__(self, url: str, *channels: str):
        self.messages: list[tuple[str, Any]] = []
        self.subscription = Subscription(
            lambda: connect(url),
            channels,
            lambda channel, data: self.messages.append((channel, json.loads(data))),
        ).start()
        assert self.subscription.wait_connected(10)


@pytest.fixture
def listen(url: str) -> Iterator[Callable[..., Listener]]:
    made: list[Listener] = []

    def make(*channels: str) -> Listener:
        made.append(Listener(url, *channels))
        return made[-1]

    yield make
    for listener in made:
        listener.subscription.stop()


def invoke(app: Any, *args: str) -> Any:
    return app.test_cli_runner().invoke(tickstock, list(args))


def when_subscribed(url: str, channel: str, count: int, action: Callable[[], Any]) -> Any:
    """Run ``action`` in a thread once ``channel`` has ``count`` subscribers (the CLI's own)."""
    client = connect(url)

    def run() -> None:
        wait_for(
            lambda: subscriber_counts(client, [channel])[channel] >= count,
            10,
            f"{count} subscribers of {channel}",
        )
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_health(app, url, listen):
    listener = listen(ERRORS, MONITORING)
    result = invoke(app, "health")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"Redis: {url}"
    assert re.fullmatch(r"OK      Redis connection \(\d+\.\d\d ms\)", lines[1])
    assert lines[2:] == [
        "        Active channels: 2",
        "          - tickstock:errors: 1 subscribers",
        "          - tickstock:monitoring: 1 subscribers",
        "OK      Test message published to tickstock:monitoring (1 subscribers)",
    ]
    wait_for(lambda: listener.messages, 10, "the test message")
    [(channel, message)] = listener.messages
    assert (channel, message["type"]) == (MONITORING, "test")


def test_channels(app, listen):
    listen(MONITORING, "tickstock:extra")
    result = invoke(app, "channels")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "tickstock:cache:invalidation\t0",
        "tickstock:errors\t0",
        "tickstock:extra\t1",
        "tickstock:monitoring\t1",
    ]


def test_listen(app, url):
    client = connect(url)

    def publish_two() -> None:
        publish_one(client, ERRORS, b'{"a": 1}')
        publish_one(client, INVALIDATION, b'{"b": 2}')

    # the CLI's subscription covers the three channels; wait for the last one it subscribes
    thread = when_subscribed(url, INVALIDATION, 1, publish_two)
    result = invoke(app, "listen", "--json", "--count", "2", "--timeout", "20")
    thread.join(10)
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.output.splitlines()] == [
        {"channel": ERRORS, "message": {"a": 1}},
        {"channel": INVALIDATION, "message": {"b": 2}},
    ]


def test_listen_fails_when_count_not_reached(app):
    result = invoke(app, "listen", "--json", "--count", "1", "--timeout", "0.5")
    assert (result.exit_code, result.output) == (1, "")


def test_publish_test(app, listen):
    listener = listen(MONITORING)
    result = invoke(app, "publish-test")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "OK      Test message published to tickstock:monitoring (1 subscribers)\n"
    )
    wait_for(lambda: listener.messages, 10, "the test message")
    [(channel, message)] = listener.messages
    assert (channel, message["type"]) == (MONITORING, "test")
    assert message["instance"] == app.extensions["tickstock_monitor"].instance_id


def test_doctor(app, url, listen, make_app):
    listen(ERRORS)
    other, monitor = make_app(url)
    # published while the doctor samples: it has subscribed once errors has two subscribers
    thread = when_subscribed(url, ERRORS, 2, lambda: monitor.publish_error("seen", app=other))
    result = invoke(app, "doctor", "--sample-seconds", "1")
    thread.join(10)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"Redis: {url}"
    assert re.fullmatch(
        r"OK      Redis connection \(ping min [\d.]+ / median [\d.]+ / max [\d.]+ ms\)", lines[1]
    )
    assert lines[2:] == [
        "        tickstock:errors: 1 subscribers",
        "        tickstock:monitoring: 0 subscribers",
        "        tickstock:cache:invalidation: 0 subscribers",
        "Sampling live messages for 1s …",
        "        tickstock:errors: 1 messages",
        "        tickstock:monitoring: 0 messages",
        "        tickstock:cache:invalidation: 0 messages",
        "OK      every sampled message keeps its contract",
        "OK      this app published 0, dropped none, queued 0",
        "No problems found",
    ]


def test_doctor_reports_a_broken_message(app, url):
    client = connect(url)
    broken = json.dumps({"type": "cache_invalidation", "cache": "relationship"})
    thread = when_subscribed(
        url, INVALIDATION, 1, lambda: publish_one(client, INVALIDATION, broken)
    )
    result = invoke(app, "doctor", "--sample-seconds", "1")
    thread.join(10)
    assert result.exit_code == 1, result.output
    problems = [line for line in result.output.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 1
    assert problems[0].startswith("PROBLEM 1 invalid message(s) on tickstock:cache:invalidation: ")
    assert result.output.splitlines()[-1] == "1 problem(s) found"
