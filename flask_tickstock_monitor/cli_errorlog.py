"""``flask tickstock init-db | errors | prune``: the durable error log from the command line.
SQLAlchemy is imported only by these commands, when they run."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import click
from flask.cli import with_appcontext

from .clicommon import current_state

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class Duration(click.ParamType):
    """``30s``, ``5m``, ``2h``, ``30d`` or ``1w`` as a ``timedelta``."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> timedelta:
        if isinstance(value, timedelta):
            return value
        text = str(value).strip().lower()
        number, unit = text[:-1], text[-1:]
        try:
            amount = float(number) if unit in _DURATION_UNITS else -1.0
        except ValueError:
            amount = -1.0
        if not amount > 0 or amount == float("inf"):
            self.fail(
                f"{value!r} is not a duration: use a positive number followed by s, m, h, d or w"
                " (e.g. 30s, 5m, 2h, 30d)",
                param,
                ctx,
            )
        return timedelta(seconds=amount * _DURATION_UNITS[unit])


def current_errorlog() -> Any:
    errorlog = current_state().errorlog
    if errorlog is None:
        raise click.ClickException(
            "The durable error log is not configured: set TICKSTOCK_MONITOR_DATABASE_URI."
        )
    return errorlog


def _database_failed(errorlog: Any, exc: Exception) -> click.ClickException:
    where = errorlog.config.url.render_as_string(hide_password=True)
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return click.ClickException(f"The error log database {where} failed: {first_line}")


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create the error_logs table (and its indexes) when it is missing."""
    from .errordb import create_table

    errorlog = current_errorlog()
    where = errorlog.config.url.render_as_string(hide_password=True)
    try:
        created = create_table(errorlog.engine)
    except Exception as exc:
        raise _database_failed(errorlog, exc) from None
    click.echo(f"{'Created' if created else 'Found'} table error_logs in {where}.")


@click.command("errors")
@click.option("--since", type=Duration(), default=None, help="Only errors logged this recently.")
@click.option(
    "--severity",
    type=click.Choice(["warning", "error", "critical"]),
    default="warning",
    show_default=True,
    help="This severity and above.",
)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@with_appcontext
def errors_command(since: timedelta | None, severity: str, limit: int, as_json: bool) -> None:
    """Print the newest errors in the error log (newest first)."""
    from .errordb import recent_errors

    errorlog = current_errorlog()
    try:
        rows = recent_errors(errorlog.engine, since=since, min_severity=severity, limit=limit)
    except Exception as exc:
        raise _database_failed(errorlog, exc) from None
    for row in rows:
        created_at = row["created_at"].isoformat() if row["created_at"] else None
        if as_json:
            click.echo(json.dumps({**row, "created_at": created_at}, sort_keys=True, default=str))
            continue
        context = json.dumps(row["error_context"], sort_keys=True) if row["error_context"] else ""
        click.echo(
            f"{created_at}  {row['severity']:<8}  {row['component'] or '-'}: {row['message']}"
            + (f"  {context}" if context else "")
        )
    if not rows and not as_json:
        click.echo("No errors found.")


@click.command("prune")
@click.option("--older-than", type=Duration(), required=True, help="e.g. 30d")
@with_appcontext
def prune_command(older_than: timedelta) -> None:
    """Delete errors logged longer ago than --older-than."""
    from .errordb import prune

    errorlog = current_errorlog()
    try:
        deleted = prune(errorlog.engine, older_than)
    except Exception as exc:
        raise _database_failed(errorlog, exc) from None
    click.echo(f"Deleted {deleted} error{'s' if deleted != 1 else ''} from error_logs.")


# --- error groups (errorgroups.py) ---------------------------------------------------------------


@click.command("groups")
@click.option("--since", type=Duration(), default=None, help="Only groups seen this recently.")
@click.option(
    "--status", type=click.Choice(["open", "resolved", "ignored"]), default=None, help="Only these."
)
@click.option("--sort", type=click.Choice(["last_seen", "count"]), default="last_seen")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@with_appcontext
def groups_command(
    since: timedelta | None, status: str | None, sort: str, limit: int, as_json: bool
) -> None:
    """Print the error groups in the error log: one line per distinct error, with its count."""
    errorlog = current_errorlog()
    try:
        groups = errorlog.groups(since=since, status=status, sort=sort, limit=limit)
    except Exception as exc:
        raise _database_failed(errorlog, exc) from None
    for group in groups:
        if as_json:
            click.echo(json.dumps(group, sort_keys=True, default=str))
            continue
        marks = "".join(f" [{mark}]" for mark in ("new", "regression") if group.get(mark)) + (
            "" if group["status"] == "open" else f" [{group['status']}]"
        )
        last = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(group["last_seen"]))
        click.echo(
            f"{group['fingerprint']}  {group['count']:>7}x  last {last}Z"
            f"  {group['message'][:120]}{marks}"
        )
    if not groups and not as_json:
        click.echo("No error groups found.")


def _status_command(name: str, status: str, done: str) -> click.Command:
    @click.command(name, help=f"Mark an error group {done} (by its fingerprint).")
    @click.argument("fingerprint")
    @with_appcontext
    def command(fingerprint: str) -> None:
        errorlog = current_errorlog()
        try:
            found = errorlog.set_group_status(fingerprint.strip().lower(), status)
        except Exception as exc:
            raise _database_failed(errorlog, exc) from None
        if not found:
            raise click.ClickException(f"No error group {fingerprint!r} in the error log.")
        click.echo(f"Error group {fingerprint} is {done}.")

    return command


errorlog_commands = (
    init_db_command,
    errors_command,
    prune_command,
    groups_command,
    _status_command("resolve", "resolved", "resolved"),
    _status_command("ignore", "ignored", "ignored"),
    _status_command("reopen", "open", "open again"),
)
