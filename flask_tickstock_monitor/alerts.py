"""Alerts from what a subscriber sees: an instance going stale or offline and coming back, a new
error group, a regression.

:class:`AlertTracker` is fed the instances (``MonitoringSubscriber.instances()``) and the error
groups (the form of docs/error-groups.md) and hands each alert to ``on_alert`` (e.g. a
:class:`~.webhook.WebhookNotifier`) once per change of state:

- an instance's alert is about its condition (up, stale, offline) against the last one alerted:
  getting worse is alerted at once, getting better at most once per ``key_interval`` per
  instance, so a flapping instance sends one "back" per interval, and always ends on the truth;
- a group is alerted once when it is new, and once each time it regresses;
- at most ``global_limit`` alerts per ``global_window`` seconds go out; instance alerts held
  back go out later (their state is re-read), group alerts held back are summed up in one
  ``suppressed`` alert once there is room.

With ``claim`` (see :func:`redis_claim`), several subscriber processes (one per gunicorn
worker) agree through Redis on which of them sends an alert.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .staleness import condition

log = logging.getLogger("flask_tickstock_monitor.alerts")

KINDS = (
    "instance_stale",
    "instance_offline",
    "instance_back",
    "group_new",
    "group_regression",
    "suppressed",
)
_RANK = {"up": 0, "stale": 1, "offline": 2}
_INSTANCE_KIND = {"up": "instance_back", "stale": "instance_stale", "offline": "instance_offline"}
_SEVERITY = {"up": "info", "stale": "warning", "offline": "critical"}

#: ``claim(token, ttl_s) -> bool``: whether this process is the one to send the alert ``token``
Claim = Callable[[str, float], bool]


@dataclass(frozen=True)
class Alert:
    """One alert: what changed (``kind``), of what (``key``), and what to tell people."""

    kind: str
    key: str
    severity: str  # "info" | "warning" | "critical"
    title: str
    text: str
    timestamp: float
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "severity": self.severity,
            "title": self.title,
            "text": self.text,
            "timestamp": self.timestamp,
            "details": dict(self.details),
        }


class AlertTracker:
    """Turns observed instance states and error groups into alerts (see the module's doc)."""

    def __init__(
        self,
        on_alert: Callable[[Alert], Any],
        *,
        key_interval: float = 60.0,
        global_limit: int = 20,
        global_window: float = 60.0,
        claim: Claim | None = None,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.time,
    ):
        if key_interval < 0 or global_window <= 0 or global_limit < 1:
            raise ValueError("key_interval >= 0, global_window > 0 and global_limit >= 1")
        self.on_alert = on_alert
        self.key_interval = key_interval
        self.global_limit = global_limit
        self.global_window = global_window
        self.claim = claim
        self.max_keys = max_keys
        self.clock = clock
        self.sent: dict[str, int] = {}
        self.suppressed = 0
        self.claimed_elsewhere = 0
        self.callback_errors = 0
        self._lock = threading.Lock()
        self._alerted: dict[str, str] = {}  # instance id -> condition last alerted (or first seen)
        self._last_sent: dict[str, float] = {}  # key -> when its last alert went out
        self._window: deque[float] = deque()
        self._new_alerted: OrderedDict[str, None] = OrderedDict()
        self._regressed: OrderedDict[str, bool] = OrderedDict()
        self._held_back = 0  # group alerts lost to the global limit, for the summary
        self._waiting: set[str] = set()  # instances whose alert is held back (counted once)

    # instances --------------------------------------------------------------------------------

    def observe_instances(
        self, instances: Mapping[str, Mapping[str, Any]], *, notify: bool = True
    ) -> list[Alert]:
        """Alert the instances whose condition changed; forget those no longer listed.

        Call it after each beat and on a timer (stale and offline happen without a message).
        ``notify=False`` records the conditions without alerting (a subscriber starting up).
        """
        out: list[Alert] = []
        with self._lock:
            for gone in set(self._alerted) - set(instances):
                del self._alerted[gone]
                self._waiting.discard(gone)
                self._last_sent.pop(f"instance:{gone}", None)
            for instance_id, view in instances.items():
                now_in = condition(str(view.get("state", "")))
                before = self._alerted.setdefault(instance_id, now_in)
                if now_in == before or not notify:
                    self._alerted[instance_id] = now_in
                    self._waiting.discard(instance_id)
                    continue
                key = f"instance:{instance_id}"
                worse = _RANK[now_in] > _RANK[before]
                if (not worse and not self._key_ready(key)) or not self._room():
                    # held back: the state is read again on a later call
                    if instance_id not in self._waiting:
                        self._waiting.add(instance_id)
                        self.suppressed += 1
                    continue
                self._waiting.discard(instance_id)
                self._alerted[instance_id] = now_in
                out.append(self._instance_alert(instance_id, view, now_in, before))
        return self._send(out)

    def _instance_alert(
        self, instance_id: str, view: Mapping[str, Any], now_in: str, before: str
    ) -> Alert:
        component = view.get("component") or "?"
        age = view.get("age_s")
        silent = f"no heartbeat for {age:.0f} s" if isinstance(age, (int, float)) else "silent"
        title = {
            "stale": f"Instance {instance_id} is stale",
            "offline": f"Instance {instance_id} is offline",
            "up": f"Instance {instance_id} is back",
        }[now_in]
        why = f"status {view.get('status') or view.get('state')}" if now_in == "up" else silent
        details = {
            "instance_id": instance_id,
            "component": component,
            "host": view.get("host"),
            "pid": view.get("pid"),
            "state": view.get("state"),
            "previous": before,
            "age_s": age,
            "interval_s": view.get("interval_s"),
        }
        return self._alert(
            _INSTANCE_KIND[now_in],
            f"instance:{instance_id}",
            _SEVERITY[now_in],
            title,
            f"[tickstock] {title} ({component}, {why})",
            details,
        )

    # groups -----------------------------------------------------------------------------------

    def observe_group(self, group: Mapping[str, Any], *, notify: bool = True) -> list[Alert]:
        """Alert a group the first time it is ``new``, and each time it turns ``regression``."""
        return self.observe_groups([group], notify=notify)

    def observe_groups(
        self, groups: Iterable[Mapping[str, Any]], *, notify: bool = True
    ) -> list[Alert]:
        out: list[Alert] = []
        with self._lock:
            for group in groups:
                fingerprint = str(group.get("fingerprint", ""))
                if not fingerprint:
                    continue
                if group.get("new") and fingerprint not in self._new_alerted:
                    _remember(self._new_alerted, fingerprint, None, self.max_keys)
                    if notify:
                        self._group_alert(out, "group_new", group)
                regression = bool(group.get("regression"))
                was = self._regressed.get(fingerprint, False)
                _remember(self._regressed, fingerprint, regression, self.max_keys)
                if regression and not was and notify:
                    self._group_alert(out, "group_regression", group)
        return self._send(out)

    def _group_alert(self, out: list[Alert], kind: str, group: Mapping[str, Any]) -> None:
        fingerprint = str(group["fingerprint"])
        if kind == "group_regression" and not self._key_ready(f"regression:{fingerprint}"):
            self.suppressed += 1
            return
        if not self._room():
            self.suppressed += 1
            self._held_back += 1
            return
        what = group.get("error_type") or "error"
        title = ("New error" if kind == "group_new" else "Regression") + f": {what}"
        details: dict[str, Any] = {
            key: group.get(key)
            for key in ("fingerprint", "error_type", "message", "count", "first_seen", "last_seen")
        }
        details["status"] = group.get("status")
        components = dict(group.get("components") or {})
        severities = dict(group.get("severities") or {})
        details.update(components=components, severities=severities)
        details["releases"] = dict(group.get("releases") or {})
        message = str(group.get("message") or "")[:300]
        where = ", ".join(sorted(components)) or "?"
        severity = "critical" if "critical" in severities else "warning"
        text = f"[tickstock] {title} in {where}: {message} ({group.get('count', '?')} events)"
        key = f"{'group' if kind == 'group_new' else 'regression'}:{fingerprint}"
        out.append(self._alert(kind, key, severity, title, text, details))

    # limits and sending -----------------------------------------------------------------------

    def _key_ready(self, key: str) -> bool:
        last = self._last_sent.get(key)
        return last is None or self.clock() - last >= self.key_interval

    def _room(self) -> bool:
        """Whether the global limit lets one more alert out now (and, first, the summary)."""
        now = self.clock()
        while self._window and self._window[0] <= now - self.global_window:
            self._window.popleft()
        return len(self._window) + (1 if self._held_back else 0) < self.global_limit

    def _alert(
        self, kind: str, key: str, severity: str, title: str, text: str, details: dict[str, Any]
    ) -> Alert:
        now = self.clock()
        self._window.append(now)
        self._last_sent[key] = now
        return Alert(kind, key, severity, title, text, now, details)

    def _summary(self) -> Alert | None:
        if not self._held_back or not self._room_for_summary():
            return None
        count, self._held_back = self._held_back, 0
        title = f"{count} alert{'s' if count != 1 else ''} held back by the rate limit"
        text = f"[tickstock] {title} (at most {self.global_limit} per {self.global_window:g} s)"
        return self._alert("suppressed", "suppressed", "warning", title, text, {"count": count})

    def _room_for_summary(self) -> bool:
        now = self.clock()
        while self._window and self._window[0] <= now - self.global_window:
            self._window.popleft()
        return len(self._window) < self.global_limit

    def _send(self, alerts: list[Alert]) -> list[Alert]:
        with self._lock:
            summary = self._summary()
        if summary is not None:
            alerts.insert(0, summary)
        sent = []
        for alert in alerts:
            if self.claim is not None and not self._claimed(alert):
                self.claimed_elsewhere += 1
                continue
            try:
                self.on_alert(alert)
            except Exception:
                self.callback_errors += 1
                log.warning("an alert callback failed", exc_info=True)
                continue
            with self._lock:
                self.sent[alert.kind] = self.sent.get(alert.kind, 0) + 1
            sent.append(alert)
        return sent

    def _claimed(self, alert: Alert) -> bool:
        ttl = 3600.0 if alert.kind == "group_new" else max(self.key_interval, 1.0)
        assert self.claim is not None
        try:
            return self.claim(f"{alert.kind}:{alert.key}", ttl)
        except Exception:  # no agreement possible: better twice than never
            log.debug("claiming an alert failed", exc_info=True)
            return True

    def stats(self) -> dict[str, Any]:
        return {
            "sent": dict(self.sent),
            "sent_total": sum(self.sent.values()),
            "suppressed": self.suppressed,
            "claimed_elsewhere": self.claimed_elsewhere,
            "callback_errors": self.callback_errors,
            "instances": len(self._alerted),
        }


def redis_claim(client: Any, prefix: str = "tickstock:alerts") -> Claim:
    """A ``claim`` for :class:`AlertTracker`: the first process to SET NX an alert's key sends
    it; the key expires after the alert's interval."""

    def claim(token: str, ttl_s: float) -> bool:
        return bool(client.set(f"{prefix}:{token}", b"1", nx=True, px=max(1, int(ttl_s * 1000))))

    return claim


def _remember(store: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > limit:
        store.popitem(last=False)
