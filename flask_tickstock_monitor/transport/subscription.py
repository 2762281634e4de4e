"""The subscription: one PubSub owned by one background thread that reconnects with jittered
backoff, resubscribes, and probes a silent connection so a half-open socket is noticed."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .._util import CircuitBreaker, mark_monitoring_thread, thread_report
from .clients import as_text
from .pubsub import DATA_TYPES, HEARD, SUBSCRIBED_TYPES, open_pubsub, receiver

log = logging.getLogger("flask_tickstock_monitor.transport")


class Subscription:
    """A PubSub owned by one background thread, kept subscribed whatever Redis does.

    ``on_message(channel, data)`` runs on that thread for each message; ``on_connect(first)``
    after every (re)subscribe, with ``first=False`` after a reconnect, so callers can repair
    what they missed while disconnected.
    """

    def __init__(
        self,
        client_factory: Callable[[], Any],
        channels: Iterable[str],
        on_message: Callable[[str, bytes], None],
        *,
        on_connect: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        probe_interval: float = 5.0,
        probe_timeout: float = 2.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        name: str = "tickstock-monitor-subscription",
    ):
        self._client_factory = client_factory
        self.channels = list(channels)
        self.on_message = on_message
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.breaker = CircuitBreaker(backoff_base, backoff_cap)
        self.name = name
        self.connected = False
        self.connects = 0
        self.reconnects = 0
        self.received = 0
        self.callback_errors = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loop_at = time.monotonic()
        self._pubsub: Any = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Subscription:
        if not self.running:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def liveness(self, stall_after: float) -> dict[str, Any]:
        # reconnecting waits up to the backoff cap between rounds
        thread = None if self._stop.is_set() else self._thread
        return thread_report(thread, self.loop_at, stall_after + self.breaker.cap)

    def wait_connected(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.connected and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.connected

    def _run(self) -> None:
        mark_monitoring_thread()
        while not self._stop.is_set():
            self.loop_at = time.monotonic()
            try:
                self._listen()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                was_connected = self.connected
                self.connected = False
                self._close()
            if self._stop.is_set():
                return
            if was_connected and self.on_disconnect is not None:
                self._safe(self.on_disconnect, self.last_error or "disconnected")
            delay = self.breaker.failed()
            log.info(
                "subscription to %s lost (%s); retrying in %.2fs",
                self.channels,
                self.last_error,
                delay,
            )
            self._stop.wait(delay)

    def _listen(self) -> None:
        client = self._client_factory()
        pubsub = open_pubsub(client, reconnecting=self.last_error is not None)
        self._pubsub = pubsub
        pubsub.subscribe(*self.channels)
        pending = set(self.channels)
        deadline = time.monotonic() + self.probe_timeout + 1.0
        while pending:  # wait for every subscribe confirmation before calling it connected
            message = pubsub.get_message(timeout=0.2)
            if message and message["type"] in SUBSCRIBED_TYPES:
                pending.discard(as_text(message["channel"]))
            elif message and message["type"] in DATA_TYPES:
                self._dispatch(message)
            if time.monotonic() > deadline:
                raise ConnectionError(f"no subscribe confirmation for {sorted(pending)}")
            if self._stop.is_set():
                return
        first = self.connects == 0
        self.connects += 1
        if not first:
            self.reconnects += 1
        self.connected = True
        self.breaker.succeeded()
        if self.on_connect is not None:
            self._safe(self.on_connect, first)
        receive = receiver(pubsub, 0.25)
        last_heard = time.monotonic()
        probe_sent: float | None = None
        while not self._stop.is_set():
            self.loop_at = time.monotonic()
            got = receive()
            now = time.monotonic()
            if got is not None:
                last_heard = now
                probe_sent = None
                if got is not HEARD:
                    self._deliver(*got)
                continue
            if probe_sent is not None:
                if now - probe_sent > self.probe_timeout:
                    raise ConnectionError(f"no reply to a liveness probe in {self.probe_timeout}s")
            elif now - last_heard > self.probe_interval:
                pubsub.ping()
                probe_sent = now

    def _dispatch(self, message: dict[str, Any]) -> None:
        self._deliver(as_text(message["channel"]), message["data"])

    def _deliver(self, channel: str, data: Any) -> None:
        self.received += 1
        self._safe(self.on_message, channel, data)

    def _safe(self, callback: Callable[..., Any], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            self.callback_errors += 1
            log.exception("subscription callback %r failed", callback)

    def _close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:
                pass
