"""TickStockAppV2's ErrorSubscriber + EnhancedLogger, as far as a feedback loop is concerned.

Every message on ``tickstock:errors`` is re-logged at its severity's level on the logger
``src.core.services.enhanced_logger.enhanced`` (which propagates to root, where the monitor's
handler is), as ``[source] [SEVERITY] [source] message | Context: {json}``, with a new
``error_id`` in the record's extras: the format of ``EnhancedLogger.log_from_redis_message``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from typing import Any

LOGGER = "src.core.services.enhanced_logger.enhanced"
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def display(data: dict[str, Any]) -> str:
    source, severity = data["source"], data["severity"]
    text = f"[{source}] [{severity.upper()}] [{source}] {data['message']}"
    if data.get("context"):
        text += f" | Context: {json.dumps(data['context'], default=str)}"
    return text


#: Another app's subscriber re-logging on a logger of its own, which the monitor does not know.
OTHER_LOGGER = "app.error_subscriber"


class ReLogger:
    """Re-logs what arrives on ``logger``. ``skip_instance``: not the errors of that instance
    (re-log only the other's). ``mangle``: re-log a text that never contains the original
    message (it names the error_id instead). ``handoff``: another thread logs the text, so the
    code that logs holds nothing of the received message: nothing proves the re-log is an
    echo, the worst case (only the throttle bounds the loop then)."""

    def __init__(
        self,
        client: Any,
        channel: str = "tickstock:errors",
        *,
        logger: str = LOGGER,
        skip_instance: str | None = None,
        mangle: bool = False,
        handoff: bool = False,
    ):
        self.log = logging.getLogger(logger)
        self.log.setLevel(logging.DEBUG)  # as EnhancedLogger does
        self.skip_instance = skip_instance
        self.mangle = mangle
        self.relogged = 0
        self.client = client  # a dropped client closes its pool, and the pubsub's socket with it
        self.pubsub = client.pubsub()
        self.pubsub.subscribe(channel)
        # wait for the server's confirmation: `subscribed` turns true when SUBSCRIBE is only sent,
        # and a message published before the server has it would never be re-logged
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            confirmation = self.pubsub.get_message(timeout=0.5)
            if confirmation and confirmation["type"] == "subscribe":
                break
        else:
            raise RuntimeError(f"no subscribe confirmation for {channel}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._texts: queue.Queue[tuple[int, str, dict[str, Any]] | None] | None = None
        self._logger_thread: threading.Thread | None = None
        if handoff:
            self._texts = queue.Queue()
            self._logger_thread = threading.Thread(target=self._log_handed, daemon=True)

    def start(self) -> ReLogger:
        self._thread.start()
        if self._logger_thread is not None:
            self._logger_thread.start()
        return self

    def _log_handed(self) -> None:
        assert self._texts is not None
        while (item := self._texts.get()) is not None:
            self.log.log(item[0], item[1], extra=item[2])

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if message is None:
                continue
            data = json.loads(message["data"])
            if self.skip_instance and data.get("instance_id") == self.skip_instance:
                continue
            text = f"relayed error {data['error_id']}" if self.mangle else display(data)
            self.relogged += 1
            level = LEVELS.get(data["severity"], 20)
            extra = {
                "error_id": str(uuid.uuid4()),
                "source": data["source"],
                "category": data.get("category"),
                "component": data.get("component"),
            }
            if self._texts is not None:
                self._texts.put((level, text, extra))
                del message, data  # nothing of the message stays on this side either
                continue
            self.log.log(level, text, extra=extra)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        if self._texts is not None and self._logger_thread is not None:
            self._texts.put(None)
            self._logger_thread.join(2)
        self.pubsub.close()
