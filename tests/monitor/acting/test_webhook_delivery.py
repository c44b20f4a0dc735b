"""Webhook deliveries to a real HTTP receiver: signing, retries, 410, Retry-After, depth."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from monitor.acting import webhook
from monitor.acting.delivery import DeliveryWorker
from monitor.acting.outbox import Outbox
from monitor.acting.webhook import WebhookSecretError, load_secret
from monitor.config.acting import OutboxSettings, WebhookAction, shown_url
from monitor.local.receiver import QuietHandler, serve
from monitor.local.receiver import WebhookReceiver as Receiver
from monitor.types import Decision
from tests.conftest import SECRET
from tests.support import wait_for


@pytest.fixture
def name() -> str:
    return f"hook-{uuid.uuid4().hex[:8]}"  # metrics are process-wide: one label per test


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Outbox]:
    b = Outbox(tmp_path / "outbox.sqlite3")
    yield b
    b.close()


SETTINGS = OutboxSettings(backoff_initial_seconds=2, backoff_max_seconds=60)


def setup(box: Outbox, receiver: Receiver, name: str, monkeypatch: pytest.MonkeyPatch,
          settings: OutboxSettings = SETTINGS, **action: object
          ) -> tuple[DeliveryWorker, dict[str, WebhookAction]]:
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    actions = {name: WebhookAction(type="webhook", url=receiver.url,
                                   secret_env="TEST_HOOK_SECRET", **action)}
    return DeliveryWorker(box, actions, settings, "http://driftwatch.test"), actions


def decision(name: str, model: str = "m") -> Decision:
    return Decision(event_type="canary.rollback", rule="canary-gate", severity="critical",
                    status="firing", segment={"model": model, "deployment": "canary"},
                    evidence={"difference": 0.07, "upper": 0.11}, summary="canary is worse",
                    targets=(name,), at=1_700_000_000.5, details={"gate": "toxic"})


def delivery(box: Outbox, event_id: str):
    [event] = [e for e in box.recent(100) if e.id == event_id]
    [d] = event.deliveries
    return d


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_deliveries_arrive_signed_per_standard_webhooks(
        box: Outbox, receiver: Receiver, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    worker, actions = setup(box, receiver, name, monkeypatch)
    [event_id] = box.put([decision(name)], actions)
    worker.run_once(time.time())
    worker.stop()
    [got] = receiver.received
    assert got.verified
    assert got.headers["webhook-id"] == event_id
    # By hand, per the spec: v1,base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{event_id}.{got.headers['webhook-timestamp']}.".encode() + got.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert got.headers["webhook-signature"] == f"v1,{expected}"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 300
    payload = json.loads(got.body)
    assert payload["type"] == "canary.rollback"
    assert payload["timestamp"].endswith("Z")
    assert payload["data"] == {
        "rule": "canary-gate", "severity": "critical", "status": "firing",
        "segment": {"model": "m", "deployment": "canary"},
        "evidence": {"difference": 0.07, "upper": 0.11}, "summary": "canary is worse",
        "details": {"gate": "toxic"}, "at": "2023-11-14T22:13:20.500Z",
    }
    d = delivery(box, event_id)
    assert (d.state, d.attempts, d.last_error) == ("delivered", 1, None)
    assert sample("driftwatch_outbox_deliveries_total", action=name, outcome="delivered") == 1
    assert sample("driftwatch_outbox_delivery_seconds_count", action=name) == 1


def test_a_failing_endpoint_gets_the_same_webhook_id_until_it_succeeds(
        box: Outbox, receiver: Receiver, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver.script = [(500, {})] * 3
    worker, actions = setup(box, receiver, name, monkeypatch)
    [event_id] = box.put([decision(name)], actions)
    now = time.time()
    delays = []
    for _ in range(10):
        worker.run_once(now)
        d = delivery(box, event_id)
        if d.state != "pending":
            break
        delays.append(d.next_attempt - now)
        assert d.last_error == "HTTP 500"
        now = d.next_attempt
    worker.stop()
    assert [r.headers["webhook-id"] for r in receiver.received] == [event_id] * 4
    assert all(r.verified for r in receiver.received)
    assert len({r.body for r in receiver.received}) == 1  # same body on every try
    d = delivery(box, event_id)
    assert (d.state, d.attempts) == ("delivered", 4)
    # Full jitter on a doubling cap: try n waits between the initial delay and initial * 2^(n-1).
    assert len(delays) == 3
    for n, delay in enumerate(delays, start=1):
        assert 2 <= delay <= 2 * 2 ** (n - 1)
    assert sample("driftwatch_outbox_deliveries_total", action=name, outcome="retry") == 3


def test_410_disables_the_endpoint_for_later_deliveries(
        box: Outbox, receiver: Receiver, name: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    receiver.script = [(410, {})]
    worker, actions = setup(box, receiver, name, monkeypatch)
    [first] = box.put([decision(name)], actions)
    worker.run_once(time.time())
    [second] = box.put([decision(name, model="n")], actions)
    worker.run_once(time.time())
    worker.stop()
    # A worker started later (a restart) knows too: the outbox keeps disabled endpoints.
    [third] = box.put([decision(name, model="o")], actions)
    restarted, _ = setup(box, receiver, name, monkeypatch)
    restarted.run_once(time.time())
    restarted.stop()
    assert len(receiver.received) == 1
    assert [(delivery(box, i).state, delivery(box, i).attempts) for i in (first, second, third)
            ] == [("disabled", 1), ("disabled", 0), ("disabled", 0)]
    assert "410" in (delivery(box, second).last_error or "")
    [gone] = [r.message for r in caplog.records if "410" in r.message]
    # The endpoint by its host: a hook's path often is its secret (Slack's, Teams').
    assert "/hooks/driftwatch" not in gone
    assert f"{receiver.url.removesuffix('/hooks/driftwatch')}/…" in gone
    assert sample("driftwatch_outbox_deliveries_total", action=name, outcome="disabled") == 3


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_answers_set_the_next_attempt_from_retry_after(
        box: Outbox, receiver: Receiver, name: str, monkeypatch: pytest.MonkeyPatch,
        status: int) -> None:
    receiver.script = [(status, {"Retry-After": "120"}),
                       (status, {"Retry-After": formatdate(time.time() + 600, usegmt=True)})]
    worker, actions = setup(box, receiver, name, monkeypatch)
    [event_id] = box.put([decision(name)], actions)
    now = time.time()
    worker.run_once(now)
    assert delivery(box, event_id).next_attempt == now + 120
    worker.run_once(now + 119)
    assert len(receiver.received) == 1  # not due yet
    worker.run_once(now + 120)
    d = delivery(box, event_id)
    worker.stop()
    assert (d.state, d.attempts, d.last_error) == ("pending", 2, f"HTTP {status}")
    # An HTTP date: the delay is counted from when the answer came, to the second.
    assert 590 <= d.next_attempt - (now + 120) <= 600


def test_a_redirect_is_not_followed_and_says_where_it_points(
        box: Outbox, receiver: Receiver, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A moved endpoint (308): the signed event is not sent where the config does not say;
    the delivery's error names the new place (its host: the path may hold a secret)."""
    receiver.script = [(308, {"Location": "https://hooks.example.com/T0/secret?token=x"})]
    worker, actions = setup(box, receiver, name, monkeypatch)
    [event_id] = box.put([decision(name)], actions)
    worker.run_once(time.time())
    d = delivery(box, event_id)
    worker.stop()
    assert len(receiver.received) == 1
    assert (d.state, d.last_error) == ("pending", "HTTP 308: redirected to "
                                       "https://hooks.example.com/…; set the action's url to "
                                       "where it points")


