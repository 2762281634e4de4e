"""Databases for the error log tests: a throwaway PostgreSQL cluster of the suite's own, a
database in it for each test, and a TCP proxy the test can close and reopen to take a database
away and give it back.

The cluster (:class:`PostgresCluster`) is made with ``initdb`` in a temporary directory, listens
on a free loopback port and a unix socket in that directory, trusts its own users only, and is
removed at the end of the session: nothing on the machine is configured or started for it.
``TICKSTOCK_TEST_POSTGRES_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``, a user
that may create databases) points the tests at an existing server instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from servers import free_port
from sqlalchemy import create_engine
from sqlalchemy import select as sa_select
from sqlalchemy.engine import URL, make_url

POSTGRES_URL_ENV = "TICKSTOCK_TEST_POSTGRES_URL"


def postgres_bindir() -> str | None:
    """Where ``initdb`` and ``postgres`` are: on PATH, else Debian's newest
    /usr/lib/postgresql/<version>/bin; None when PostgreSQL's server is not installed."""
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(initdb)
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.split("/")[-3]))

    return os.path.dirname(max(found, key=version)) if found else None


def _unprivileged_user() -> pwd.struct_passwd | None:
    """Who runs the cluster when we are root (PostgreSQL refuses to): the ``postgres`` system
    user the Debian package makes, else ``nobody``. None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists")


def remove_abandoned_clusters() -> None:
    """Stop and remove the clusters of test processes that were killed before they could do it
    themselves (each cluster's directory names its owner's pid)."""
    for directory in glob.glob(os.path.join(tempfile.gettempdir(), "tsm-postgres-*")):
        try:
            with open(os.path.join(directory, "owner")) as f:
                os.kill(int(f.read()), 0)
            continue  # its test process is still running
        except ProcessLookupError:
            pass
        except (OSError, ValueError):  # being made, or not ours
            continue
        try:
            with open(os.path.join(directory, "data", "postmaster.pid")) as f:
                os.kill(int(f.readline()), signal.SIGQUIT)  # immediate shutdown
        except (OSError, ValueError):
            pass  # no server left
        shutil.rmtree(directory, ignore_errors=True)


class PostgresCluster:
    """A PostgreSQL cluster of our own in a temporary directory, on a free loopback port, with
    trust authentication for its superuser ``postgres`` (local and 127.0.0.1 connections only)."""

    def __init__(self, bindir: str):
        self.bindir = bindir
        self.user = _unprivileged_user()
        self.dir = tempfile.mkdtemp(prefix="tsm-postgres-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        with open(os.path.join(self.dir, "owner"), "w") as f:
            f.write(str(os.getpid()))
        if self.user is not None:  # the server's user owns the directory, its socket and data
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> URL:
        return URL.create(
            "postgresql+psycopg", "postgres", None, "127.0.0.1", self.port, "postgres"
        )

    def _run_as(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 30.0) -> PostgresCluster:
        initdb = [
            os.path.join(self.bindir, "initdb"),
            *("-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"),
            "--no-sync",
        ]
        done = subprocess.run(initdb, capture_output=True, cwd=self.dir, **self._run_as())
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.decode()}")
        for _ in range(3):  # another process may take the free port first
            self.port = free_port()
            if self._start_server(timeout):
                return self
        raise RuntimeError(f"postgres did not start; its log:\n{self._read_log()}")

    def _start_server(self, timeout: float) -> bool:
        command = [
            os.path.join(self.bindir, "postgres"),
            *("-D", self.data, "-p", str(self.port), "-k", self.dir),
            *("-c", "listen_addresses=127.0.0.1"),
            # a test database needs no durability: faster, and no fsync storms on a shared disk
            *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=log,
                cwd=self.dir,
                start_new_session=True,  # a Ctrl-C in the terminal is the suite's, not the server's
                **self._run_as(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            if self._accepts_connections():
                return True
            time.sleep(0.05)
        log = self._read_log()
        self.stop()
        raise RuntimeError(f"postgres did not accept connections in {timeout} s:\n{log}")

    def _accepts_connections(self) -> bool:
        import psycopg

        try:
            psycopg.connect(
                host="127.0.0.1",
                port=self.port,
                user="postgres",
                dbname="postgres",
                connect_timeout=1,
            ).close()
        except psycopg.OperationalError:
            return False
        return True

    def _read_log(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients disconnected, no waiting for them), then remove it all."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_server() -> Iterator[URL]:
    """The URL of a server the tests may create databases on, as its superuser: the one
    ``TICKSTOCK_TEST_POSTGRES_URL`` names, else a cluster of our own for the session.

    Skipped when PostgreSQL's server is not installed, except in CI, where that is a failure."""
    existing = os.environ.get(POSTGRES_URL_ENV)
    if existing:
        yield make_url(existing).set(drivername="postgresql+psycopg")
        return
    bindir = postgres_bindir()
    if bindir is None:
        message = "PostgreSQL's server (initdb) is not installed: apt-get install postgresql"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (required in CI)")
        pytest.skip(message)
    remove_abandoned_clusters()
    cluster = PostgresCluster(bindir).start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


def postgres_database(server: URL) -> Iterator[str]:
    """Create a database on ``server``, yield its URL (password included), drop it after."""
    import psycopg

    admin = psycopg.connect(
        host=server.host,
        port=server.port or 5432,
        user=server.username,
        password=server.password,
        dbname=server.database or "postgres",
        connect_timeout=3,
        autocommit=True,
    )
    name = f"tsm_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def read_rows(url: str) -> list[dict[str, Any]]:
    """Every row of error_logs, oldest first, read with an engine of our own (none: no table)."""
    from flask_tickstock_monitor.errordb import error_logs

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if not engine.dialect.has_table(conn, "error_logs"):
                return []
            rows = conn.execute(sa_select(error_logs).order_by(error_logs.c.id))
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


class TcpProxy:
    """Forwards a loopback port to ``target``; ``close()`` refuses and cuts every connection,
    ``open()`` serves again on the same port."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:  # wakes the accept() of the other thread; close() alone would not
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=3)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            a.close()
            b.close()
