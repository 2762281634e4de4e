"""``flask tickstock …``: diagnostics from the command line (a ``flask.commands`` entry point)."""

from __future__ import annotations

import fnmatch
import json
import queue
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
from flask.cli import with_appcontext

from . import events
from .cli_errorlog import errorlog_commands
from .clicommon import current_state
from .exporter import metrics_command
from .state import MonitorState
from .transport import Subscription, clients


@click.group("tickstock")
def tickstock() -> None:
    """TickStock monitoring: Redis health, channels, counters."""


for _command in (*errorlog_commands, metrics_command):
    tickstock.add_command(_command)


@tickstock.command("stats")
@with_appcontext
def stats_command() -> None:
    """Print this process's publish and drop counters as JSON."""
    click.echo(json.dumps(current_state().stats(), indent=2, sort_keys=True, default=str))


# --- health and diagnostics ------------------------------------------------------------------

#: channels TickStockAppV2 removed (Sprint 54); anything still on them is a leftover
REMOVED_CHANNELS = (
    "tickstock:market:ticks",
    "tickstock.events.patterns",
    "tickstock.events.indicators",
)
REMOVED_PATTERN = "tickstock.jobs.*"


def _redis() -> Any:
    return current_state().client()


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _ping_ms(client: Any) -> float:
    started = time.perf_counter()
    clients.ping(client)
    return (time.perf_counter() - started) * 1000


@tickstock.command("health")
@with_appcontext
def health_command() -> None:
    """Ping Redis, list tickstock* channels with subscribers, publish a test message.

    Exits non-zero when Redis cannot be reached or the test publish fails.
    """
    state = current_state()
    client = _redis()
    click.echo(f"Redis: {_safe_url(state.config.redis_url)}")
    try:
        latency = _ping_ms(client)
    except Exception as exc:
        click.echo(f"FAILED  Redis connection failed: {exc}")
        raise click.exceptions.Exit(1) from None
    click.echo(f"OK      Redis connection ({latency:.2f} ms)")
    counts = clients.channel_counts(client, "tickstock*")
    click.echo(f"        Active channels: {len(counts)}")
    for name, subscribers in counts.items():
        click.echo(f"          - {name}: {subscribers} subscribers")
    try:
        message = json.dumps({"type": "test", "timestamp": time.time()})
        reached = clients.publish_one(client, state.config.channel_monitoring, message)
    except Exception as exc:
        click.echo(f"FAILED  Test publish failed: {exc}")
        raise click.exceptions.Exit(1) from None
    click.echo(
        f"OK      Test message published to {state.config.channel_monitoring}"
        f" ({reached} subscribers)"
    )


@tickstock.command("channels")
@with_appcontext
def channels_command() -> None:
    """List tickstock* channels and this app's channels with their subscriber counts."""
    state = current_state()
    client = _redis()
    try:
        counts = clients.channel_counts(client, "tickstock*")
        config = state.config
        ours = [config.channel_errors, config.channel_monitoring, config.channel_invalidation]
        counts.update(clients.subscriber_counts(client, ours))
    except Exception as exc:
        click.echo(f"FAILED  Redis connection failed: {exc}")
        raise click.exceptions.Exit(1) from None
    for name in sorted(counts):
        click.echo(f"{name}\t{counts[name]}")


@tickstock.command("listen")
@click.option("--channel", "channels", multiple=True, help="Channel (repeat); default: all three.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many messages.")
@click.option("--timeout", type=click.FloatRange(min=0), help="Stop after this many seconds.")
@with_appcontext
def listen_command(
    channels: tuple[str, ...], as_json: bool, count: int | None, timeout: float | None
) -> None:
    """Print what arrives on the monitoring channels (a debug subscriber).

    Exits non-zero when --count messages did not arrive within --timeout.
    """
    config = current_state().config
    names = list(channels) or [
        config.channel_errors,
        config.channel_monitoring,
        config.channel_invalidation,
    ]
    if not as_json:
        click.echo(f"Listening on {', '.join(names)}", err=True)
    heard = 0
    for channel, data in _stream(names, timeout, count):
        heard += 1
        try:
            message: Any = events.parse(data, 1_048_576)
        except events.InvalidMessage as exc:
            message = {"_invalid": exc.reason, "_raw": clients.as_text(data)[:1000]}
        if as_json:
            click.echo(json.dumps({"channel": channel, "message": message}, sort_keys=True))
        else:
            stamp = time.strftime("%H:%M:%S")
            click.echo(f"[{stamp}] {channel}\n{json.dumps(message, indent=2, sort_keys=True)}")
    if count is not None and heard < count:
        raise click.exceptions.Exit(1)