def test_a_connection_reset_and_a_hang_are_retried(
        box: Outbox, receiver: Receiver, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver.script = [("reset", {}), ("hang", {})]
    worker, actions = setup(box, receiver, name, monkeypatch, timeout_seconds=0.5)
    [event_id] = box.put([decision(name)], actions)
    now = time.time()
    errors = []
    for _ in range(3):
        worker.run_once(now)
        d = delivery(box, event_id)
        errors.append(d.last_error)
        now = d.next_attempt
    worker.stop()
    assert errors[0] is not None and "Error" in errors[0]
    assert errors[1] is not None and errors[1].startswith("timeout after 0.5s")
    d = delivery(box, event_id)
    assert (d.state, d.attempts) == ("delivered", 3)
    assert [r.headers["webhook-id"] for r in receiver.received] == [event_id] * 3


def test_outbox_depth_rises_with_puts_and_falls_with_deliveries(
        box: Outbox, receiver: Receiver, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver.script = [(500, {})]
    worker, actions = setup(box, receiver, name, monkeypatch)
    worker.update_gauges()
    assert sample("driftwatch_outbox_depth", action=name) == 0
    box.put([decision(name), decision(name, model="n")], actions)
    worker.update_gauges()
    assert sample("driftwatch_outbox_depth", action=name) == 2
    now = time.time()
    worker.run_once(now)  # the first fails, so the second waits for the next pass
    assert sample("driftwatch_outbox_depth", action=name) == 2
    worker.run_once(now + 60)
    worker.stop()
    assert sample("driftwatch_outbox_depth", action=name) == 0
    assert len(receiver.received) == 3


def test_the_worker_thread_delivers_and_stops_promptly(
        box: Outbox, receiver: Receiver, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    worker, actions = setup(box, receiver, name, monkeypatch,
                            settings=OutboxSettings(poll_seconds=0.05))
    worker.start()
    try:
        [event_id] = box.put([decision(name)], actions)
        wait_for(lambda: delivery(box, event_id).state == "delivered", 20, "the delivery")
    finally:
        worker.stop(timeout_s=15)
    assert len(worker._threads) == 2  # the action's lane and the housekeeping
    assert not [t for t in worker._threads if t.is_alive()]


def test_an_endpoint_that_hangs_delays_its_own_deliveries_and_no_other(
        box: Outbox, receiver: Receiver, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    hung: list[str] = []

    class Hanging(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            hung.append(self.headers["webhook-id"])
            release.wait(60)  # answers once the test has seen the other endpoint's delivery
            self.reply(204)

    server, url = serve(Hanging)
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    slow, fast = f"{name}-slow", f"{name}-fast"
    actions = {slow: WebhookAction(type="webhook", url=url, secret_env="TEST_HOOK_SECRET",
                                   timeout_seconds=120),
               fast: WebhookAction(type="webhook", url=receiver.url,
                                   secret_env="TEST_HOOK_SECRET")}
    worker = DeliveryWorker(box, actions, OutboxSettings(poll_seconds=0.05), "http://dw")
    # The hanging endpoint's decision is older: one thread for all would send it first.
    [first] = box.put([decision(slow)], actions)
    worker.start()
    try:
        wait_for(lambda: hung == [first], 30, "the hanging endpoint to hold a delivery")
        [second] = box.put([decision(fast, model="n")], actions)
        wait_for(lambda: delivery(box, second).state == "delivered", 30,
                 "the other endpoint's delivery while the first hangs")
        assert hung == [first] and delivery(box, first).state == "pending"  # still in flight
        release.set()
        wait_for(lambda: delivery(box, first).state == "delivered", 30, "the held delivery")
    finally:
        release.set()
        worker.stop(timeout_s=15)
        server.shutdown()
        server.server_close()
    assert [r.headers["webhook-id"] for r in receiver.received] == [second]


def test_a_missing_or_malformed_secret_is_a_clear_error_that_hides_the_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_SECRET", raising=False)
    action = WebhookAction(type="webhook", url="http://x/", secret_env="NO_SUCH_SECRET")
    with pytest.raises(WebhookSecretError, match=r"'rollback'.*NO_SUCH_SECRET is not set"):
        load_secret("rollback", action)
    monkeypatch.setenv("NO_SUCH_SECRET", "hunter2-not-whsec")
    with pytest.raises(WebhookSecretError, match="NO_SUCH_SECRET is not of the form") as err:
        load_secret("rollback", action)
    assert "hunter2" not in str(err.value)
    missing = WebhookAction(type="webhook", url="http://x/", secret_file=tmp_path / "nope")
    with pytest.raises(WebhookSecretError, match=r"'retrain'.*secret_file .*nope"):
        DeliveryWorker(Outbox(tmp_path / "o.sqlite3"), {"retrain": missing}, SETTINGS, "")
    (tmp_path / "secret").write_text(SECRET + "\n")
    from_file = WebhookAction(type="webhook", url="http://x/", secret_file=tmp_path / "secret")
    assert load_secret("retrain", from_file) == SECRET


def test_a_decision_dated_past_year_9999_is_delivered_and_blocks_nothing(
        box: Outbox, receiver: Receiver, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # An outbox written before event times were bounded: the first due decision is dated in
    # year 10000 (UTC), which datetime cannot hold.
    worker, actions = setup(box, receiver, name, monkeypatch)
    poison = dataclasses.replace(decision(name), at=253_402_344_000.0)
    ids = box.put([poison, decision(name, model="n")], actions)
    worker.run_once(time.time())
    worker.stop()
    assert [delivery(box, i).state for i in ids] == ["delivered", "delivered"]
    assert json.loads(receiver.received[0].body)["data"]["at"] == "9999-12-31T23:59:59.999Z"
    assert sample("driftwatch_outbox_depth", action=name) == 0


def test_a_delivery_that_fails_unexpectedly_is_retried_later_and_the_rest_go_on(
        box: Outbox, receiver: Receiver, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    worker, actions = setup(box, receiver, name, monkeypatch)
    bad, good = box.put([decision(name, model="bad"), decision(name, model="good")], actions)
    real_body = webhook.body

    def body(created: float, d: Decision) -> bytes:
        if d.segment["model"] == "bad":
            raise ValueError("cannot render")
        return real_body(created, d)

    monkeypatch.setattr(webhook, "body", body)
    worker.run_once(time.time())
    assert delivery(box, good).state == "delivered"
    stuck = delivery(box, bad)
    assert (stuck.state, stuck.attempts) == ("pending", 1) and "cannot render" in stuck.last_error
    assert sample("driftwatch_outbox_depth", action=name) == 1  # set although a send failed
    monkeypatch.setattr(worker, "_deliver_webhooks", lambda now: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        worker.run_once(time.time())
    box.put([decision(name, model="later")], actions)
    with pytest.raises(ZeroDivisionError):
        worker.run_once(time.time())
    worker.stop()
    assert sample("driftwatch_outbox_depth", action=name) == 2  # the gauge follows a failed pass


def test_the_receiver_counts_a_request_cut_off_mid_body_as_no_delivery(
        receiver: Receiver) -> None:
    # kill -9 of the daemon can land between the headers and the body of a request.
    host, port = receiver.url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /hooks/driftwatch HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 100\r\n\r\n{\"type\":")
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(1024) == b""  # closed without an answer
    with socket.create_connection((host, int(port)), timeout=10) as conn:  # cut in the headers
        conn.sendall(b"POST /hooks/driftwatch HTTP/1.1\r\nHost: x\r\n")
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(1024) == b""
    wait_for(lambda: receiver.incomplete == 2, 10, "the cut-off requests")
    assert receiver.received == []


@pytest.mark.parametrize(("url", "shown"), [
    ("https://hooks.slack.com/services/T0/B0/s3cr3t", "https://hooks.slack.com/…"),
    ("http://user:pw@127.0.0.1:8080/x?token=abc", "http://127.0.0.1:8080/…"),
    ("https://example.com/?token=abc", "https://example.com/…"),
    ("https://example.com", "https://example.com"),
    ("http://[::1]:9/a", "http://[::1]:9/…"),
    ("hooks.example.com/services/s3cr3t", "hooks.example.com/…"),  # no scheme: cut too
    ("https://example.com/", "https://example.com"),
])
def test_a_webhook_url_in_a_log_shows_its_host_not_its_secret(url: str, shown: str) -> None:
    assert shown_url(url) == shown
