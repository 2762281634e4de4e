"""What every ``flask tickstock`` command needs: the monitor's state of the app it loaded."""

from __future__ import annotations

import click
from flask import current_app

from .state import MonitorState, registered_state


def current_state() -> MonitorState:
    """The monitor's state of the app the command loaded."""
    try:
        return registered_state(current_app._get_current_object())  # type: ignore[attr-defined]
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