def _stream(
    channels: list[str], timeout: float | None, count: int | None = None
) -> Iterator[tuple[str, Any]]:
    """Yield messages as they arrive until ``count`` or ``timeout`` (or Ctrl-C)."""
    received: queue.Queue[tuple[str, Any]] = queue.Queue()
    client = _redis()
    subscription = Subscription(
        lambda: client,
        channels,
        lambda ch, data: received.put((ch, data)),
        name="tickstock-cli-listen",
    ).start()
    deadline = None if timeout is None else time.monotonic() + timeout
    heard = 0
    try:
        while count is None or heard < count:
            left = 0.1 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return
            try:
                item = received.get(timeout=min(left, 0.1))
            except queue.Empty:
                continue
            heard += 1
            yield item
    except KeyboardInterrupt:
        return
    finally:
        subscription.stop()


@tickstock.command("publish-test")
@click.option("--channel", help="Default: the monitoring channel.")
@with_appcontext
def publish_test_command(channel: str | None) -> None:
    """Publish one test message and say how many subscribers received it."""
    state = current_state()
    channel = channel or state.config.channel_monitoring
    message = {"type": "test", "timestamp": time.time(), "instance": state.instance_id}
    try:
        reached = clients.publish_one(_redis(), channel, json.dumps(message))
    except Exception as exc:
        click.echo(f"FAILED  Test publish to {channel} failed: {exc}")
        raise click.exceptions.Exit(1) from None
    click.echo(f"OK      Test message published to {channel} ({reached} subscribers)")


@tickstock.command("doctor")
@click.option(
    "--sample-seconds",
    type=click.FloatRange(min=0),
    default=3.0,
    show_default=True,
    help="How long to listen to live messages.",
)
@with_appcontext
def doctor_command(sample_seconds: float) -> None:
    """Check connectivity, channel use, live messages and this app's own counters.

    Exits non-zero when anything is wrong.
    """
    state = current_state()
    config = state.config
    client = _redis()
    problems: list[str] = []

    def report(ok: bool, text: str) -> None:
        click.echo(f"{'OK' if ok else 'PROBLEM':<8}{text}")
        if not ok:
            problems.append(text)

    click.echo(f"Redis: {_safe_url(config.redis_url)}")
    try:
        latencies = sorted(_ping_ms(client) for _ in range(5))
    except Exception as exc:
        report(False, f"Redis connection failed: {exc}")
        raise click.exceptions.Exit(1) from None
    report(
        True,
        f"Redis connection (ping min {latencies[0]:.2f} / median {latencies[2]:.2f}"
        f" / max {latencies[-1]:.2f} ms)",
    )

    ours = [config.channel_errors, config.channel_monitoring, config.channel_invalidation]
    counts = clients.channel_counts(client, "*")
    for name, subscribers in sorted(counts.items()):
        if name in REMOVED_CHANNELS or fnmatch.fnmatchcase(name, REMOVED_PATTERN):
            report(False, f"removed channel {name} still has {subscribers} subscribers")
    for name, subscribers in clients.subscriber_counts(client, ours).items():
        click.echo(f"        {name}: {subscribers} subscribers")

    click.echo(f"Sampling live messages for {sample_seconds:g}s …")
    heard: dict[str, int] = {}
    invalid: dict[str, int] = {}
    for channel, data in _stream([*ours, *REMOVED_CHANNELS], sample_seconds):
        if channel in REMOVED_CHANNELS:
            report(False, f"a message was published on the removed channel {channel}")
            continue
        heard[channel] = heard.get(channel, 0) + 1
        reason = _validate(channel, data, state)
        if reason is not None:
            key = f"{channel}: {reason}"
            invalid[key] = invalid.get(key, 0) + 1
    for channel in ours:
        click.echo(f"        {channel}: {heard.get(channel, 0)} messages")
    for key, number in sorted(invalid.items()):
        report(False, f"{number} invalid message(s) on {key}")
    if not invalid:
        report(True, "every sampled message keeps its contract")

    stats = state.stats()
    failed = stats["dropped"].get("publish_failed", 0) + stats["dropped"].get("queue_full", 0)
    dropped = ", ".join(f"{k}={v}" for k, v in sorted(stats["dropped"].items())) or "none"
    report(
        failed == 0,
        f"this app published {stats['published']}, dropped {dropped}, queued {stats['queued']}",
    )
    if problems:
        click.echo(f"{len(problems)} problem(s) found")
        raise click.exceptions.Exit(1)
    click.echo("No problems found")


def _validate(channel: str, data: Any, state: MonitorState) -> str | None:
    """``None`` if the message keeps its channel's contract, else the reason it does not."""
    config = state.config
    validators: dict[str, Callable[[Any], Any]] = {
        config.channel_errors: events.validate_error,
        config.channel_monitoring: events.validate_health,
        config.channel_invalidation: events.validate_invalidation,
    }
    try:
        message = events.parse(data, 1_048_576)
        if channel == config.channel_monitoring and not events.is_health_message(message):
            return None  # other monitoring events and test messages have no contract here
        if channel in validators:
            validators[channel](message)
    except events.InvalidMessage as exc:
        return str(exc)
    return None
