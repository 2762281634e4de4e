"""The metrics endpoint (``TICKSTOCK_MONITOR_METRICS_ENDPOINT``) and ``flask tickstock metrics``.

:func:`install` reads and validates the ``METRICS_*`` keys in ``init_app`` and registers the
endpoint; :func:`build_registry` puts together what a scrape sees (this process's counters and
the cluster view from Redis); :data:`metrics_command` prints the cluster view for a sidecar.
prometheus_client (the ``prometheus`` extra) is imported only when metrics are asked for.
"""

from __future__ import annotations

import hmac
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click
from flask import request
from flask.cli import with_appcontext

from .clicommon import current_state
from .config import MetricsConfig
from .constants import PREFIX
from .convert import ConfigurationError
from .staleness import DEFAULT_OFFLINE_TTL
from .state import Plane

if TYPE_CHECKING:
    from flask import Flask
    from prometheus_client.registry import CollectorRegistry

    from .cluster_metrics import ClusterCollector
    from .state import MonitorState

Groups = Callable[[], Sequence[Mapping[str, Any]]]


def _prometheus_client_missing() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return True
    return False


class MetricsPlane(Plane):
    """Serves the metrics of one app at its endpoint; counts the scrapes it served and refused.

    A request is let in when it carries ``Authorization: Bearer <METRICS_TOKEN>`` or when
    ``METRICS_AUTH`` says yes; with neither configured, the dashboard's check decides
    (``DASHBOARD_AUTH`` or ``monitor.dashboard_auth``); with no check at all, everyone.
    """

    def __init__(self, state: MonitorState, config: MetricsConfig):
        self.state = state
        self.endpoint = config.endpoint
        self.auth = config.auth
        self.token = config.token
        self.process = config.process
        self.cluster = config.cluster
        self.offline_ttl = config.offline_ttl
        self.max_groups = config.max_groups
        self.groups: Groups | None = None  # None: the dashboard's or error log's, if any
        self.served = 0
        self.refused = 0
        self._registry: CollectorRegistry | None = None
        self._view: Callable[[], Any] | None = None
        if self.endpoint is not None and _prometheus_client_missing():
            raise ConfigurationError(
                f"{PREFIX}METRICS_ENDPOINT needs prometheus_client:"
                " pip install 'flask-tickstock-monitor[prometheus]'"
            )

    def install(self, app: Flask) -> None:
        """Serve the metrics at the configured endpoint."""
        assert self.endpoint is not None
        app.add_url_rule(self.endpoint, endpoint="tickstock_monitor_metrics", view_func=self.view)

    def registry(self) -> CollectorRegistry:
        """What the endpoint serves, made on the first scrape."""
        if self._registry is None:
            self._registry = build_registry(
                self.state,
                process=self.process,
                cluster=self.cluster,
                groups=self.groups or (lambda: find_groups(self.state)),
                offline_ttl=self.offline_ttl,
                max_groups=self.max_groups,
            )
        return self._registry

    def authorized(self) -> bool:
        if self.token is None and self.auth is None:
            check = self.state.auth_check()
            return True if check is None else bool(check())
        if self.token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), self.token.encode()
            ):
                return True
        return self.auth is not None and bool(self.auth())

    def view(self) -> Any:
        if self._view is None:
            from .metrics import metrics_view

            self._view = metrics_view(self.registry(), self._let_in)
        return self._view()

    def _let_in(self) -> bool:
        allowed = self.authorized()
        if allowed:
            self.served += 1
        else:
            self.refused += 1
        return allowed

    def stats(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "served": self.served, "refused": self.refused}


def find_groups(state: MonitorState) -> Sequence[Mapping[str, Any]]:
    """The error groups of the dashboard's subscriber, else of the durable error log, else
    none: whichever plane of this app offers ``groups()``."""
    dashboard = state.dashboard
    for source in (getattr(dashboard and dashboard.subscriber, "groups", None),
                   getattr(state.errorlog, "groups", None)):  # fmt: skip
        if callable(source):
            return list(source())
    return []


def build_registry(
    state: MonitorState,
    *,
    process: bool = True,
    cluster: bool = True,
    groups: Groups | None = None,
    offline_ttl: float = DEFAULT_OFFLINE_TTL,
    max_groups: int = 500,
) -> CollectorRegistry:
    """A registry of this app's collectors: this process's counters, the cluster view."""
    from .metrics import ProcessCollector, new_registry

    collectors: list[Any] = []
    if process:
        health = state.health
        collectors.append(ProcessCollector(state.stats, lambda: health.latest if health else None))
    if cluster:
        collectors.append(cluster_collector(state, groups, offline_ttl, max_groups))
    return new_registry(*collectors)


def cluster_collector(
    state: MonitorState, groups: Groups | None, offline_ttl: float, max_groups: int
) -> ClusterCollector:
    from .cluster_metrics import ClusterCollector

    config = state.config
    return ClusterCollector(
        state.client,
        config.channel_monitoring,
        groups=groups,
        offline_ttl=offline_ttl,
        default_interval=config.health_interval,
        max_groups=max_groups,
    )


@click.command("metrics")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="Write to FILE (atomically: node_exporter's textfile collector) instead of stdout.",
)
@click.option(
    "--process/--no-process",
    default=False,
    help="Add this command's own counters (off: a CLI process publishes nothing).",
)
@with_appcontext
def metrics_command(output: str | None, process: bool) -> None:
    """Print every instance's latest beat and the error groups in the Prometheus text format.

    Reads what the metrics endpoint's cluster view reads, for a scrape through a sidecar. Exits
    with status 1 (after printing) when Redis could not be read.
    """
    if _prometheus_client_missing():
        raise click.ClickException(
            "this command needs prometheus_client:"
            " pip install 'flask-tickstock-monitor[prometheus]'"
        )
    from .metrics import ProcessCollector, new_registry, render

    state = current_state()
    config = state.config.metrics
    offline_ttl = config.offline_ttl if config else DEFAULT_OFFLINE_TTL
    max_groups = config.max_groups if config else 500
    collector = cluster_collector(state, lambda: find_groups(state), offline_ttl, max_groups)
    registry = new_registry(*([ProcessCollector(state.stats)] if process else []), collector)
    body, _ = render(registry)
    if output is None:
        click.echo(body.decode(), nl=False)
    else:
        _write_atomically(output, body)
    if not collector.readable:
        raise click.ClickException("the latest beats could not be read from Redis")


def _write_atomically(path: str, body: bytes) -> None:
    """Write through a temporary file in the same directory, so a reader never sees half."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tickstock-metrics-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
