"""Which Redis a URL names: one server, a Sentinel-watched master, a Cluster, or the embedded one.

URLs (besides redis-py's ``redis://``, ``rediss://``, ``unix://``)::

    redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]
    redis+cluster://[[user]:password@]host:port[,host:port...]
    memory://NAME          (an embedded in-process server, the 'embedded' extra)

``?sharded_pubsub=true`` on any of them publishes with ``SPUBLISH`` and subscribes with
``SSUBSCRIBE`` (Redis 7). ``?sentinel_password=…`` authenticates to the sentinels themselves.
Problems are ``ValueError``; the configuration turns them into errors naming its keys.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
MEMORY_SCHEME = "memory"
TOPOLOGY_SCHEMES = (SENTINEL_SCHEME, CLUSTER_SCHEME)
#: Every scheme a client can be made for.
SCHEMES = ("redis", "rediss", "unix", MEMORY_SCHEME, *TOPOLOGY_SCHEMES)
SENTINEL_PORT = 26379
REDIS_PORT = 6379
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Topology:
    kind: str  # "single" | "sentinel" | "cluster"
    sharded: bool = False
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def parse_url(url: str) -> Topology:
    """The topology ``url`` names; ``ValueError`` says what is wrong with it."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    sharded = query.pop("sharded_pubsub", "false").lower() in _TRUE
    if parts.scheme not in TOPOLOGY_SCHEMES:
        return Topology("single", sharded)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))} in {parts.scheme} URL")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    default_port = SENTINEL_PORT if parts.scheme == SENTINEL_SCHEME else REDIS_PORT
    hosts = tuple(_host_port(item, default_port) for item in hostlist.split(",") if item)
    if not hosts:
        raise ValueError(f"no host:port in {parts.scheme} URL")
    topology = Topology(
        "sentinel" if parts.scheme == SENTINEL_SCHEME else "cluster",
        sharded,
        hosts,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=query.get("sentinel_password"),
    )
    path = [p for p in parts.path.split("/") if p]
    if topology.kind == "cluster":
        if path:
            raise ValueError("a cluster has no databases: drop the path from the URL")
        return topology
    if not path or len(path) > 2:
        raise ValueError("a sentinel URL ends in /service_name or /service_name/db")
    db = path[1] if len(path) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"database {db!r} in a sentinel URL is not a number")
    return replace(topology, service=unquote(path[0]), db=int(db))


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    if not sep:
        return item, default_port
    if not port.isdigit():
        raise ValueError(f"port {port!r} of {item!r} is not a number")
    return host.strip("[]"), int(port)


def check_url(url: str) -> None:
    """Raise ``ValueError`` when no client can be made for ``url``."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ValueError(
            f"unsupported scheme {scheme!r} in {url!r}; use one of {', '.join(SCHEMES)}"
        )
    if scheme == MEMORY_SCHEME:
        try:
            import fakeredis  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the install
            raise ValueError(
                "memory:// needs the 'embedded' extra (pip install fakeredis)"
            ) from None
        if parse_url(url).sharded:
            raise ValueError("the embedded memory:// server has no sharded pub/sub")
    else:
        parse_url(url)


def without_topology_options(url: str) -> str:
    """``url`` without the options redis-py does not know (for ``Redis.from_url``)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "sharded_pubsub"]
    return urlunsplit(parts._replace(query=urlencode(query)))


def sentinel_url(url: str, sentinels: tuple[str, ...], service: str) -> str:
    """The ``redis+sentinel://`` URL for ``sentinels`` watching ``service``, keeping the
    credentials and database of a plain ``redis://`` ``url``; ``ValueError`` if it is bad."""
    single = urlsplit(url)
    auth = single.netloc.rpartition("@")[0] if single.scheme in ("redis", "rediss") else ""
    db = single.path.strip("/") if single.scheme in ("redis", "rediss") else ""
    made = (
        f"{SENTINEL_SCHEME}://{auth + '@' if auth else ''}{','.join(sentinels)}"
        f"/{service}{'/' + db if db.isdigit() else ''}"
    )
    parse_url(made)
    return made


def with_sharded_pubsub(url: str) -> str:
    """``url`` publishing and subscribing with sharded pub/sub; ``ValueError`` where there is
    none (the embedded server)."""
    if parse_url(url).sharded:
        return url
    if urlsplit(url).scheme == MEMORY_SCHEME:
        raise ValueError("the embedded memory:// server has no sharded pub/sub")
    return url + ("&" if urlsplit(url).query else "?") + "sharded_pubsub=true"
