"""``flask tickstock …``: diagnostics from the command line (a ``flask.commands`` entry point)."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext

from .extension import EXTENSION_KEY, MonitorState


def current_state() -> MonitorState:
    state = current_app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise click.ClickException(
            "TickStockMonitor is not registered on this app. Did you forget to call 'init_app'?"
        )
    return state  # type: ignore[no-any-return]


@click.group("tickstock")
def tickstock() -> None:
    """TickStock monitoring: Redis health, channels, counters."""


@tickstock.command("stats")
@with_appcontext
def stats_command() -> None:
    """Print this process's publish and drop counters as JSON."""
    click.echo(json.dumps(current_state().stats(), indent=2, sort_keys=True, default=str))
