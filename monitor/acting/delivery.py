"""The delivery worker: a thread that sends what the outbox holds, and records every attempt.

Webhooks retry with exponential backoff and full jitter (or the endpoint's Retry-After) until
`max_age_seconds`; Alertmanager alerts are re-sent on their own schedule.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping

import httpx

from monitor.acting import alertmanager, webhook
from monitor.acting.outbox import Outbox, PendingDelivery, StoredAlert
from monitor.config.acting import Action, AlertmanagerAction, OutboxSettings, WebhookAction
from monitor.telemetry.metrics import METRICS as m

log = logging.getLogger(__name__)


def backoff(attempts: int, settings: OutboxSettings, rng: random.Random) -> float:
    """Delay before the next try after `attempts` failures: full jitter on a doubling cap."""
    cap = min(settings.backoff_max_seconds,
              settings.backoff_initial_seconds * 2.0 ** min(attempts - 1, 60))
    # The floor keeps a flapping endpoint from being hammered when the draw is near 0.
    return rng.uniform(min(settings.backoff_initial_seconds, cap), cap)


class DeliveryWorker:
    """Sends due webhooks and alerts; `run_once(now)` is one pass, `start()` runs passes."""

    def __init__(self, outbox: Outbox, actions: Mapping[str, Action], settings: OutboxSettings,
                 generator_url: str, *, rng: random.Random | None = None) -> None:
        self.outbox = outbox
        self.actions = dict(actions)
        self.settings = settings
        self.generator_url = generator_url
        self._rng = rng or random.Random()
        self._client = httpx.Client(follow_redirects=False)
        self._webhooks = webhook.WebhookSender(self._client)
        try:
            for name, action in self.actions.items():
                if isinstance(action, WebhookAction):
                    self._webhooks.add(name, action)  # a missing secret fails at start
        except webhook.WebhookSecretError:
            self._client.close()
            raise
        self._disabled = outbox.disabled_endpoints()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0

    # -- Thread --------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="driftwatch-delivery",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop after the request in flight, if any (bounded by the actions' timeouts)."""
        self._stop.set()
        if self._thread is not None:
            longest = max((a.timeout_seconds for a in self.actions.values()), default=0.0)
            self._thread.join(timeout_s if timeout_s is not None else longest + 5)
            if self._thread.is_alive():
                log.warning("delivery thread still busy after stop; it is a daemon thread "
                            "and the outbox keeps what it did not finish")
        self._client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once(time.time())
            except Exception:
                # The outbox keeps the work: log and try again on the next pass.
                log.exception("delivery pass failed")
            self._stop.wait(self.settings.poll_seconds)

    # -- One pass ------------------------------------------------------------------------------

    def run_once(self, now: float) -> None:
        """One pass; the gauges are updated even when part of it fails."""
        try:
            self._deliver_webhooks(now)
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
        failing: set[str] = set()  # endpoints that failed in this pass: spare them the rest
        for item in self.outbox.due(now):
            if self._stop.is_set():
                return
            if item.action in failing:
                continue
            try:
                self._deliver(item, now, failing)
            except Exception as exc:  # one undeliverable decision never blocks the others
                delay = backoff(item.attempts + 1, self.settings, self._rng)
                log.exception("webhook action %r: delivery of %s failed unexpectedly; next "
                              "try in %.1fs (it expires after max_age_seconds)", item.action,
                              item.event_id, delay)
                self.outbox.retry(item.event_id, item.action, now + delay, f"{exc!r}"[:500])
                m.OUTBOX_DELIVERIES.labels(item.action, "retry").inc()

    def _deliver(self, item: PendingDelivery, now: float, failing: set[str]) -> None:
        action = self.actions.get(item.action)
        if not isinstance(action, WebhookAction):
            self._final(item, "failed", f"action {item.action!r} is no longer a webhook "
                        "action in the config", attempted=False)
            return
        if now - item.created > self.settings.max_age_seconds:
            self._final(item, "expired", f"older than max_age_seconds "
                        f"({self.settings.max_age_seconds:g})", attempted=False)
            return
        reason = self._disabled.get((item.action, action.url))
        if reason is not None:
            self._final(item, "disabled", reason, attempted=False)
            return
        outcome = self._webhooks.send(item.action, action, item.event_id,
                                      webhook.body(item.created, item.decision))
        sent_at = time.time()
        if outcome.kind == "delivered":
            self.outbox.delivered(item.event_id, item.action, sent_at)
            m.OUTBOX_DELIVERIES.labels(item.action, "delivered").inc()
            m.OUTBOX_DELIVERY_SECONDS.labels(item.action).observe(
                max(0.0, sent_at - item.created))
        elif outcome.kind == "disabled":
            log.warning("webhook action %r: %s answered 410 Gone; deliveries to it are "
                        "disabled until its url changes", item.action, action.url)
            self.outbox.disable_endpoint(item.action, action.url, outcome.error, now)
            self._disabled[(item.action, action.url)] = outcome.error
            self._final(item, "disabled", outcome.error)
        else:
            failing.add(item.action)
            delay = (outcome.retry_after if outcome.retry_after is not None
                     else backoff(item.attempts + 1, self.settings, self._rng))
            if now + delay - item.created > self.settings.max_age_seconds:
                self._final(item, "expired", f"gave up after {item.attempts + 1} attempts; "
                            f"last: {outcome.error}")
                return
            self.outbox.retry(item.event_id, item.action, now + delay, outcome.error)
            m.OUTBOX_DELIVERIES.labels(item.action, "retry").inc()
            log.info("webhook action %r: %s for %s, attempt %d; next in %.1fs",
                     item.action, outcome.error, item.event_id, item.attempts + 1, delay)

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
