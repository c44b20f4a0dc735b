"""The delivery worker: threads that send what the outbox holds, and record every attempt.

Each webhook action has a thread of its own, so an endpoint that hangs until its timeout
delays its own deliveries, never another endpoint's; one more thread pushes Alertmanager
alerts, settles deliveries whose action left the config, prunes and updates the gauges.
Webhooks retry with exponential backoff and full jitter (or the endpoint's Retry-After) until
`max_age_seconds`; Alertmanager alerts are re-sent on their own schedule.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping

import httpx

from monitor.acting import alertmanager, webhook
from monitor.acting.outbox import Outbox, PendingDelivery, StoredAlert
from monitor.config.acting import (
    Action,
    AlertmanagerAction,
    OutboxSettings,
    WebhookAction,
    shown_url,
)
from monitor.telemetry.metrics import METRICS as m

log = logging.getLogger(__name__)


def backoff(attempts: int, settings: OutboxSettings, rng: random.Random) -> float:
    """Delay before the next try after `attempts` failures: full jitter on a doubling cap."""
    cap = min(settings.backoff_max_seconds,
              settings.backoff_initial_seconds * 2.0 ** min(attempts - 1, 60))
    # The floor keeps a flapping endpoint from being hammered when the draw is near 0.
    return rng.uniform(min(settings.backoff_initial_seconds, cap), cap)


class DeliveryWorker:
    """Sends due webhooks and alerts; `run_once(now)` is one pass over everything, `start()`
    runs passes in a thread per webhook action and one for the rest."""

    def __init__(self, outbox: Outbox, actions: Mapping[str, Action], settings: OutboxSettings,
                 generator_url: str, *, rng: random.Random | None = None) -> None:
        self.outbox = outbox
        self.actions = dict(actions)
        self.settings = settings
        self.generator_url = generator_url
        self._rng = rng or random.Random()
        self._client = httpx.Client(follow_redirects=False)  # Alertmanager's
        # A client per webhook action: each is used by its own thread only.
        self._lanes: dict[str, webhook.WebhookSender] = {}
        try:
            for name, action in self.actions.items():
                if isinstance(action, WebhookAction):
                    sender = webhook.WebhookSender(httpx.Client(follow_redirects=False))
                    self._lanes[name] = sender
                    sender.add(name, action)  # a missing secret fails at start
        except webhook.WebhookSecretError:
            self._close_clients()
            raise
        self._disabled = outbox.disabled_endpoints()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_prune = 0.0

    # -- Thread --------------------------------------------------------------------------------

    def start(self) -> None:
        passes: dict[str, Callable[[float], None]] = {
            f"driftwatch-delivery-{name}": functools.partial(self._deliver_lane, action=name)
            for name in self._lanes}
        passes["driftwatch-delivery"] = self._housekeeping
        for thread_name, one_pass in passes.items():
            thread = threading.Thread(target=self._loop, args=(one_pass,), name=thread_name,
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop after the requests in flight, if any (bounded by the actions' timeouts)."""
        self._stop.set()
        longest = max((a.timeout_seconds for a in self.actions.values()), default=0.0)
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else longest + 5)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [t.name for t in self._threads if t.is_alive()]
        if busy:
            log.warning("delivery threads still busy after stop: %s; they are daemon threads "
                        "and the outbox keeps what they did not finish", ", ".join(busy))
        self._close_clients()

    def _close_clients(self) -> None:
        self._client.close()
        for sender in self._lanes.values():
            sender.close()

    def _loop(self, one_pass: Callable[[float], None]) -> None:
        while not self._stop.is_set():
            try:
                one_pass(time.time())
            except Exception:
                # The outbox keeps the work: log and try again on the next pass.
                log.exception("delivery pass failed")
            self._stop.wait(self.settings.poll_seconds)

    # -- One pass ------------------------------------------------------------------------------

    def run_once(self, now: float) -> None:
        """One pass over every action, in this thread; the gauges are updated even when part
        of it fails."""
        try:
            self._deliver_webhooks(now)
        finally:
            self._housekeeping(now)

    def _housekeeping(self, now: float) -> None:
        """Deliveries no webhook lane takes, alerts and pruning; then the gauges."""
        try:
            self._deliver_lane(now, None)
            self._push_alerts(now)
            if now - self._last_prune > 3_600:
                self._last_prune = now
                pruned = self.outbox.prune(now - self.settings.keep_days * 86_400)
                if pruned:
                    log.info("pruned %d settled outbox events older than %g days", pruned,
                             self.settings.keep_days)
        finally:
            self.update_gauges()

    def update_gauges(self) -> None:
        depth = self.outbox.depth()
        active = self.outbox.alerts_active()
        for name, action in self.actions.items():
            m.OUTBOX_DEPTH.labels(name).set(depth.get(name, 0))
            if isinstance(action, AlertmanagerAction):
                m.ALERTS_ACTIVE.labels(name).set(active.get(name, 0))

    def _deliver_webhooks(self, now: float) -> None:
        for name in self._lanes:
            self._deliver_lane(now, name)

    def _deliver_lane(self, now: float, action: str | None) -> None:
        """Due deliveries of one webhook action, in order, until one fails (spare the endpoint
        the rest of this pass); `None`: those of actions that are no webhook action now."""
        due = (self.outbox.due(now, action=action) if action is not None
               else self.outbox.due(now, other_than=tuple(self._lanes)))
        for item in due:
            if self._stop.is_set():
                return
            try:
                if not self._deliver(item, now):
                    return
            except Exception as exc:  # one undeliverable decision never blocks the others
                delay = backoff(item.attempts + 1, self.settings, self._rng)
                log.exception("webhook action %r: delivery of %s failed unexpectedly; next "
                              "try in %.1fs (it expires after max_age_seconds)", item.action,
                              item.event_id, delay)
                self.outbox.retry(item.event_id, item.action, now + delay, f"{exc!r}"[:500])
                m.OUTBOX_DELIVERIES.labels(item.action, "retry").inc()

    def _deliver(self, item: PendingDelivery, now: float) -> bool:
        """Settle or attempt one delivery; False when the endpoint failed (retry later)."""
        action = self.actions.get(item.action)
        if not isinstance(action, WebhookAction):
            self._final(item, "failed", f"action {item.action!r} is no longer a webhook "
                        "action in the config", attempted=False)
            return True
        if now - item.created > self.settings.max_age_seconds:
            self._final(item, "expired", f"older than max_age_seconds "
                        f"({self.settings.max_age_seconds:g})", attempted=False)
            return True
        reason = self._disabled.get((item.action, action.url))
        if reason is not None:
            self._final(item, "disabled", reason, attempted=False)
            return True
        outcome = self._lanes[item.action].send(item.action, action, item.event_id,
                                                webhook.body(item.created, item.decision))
        sent_at = time.time()
        if outcome.kind == "delivered":
            self.outbox.delivered(item.event_id, item.action, sent_at)
            m.OUTBOX_DELIVERIES.labels(item.action, "delivered").inc()
            m.OUTBOX_DELIVERY_SECONDS.labels(item.action).observe(
                max(0.0, sent_at - item.created))
        elif outcome.kind == "disabled":
            log.warning("webhook action %r: %s answered 410 Gone; deliveries to it are "
                        "disabled until its url changes", item.action,
                        shown_url(action.url))
            self.outbox.disable_endpoint(item.action, action.url, outcome.error, now)
            self._disabled[(item.action, action.url)] = outcome.error
            self._final(item, "disabled", outcome.error)
        else:
            delay = (outcome.retry_after if outcome.retry_after is not None
                     else backoff(item.attempts + 1, self.settings, self._rng))
            if now + delay - item.created > self.settings.max_age_seconds:
                self._final(item, "expired", f"gave up after {item.attempts + 1} attempts; "
                            f"last: {outcome.error}")
                return False
            self.outbox.retry(item.event_id, item.action, now + delay, outcome.error)
            m.OUTBOX_DELIVERIES.labels(item.action, "retry").inc()
            log.info("webhook action %r: %s for %s, attempt %d; next in %.1fs",
                     item.action, outcome.error, item.event_id, item.attempts + 1, delay)
            return False
        return True

    def _final(self, item: PendingDelivery, state: str, error: str, attempted: bool = True
               ) -> None:
        self.outbox.give_up(item.event_id, item.action, state, error, attempted)
        m.OUTBOX_DELIVERIES.labels(item.action, state).inc()

    def _push_alerts(self, now: float) -> None:
        by_action: dict[str, list[StoredAlert]] = {}
        for alert in self.outbox.alerts_due(now):
            action = self.actions.get(alert.action)
            if not isinstance(action, AlertmanagerAction):
                continue  # kept: the action may come back with the next config
            stale = now - alert.changed > self.settings.max_age_seconds
            if alertmanager.expired(alert, action, now) and (not alert.dirty or stale):
                self.outbox.drop_alert(alert)
                continue
            by_action.setdefault(alert.action, []).append(alert)
        for name, alerts in by_action.items():
            if self._stop.is_set():
                return
            action = self.actions[name]
            assert isinstance(action, AlertmanagerAction)
            error = alertmanager.push(self._client, action,
                                      alertmanager.payload(alerts, action, self.generator_url,
                                                           now))
            sent_at = time.time()
            if error is None:
                m.OUTBOX_DELIVERIES.labels(name, "delivered").inc()
                for alert in alerts:
                    if alert.dirty:
                        m.OUTBOX_DELIVERY_SECONDS.labels(name).observe(
                            max(0.0, sent_at - alert.changed))
                    self.outbox.alert_sent(alert, sent_at, now + action.resend_seconds)
            else:
                m.OUTBOX_DELIVERIES.labels(name, "retry").inc()
                log.info("alertmanager action %r: %s; retrying", name, error)
                for alert in alerts:
                    delay = min(backoff(alert.attempts + 1, self.settings, self._rng),
                                action.resend_seconds)
                    self.outbox.alert_failed(alert, now + delay, error)
