"""Databases for the error log tests: a PostgreSQL database of the test's own, and a TCP proxy
the test can close and reopen to take a database away and give it back."""

from __future__ import annotations

import os
import select
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from servers import free_port
from sqlalchemy import create_engine
from sqlalchemy import select as sa_select

PG_HOST, PG_PORT = "127.0.0.1", 5432


def postgres_database() -> Iterator[str]:
    """Create a database on 127.0.0.1:5432 (user postgres, trust auth), yield its URL, drop it.

    Skips when PostgreSQL cannot be reached, except in CI, where that is a failure."""
    import psycopg

    try:
        admin = psycopg.connect(
            host=PG_HOST,
            port=PG_PORT,
            user="postgres",
            dbname="postgres",
            connect_timeout=3,
            autocommit=True,
        )
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL on {PG_HOST}:{PG_PORT} is required in CI: {exc}")
        pytest.skip(f"PostgreSQL on {PG_HOST}:{PG_PORT} is not reachable: {exc}")
    name = f"tsm_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
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
