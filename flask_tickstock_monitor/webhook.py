"""``WebhookNotifier``: POSTs each alert as JSON to a URL (Slack-compatible) from a thread.

The caller only appends to a bounded queue, so an alert never waits on the network; the thread
sends with a timeout, retries a failed delivery with a jittered exponential backoff (a
``Retry-After`` is honoured, up to the cap), and counts what was delivered, failed and dropped.
Only the standard library is used (``urllib.request``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from .alerts import Alert

log = logging.getLogger("flask_tickstock_monitor.alerts")

#: what a delivery may be retried after: a timeout, too many requests, a server's error
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_COLORS = {"info": "#2eb67d", "warning": "#ecb22e", "critical": "#e01e5a"}


def slack_payload(alert: Alert) -> dict[str, Any]:
    """``text`` for Slack (and Mattermost, Rocket.Chat, Teams' Slack-compatible hooks), an
    attachment with the details as fields, and the whole alert under ``alert``."""
    fields = [
        {"title": key, "value": str(value), "short": len(str(value)) <= 40}
        for key, value in alert.details.items()
        if value is not None and not isinstance(value, (dict, list)) and key != "message"
    ]
    return {
        "text": alert.text,
        "attachments": [
            {
                "fallback": alert.text,
                "color": _COLORS.get(alert.severity, "#888888"),
                "title": alert.title,
                "fields": fields,
                "ts": int(alert.timestamp),
            }
        ],
        "alert": alert.to_dict(),
    }


class WebhookNotifier:
    """Deliver alerts to ``url`` in the background; use it as ``on_alert`` (it is callable).

    :param retries: further tries after a failed one (a 4xx other than 408/425/429 is final).
    :param backoff: seconds before the first retry; doubled each time, up to ``backoff_cap``.
    :param payload: turns an :class:`~.alerts.Alert` into the JSON body (default: Slack's).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        queue_size: int = 100,
        retries: int = 3,
        backoff: float = 1.0,
        backoff_cap: float = 60.0,
        headers: Mapping[str, str] | None = None,
        payload: Callable[[Alert], Mapping[str, Any]] = slack_payload,
        log_every: float = 60.0,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"a webhook URL is http:// or https://, got {url!r}")
        if timeout <= 0 or queue_size < 1 or retries < 0 or backoff < 0:
            raise ValueError("timeout > 0, queue_size >= 1, retries >= 0 and backoff >= 0")
        self.url = url
        self.timeout = timeout
        self.queue_size = queue_size
        self.retries = retries
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": "flask-tickstock-monitor",
            **(headers or {}),
        }
        self.payload = payload
        self.log_every = log_every
        self.delivered = 0
        self.failed = 0
        self.retried = 0
        self.dropped: dict[str, int] = {}
        self.last_error: str | None = None
        self._last_logged = -log_every
        self._counter_lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._queue: deque[Alert] = deque()
        self._busy = False
        self._wake = threading.Condition()
        self._closing = False
        self._stop = threading.Event()  # cuts a backoff short at close()
        self._thread: threading.Thread | None = None

    # caller side ------------------------------------------------------------------------------

    def notify(self, alert: Alert) -> bool:
        """Queue ``alert``; never blocks. ``False`` (and counted) when it is dropped."""
        if self._pid != os.getpid():  # a forked child: the parent's thread is not here
            self._reset()
        if self._closing:
            self._drop("shutdown")
            return False
        with self._wake:
            if len(self._queue) >= self.queue_size:
                full = True
            else:
                full = False
                self._queue.append(alert)
                self._wake.notify()
        if full:
            self._drop("queue_full")
            return False
        if self._thread is None:
            self._start()
        return True

    __call__ = notify

    def _start(self) -> None:
        with self._wake:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="tickstock-alert-webhook", daemon=True
            )
        self._thread.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued alert was delivered, failed or dropped; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue or self._busy:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Deliver what is queued within ``timeout``, then stop; the rest is counted dropped."""
        flushed = self.flush(timeout)
        self._closing = True
        self._stop.set()
        with self._wake:
            left = len(self._queue)
            self._queue.clear()
            self._wake.notify_all()
        if left:
            self._drop("shutdown", left)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.timeout + 1.0)
        return flushed

    def stats(self) -> dict[str, Any]:
        with self._counter_lock:
            dropped = dict(self.dropped)
        return {
            "url": _redacted(self.url),
            "delivered": self.delivered,
            "failed": self.failed,
            "retried": self.retried,
            "dropped": dropped,
            "dropped_total": sum(dropped.values()),
            "queued": len(self._queue) + (1 if self._busy else 0),
            "last_error": self.last_error,
        }

    # the thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if not self._queue:
                    return
                alert = self._queue.popleft()
                self._busy = True
            try:
                self._deliver(alert)
            except Exception:  # the thread must outlive a bad payload function
                self._failed(f"payload failed for {alert.kind}", exc_info=True)
            finally:
                self._busy = False

    def _deliver(self, alert: Alert) -> None:
        body = json.dumps(self.payload(alert), default=str).encode()
        for attempt in range(self.retries + 1):
            error, retry_after = self._post(body)
            if error is None:
                with self._counter_lock:
                    self.delivered += 1
                return
            self.last_error = error
            if retry_after is None or attempt == self.retries or self._closing:
                break
            with self._counter_lock:
                self.retried += 1
            delay = min(self.backoff_cap, self.backoff * 2**attempt) * random.uniform(0.5, 1.5)
            delay = min(self.backoff_cap, max(delay, retry_after))
            self._stop.wait(delay)  # close() cuts it short: the last try is made at once
        self._failed(f"{alert.kind} not delivered: {self.last_error}")

    def _post(self, body: bytes) -> tuple[str | None, float | None]:
        """Send once: ``(None, None)`` on a 2xx; else the error and, when it may be retried,
        the least seconds to wait (the server's ``Retry-After``, else 0)."""
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
            return None, None
        except urllib.error.HTTPError as exc:
            with exc:
                exc.read()
            error = f"HTTP {exc.code}"
            if exc.code not in RETRY_STATUSES:
                return error, None
            return error, _retry_after(exc.headers.get("Retry-After"))
        except (OSError, ValueError) as exc:  # refused, reset, timed out, unresolvable
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return f"{type(reason).__name__}: {reason}", 0.0

    def _failed(self, message: str, exc_info: bool = False) -> None:
        with self._counter_lock:
            self.failed += 1
        now = time.monotonic()
        if now - self._last_logged >= self.log_every:
            self._last_logged = now
            log.warning(
                "alert webhook: %s (%d failed so far)", message, self.failed, exc_info=exc_info
            )

    def _drop(self, reason: str, count: int = 1) -> None:
        with self._counter_lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + count


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:  # an HTTP date: not worth parsing for a webhook
        return 0.0


def _redacted(url: str) -> str:
    """A webhook URL's path is its secret (Slack's ``/services/T…/B…/…``): keep the host."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}/…"
