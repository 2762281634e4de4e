"""gunicorn with preloaded sync workers serving a WSGI module a test writes, on a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from servers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def gunicorn(source: str, redis_url: str, tmp_path: Path, workers: int) -> Iterator[Any]:
    """Serve ``source`` (a module defining ``app``; ``TEST_REDIS_URL`` in its environment) with
    ``workers`` workers; the process has ``port`` and ``log`` (its error log's path)."""
    (tmp_path / "wsgiapp.py").write_text(source)
    port = free_port()
    env = {
        **os.environ,
        "TEST_REDIS_URL": redis_url,
        "PYTHONPATH": os.pathsep.join([ROOT, str(tmp_path)]),
    }
    log = tmp_path / "gunicorn.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", str(workers), "--preload",
         "-b", f"127.0.0.1:{port}", "--graceful-timeout", "2", "--log-level", "warning",
         "--error-logfile", str(log), "wsgiapp:app"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    proc.log = log  # type: ignore[attr-defined]
    proc.port = port  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
