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
from flask import current_app, request
from flask.cli import with_appcontext

from .config import PREFIX, ConfigurationError, as_bool, as_number, as_str
from .dashboard import AuthCheck, as_auth, as_prefix
from .extension import EXTENSION_KEY, Plane
from .liveness import DEFAULT_OFFLINE_TTL

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from .cluster_metrics import ClusterCollector
    from .extension import MonitorState

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

    def __init__(self, state: MonitorState):
        read = state.reader.get
        self.state = state
        self.endpoint: str | None = read("METRICS_ENDPOINT", None, as_prefix)
        self.auth: AuthCheck | None = read("METRICS_AUTH", None, as_auth)
        self.token: str | None = read("METRICS_TOKEN", None, as_str)
        self.dashboard_auth: AuthCheck | None = read("DASHBOARD_AUTH", None, as_auth)
        self.process: bool = read("METRICS_PROCESS", True, as_bool)
        self.cluster: bool = read("METRICS_CLUSTER", True, as_bool)
        self.offline_ttl: float = read("OFFLINE_TTL", DEFAULT_OFFLINE_TTL, _seconds)
        self.max_groups: int = read(
            "METRICS_MAX_GROUPS", 500, lambda k, v: as_number(k, v, int, minimum=0)
        )
        self.groups: Groups | None = None  # None: the dashboard's or error log's, if any
        self.served = 0
        self.refused = 0
        self._registry: CollectorRegistry | None = None
        self._view: Callable[[], Any] | None = None
        if self.endpoint is not None:
            if _prometheus_client_missing():
                raise ConfigurationError(
                    f"{PREFIX}METRICS_ENDPOINT needs prometheus_client:"
                    " pip install 'flask-tickstock-monitor[prometheus]'"
                )
            if self.endpoint == "/":
                raise ConfigurationError(f"{PREFIX}METRICS_ENDPOINT must not be '/'")
            state.app.add_url_rule(
                self.endpoint, endpoint="tickstock_monitor_metrics", view_func=self.view
            )

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
            check = self.dashboard_auth or self.state.monitor.dashboard_auth_check
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


def install(state: MonitorState) -> MetricsPlane:
    """Read the ``METRICS_*`` keys and register the endpoint when one is set (``init_app``)."""
    plane = MetricsPlane(state)
    state.planes["metrics"] = plane
    return plane


def find_groups(state: MonitorState) -> Sequence[Mapping[str, Any]]:
    """The error groups of the dashboard's subscriber, else of the durable error log, else
    none: whichever plane of this app offers ``groups()``."""
    for name in ("dashboard", "errorlog"):
        plane = state.planes.get(name)
        source = getattr(getattr(plane, "subscriber", plane), "groups", None)
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
        health = state.planes.get("health")
        collectors.append(
            ProcessCollector(state.stats, lambda: getattr(health, "latest", None) or None)
        )
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


def _seconds(key: str, value: Any) -> float:
    return float(as_number(key, value, float, minimum=0))


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

    state = current_app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise click.ClickException(
            "TickStockMonitor is not registered on this app. Did you forget to call 'init_app'?"
        )
    plane = state.planes.get("metrics")
    offline_ttl = getattr(plane, "offline_ttl", DEFAULT_OFFLINE_TTL)
    max_groups = getattr(plane, "max_groups", 500)
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
