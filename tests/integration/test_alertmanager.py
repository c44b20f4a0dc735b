"""Alerts pushed through the delivery worker to a real Alertmanager, which notifies a receiver."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client import REGISTRY

from monitor.acting.alertmanager import payload
from monitor.acting.delivery import DeliveryWorker
from monitor.acting.outbox import Outbox
from monitor.acting.rules import Observation, RuleEngine
from monitor.config.acting import AlertmanagerAction, OutboxSettings, Rule
from monitor.local.broker import free_port
from monitor.types import Decision
from tests.support import QuietHandler, serve, wait_for

# Debian ships the binary as prometheus-alertmanager; upstream tarballs call it alertmanager.
BINARY = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")


@pytest.fixture
def notifications() -> Iterator[tuple[str, list[dict]]]:
    """A webhook receiver for Alertmanager's notifications: (url, received payloads)."""
    received: list[dict] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.reply(200)

    server, url = serve(Handler)
    yield f"{url}/notify", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def alertmanager(tmp_path: Path, notifications: tuple[str, list[dict]]) -> Iterator[str]:
    if BINARY is None:
        pytest.fail("no alertmanager binary: install the Debian package prometheus-alertmanager "
                    "(make system-deps does)")
    config = {
        "route": {"receiver": "hook", "group_by": ["alertname", "model"], "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "hook", "webhook_configs": [
            {"url": notifications[0], "send_resolved": True}]}],
    }
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp_path / "alertmanager.log"
    process = subprocess.Popen(
        [BINARY, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=open(log, "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"alertmanager exited:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 30, "alertmanager to be ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# The tests' re-send intervals leave slack: a firing alert ends 4 intervals ahead, so a re-send
# later than that (the delivery thread starved, or an outbox fsync slow, on a busy machine)
# lets Alertmanager resolve the alert and page for it again. At 0.2 s that was 0.8 s, and a
# loaded CI run once paged twice for one incident.


def decision(name: str, status: str, at: float) -> Decision:
    return Decision(event_type="quality.regressed", rule="toxic-rate", severity="critical",
                    status=status, segment={"model": "chat-7b", "model_version": "v3"},
                    evidence={"rate": 0.12, "threshold": 0.05}, summary="toxic share 12% > 5%",
                    targets=(name,), at=at)


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_firing_alert_is_resent_without_renotifying_and_its_resolve_arrives(
        tmp_path: Path, alertmanager: str, notifications: tuple[str, list[dict]]) -> None:
    _, received = notifications
    name = f"am-{uuid.uuid4().hex[:8]}"
    actions = {name: AlertmanagerAction(type="alertmanager", url=alertmanager,
                                        resend_seconds=0.5, resolved_for_seconds=2)}
    box = Outbox(tmp_path / "outbox.sqlite3")
    worker = DeliveryWorker(box, actions, OutboxSettings(poll_seconds=0.05),
                            "http://driftwatch.test/events")
    sends = lambda: sample("driftwatch_outbox_deliveries_total", action=name,  # noqa: E731
                           outcome="delivered")
    firing = lambda: [n for n in received if n["status"] == "firing"]  # noqa: E731
    started = time.time() - 5
    worker.start()
    try:
        box.put([decision(name, "firing", started)], actions)
        wait_for(lambda: len(firing()) == 1, 30, "the firing notification")
        assert sample("driftwatch_alerts_active", action=name) == 1
        # Keep re-sending across several group intervals (1 s): Alertmanager must see one
        # ongoing alert, not a new one each time.
        after = sends()
        wait_for(lambda: sends() >= after + 15, 30, "15 more re-sends")
        box.put([decision(name, "firing", started + 2)], actions)  # a repeat: same alert
        wait_for(lambda: sends() >= after + 30, 30, "15 more re-sends after a repeat")
        assert len(firing()) == 1
        [alert] = firing()[0]["alerts"]
        assert alert["labels"] == {"alertname": "toxic-rate", "severity": "critical",
                                   "model": "chat-7b", "model_version": "v3"}
        assert alert["annotations"] == {"summary": "toxic share 12% > 5%", "rate": "0.12",
                                        "threshold": "0.05"}
        assert alert["generatorURL"] == "http://driftwatch.test/events"
        starts_at = alert["startsAt"]

        box.put([decision(name, "resolved", time.time())], actions)
        wait_for(lambda: any(n["status"] == "resolved" for n in received), 30,
                 "the resolved notification")
        [resolved] = [n for n in received if n["status"] == "resolved"]
        assert resolved["alerts"][0]["startsAt"] == starts_at
        assert resolved["alerts"][0]["labels"]["alertname"] == "toxic-rate"
        assert len(firing()) == 1
        # After resolved_for_seconds of re-sending the resolve, the alert leaves the outbox.
        wait_for(lambda: box.alerts() == [], 30, "the resolved alert to be dropped")
        assert sample("driftwatch_alerts_active", action=name) == 0
        assert sample("driftwatch_outbox_depth", action=name) == 0
    finally:
        worker.stop(timeout_s=15)
        box.close()


def test_an_unreachable_alertmanager_is_retried_and_the_alert_survives_a_restart(
        tmp_path: Path, alertmanager: str, notifications: tuple[str, list[dict]]) -> None:
    _, received = notifications
    name = f"am-{uuid.uuid4().hex[:8]}"
    down = {name: AlertmanagerAction(type="alertmanager", url=f"http://127.0.0.1:{free_port()}",
                                     resend_seconds=60, timeout_seconds=2)}
    box = Outbox(tmp_path / "outbox.sqlite3")
    worker = DeliveryWorker(box, down, OutboxSettings(backoff_initial_seconds=5), "http://dw")
    box.put([decision(name, "firing", time.time())], down)
    now = time.time()
    worker.run_once(now)
    worker.stop()
    box.close()
    [alert] = Outbox(tmp_path / "outbox.sqlite3").alerts()
    assert (alert.attempts, alert.dirty, alert.ends_at) == (1, True, None)
    assert sample("driftwatch_outbox_deliveries_total", action=name, outcome="retry") == 1

    # Restarted, with Alertmanager back at its address: the stored alert goes out.
    up = {name: down[name].model_copy(update={"url": alertmanager})}
    box = Outbox(tmp_path / "outbox.sqlite3")
    worker = DeliveryWorker(box, up, OutboxSettings(), "http://dw")
    try:
        worker.run_once(now + 60)
        [alert] = box.alerts()
        assert (alert.attempts, alert.dirty) == (0, False)
        wait_for(lambda: any(n["status"] == "firing" for n in received), 30,
                 "the firing notification")
        listed = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
        assert [a["labels"]["alertname"] for a in listed] == ["toxic-rate"]
    finally:
        worker.stop()
        box.close()


def test_firing_alerts_end_four_resend_intervals_ahead() -> None:
    action = AlertmanagerAction(type="alertmanager", url="http://am:9093", resend_seconds=60)
    from monitor.acting.outbox import StoredAlert

    firing = StoredAlert("am", "k", {"alertname": "r"}, {}, 1_000.0, None, 1_000.0, True, 0)
    resolved = StoredAlert("am", "k", {"alertname": "r"}, {}, 1_000.0, 1_500.0, 1_500.0, True, 0)
    body = json.loads(payload([firing, resolved], action, "http://dw", now=2_000.0))
    assert [(a["startsAt"], a["endsAt"]) for a in body] == [
        ("1970-01-01T00:16:40.000Z", "1970-01-01T00:37:20.000Z"),  # 2000 + 4 * 60
        ("1970-01-01T00:16:40.000Z", "1970-01-01T00:25:00.000Z"),
    ]
    assert body[0]["generatorURL"] == "http://dw"


def test_a_rule_firing_on_two_segments_pages_once_per_group_and_resolves(
        tmp_path: Path, alertmanager: str, notifications: tuple[str, list[dict]]) -> None:
    """Rule engine -> outbox -> delivery worker -> a real Alertmanager -> its receiver: one
    incident on two model versions of one model is one notification (grouped by alertname and
    model) however long it fires, and its resolve follows when the share falls."""
    _, received = notifications
    name = f"am-{uuid.uuid4().hex[:8]}"
    actions = {name: AlertmanagerAction(type="alertmanager", url=alertmanager,
                                        resend_seconds=1.0, resolved_for_seconds=2)}
    rule = Rule.model_validate({"name": "toxic-share", "severity": "critical",
                                "cooldown_seconds": 0, "actions": [name],
                                "when": {"kind": "rate", "signal": "toxic", "above": 0.05,
                                         "window_records": 100, "min_records": 100}})
    engine = RuleEngine([rule], actions)
    box = Outbox(tmp_path / "outbox.sqlite3")
    worker = DeliveryWorker(box, actions, OutboxSettings(poll_seconds=0.05),
                            "http://driftwatch.test/metrics")
    segments = {("chat-7b", "v3", "stable", ""): np.arange(0, 100),
                ("chat-7b", "v4", "canary", ""): np.arange(100, 200)}

    def batch(toxic_share: float) -> None:
        toxic = (np.arange(200) % 100 < toxic_share * 100).astype(float)
        decisions = engine.evaluate(Observation(time.time(), segments, {"toxic": toxic},
                                                np.zeros(200)))
        box.put(decisions, actions)

    firing = lambda: [n for n in received if n["status"] == "firing"]  # noqa: E731
    worker.start()
    try:
        for _ in range(10):  # the condition holds batch after batch
            batch(0.2)
            time.sleep(0.3)
        wait_for(lambda: len(firing()) == 1, 30, "the firing notification")
        [notice] = firing()
        assert notice["groupLabels"] == {"alertname": "toxic-share", "model": "chat-7b"}
        assert sorted(a["labels"]["model_version"] for a in notice["alerts"]) == ["v3", "v4"]
        time.sleep(3)  # three more group intervals: no second page for the same incident
        assert len(firing()) == 1
        batch(0.0)  # a clean window: the rule clears on both segments
        wait_for(lambda: any(n["status"] == "resolved" for n in received), 30,
                 "the resolved notification")
        [resolved] = [n for n in received if n["status"] == "resolved"]
        assert len(resolved["alerts"]) == 2 and len(firing()) == 1
    finally:
        worker.stop(timeout_s=15)
        box.close()
