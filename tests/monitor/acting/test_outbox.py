"""The outbox: what put stores, what is due, retries, expiry, pruning, and surviving restarts."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.acting.delivery import DeliveryWorker
from monitor.acting.outbox import Outbox, OutboxError
from monitor.config.acting import AlertmanagerAction, OutboxSettings, WebhookAction
from monitor.types import Decision

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = 1_700_000_000.0

ACTIONS = {
    "hook": WebhookAction(type="webhook", url="http://127.0.0.1:9/hook"),
    "drift-only": WebhookAction(type="webhook", url="http://127.0.0.1:9/d",
                                event_types=["drift.detected"]),
    "am": AlertmanagerAction(type="alertmanager", url="http://127.0.0.1:9"),
}


def decision(status: str = "firing", at: float = NOW, rule: str = "toxic-rate",
             event_type: str = "quality.regressed", targets: tuple[str, ...] = ("hook", "am"),
             model: str = "m") -> Decision:
    return Decision(event_type=event_type, rule=rule, severity="critical", status=status,
                    segment={"model": model, "deployment": "canary"},
                    evidence={"rate": 0.12, "threshold": 0.05}, summary="toxic share 12% > 5%",
                    targets=targets, at=at, details={"examples": ["x"]})


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Outbox]:
    b = Outbox(tmp_path / "outbox.sqlite3")
    yield b
    b.close()


def test_put_stores_the_event_and_a_delivery_per_allowed_webhook_target(box: Outbox) -> None:
    d = decision(targets=("hook", "drift-only", "am"))
    [event_id] = box.put([d], ACTIONS, now=NOW)
    assert event_id.startswith("msg_") and len(event_id) == 36
    int(event_id[4:], 16)
    [event] = box.recent(10)
    assert event.id == event_id and event.created == NOW
    assert event.decision == d
    # drift-only does not take quality.regressed; the alert target has no delivery row.
    assert [(x.action, x.state, x.attempts) for x in event.deliveries] == [("hook", "pending", 0)]
    assert box.depth() == {"hook": 1, "am": 1}
    [alert] = box.alerts()
    assert alert.labels == {"alertname": "toxic-rate", "severity": "critical", "model": "m",
                            "deployment": "canary"}
    assert alert.annotations == {"summary": "toxic share 12% > 5%", "rate": "0.12",
                                 "threshold": "0.05"}
    assert (alert.starts_at, alert.ends_at, alert.dirty) == (NOW, None, True)


def test_resolved_decisions_send_no_webhook_but_end_the_alert(box: Outbox) -> None:
    box.put([decision()], ACTIONS, now=NOW)
    box.put([decision(at=NOW + 50)], ACTIONS, now=NOW + 50)  # repeated firing
    [alert] = box.alerts()
    assert alert.starts_at == NOW  # the original start is kept while active
    box.put([decision(status="resolved", at=NOW + 100)], ACTIONS, now=NOW + 100)
    [alert] = box.alerts()
    assert (alert.starts_at, alert.ends_at) == (NOW, NOW + 100)
    assert box.alerts_active() == {}
    events = box.recent(10)
    assert [e.decision.status for e in events] == ["resolved", "firing", "firing"]
    assert events[0].deliveries == ()
    # Firing again after the resolve is a new incident with a new start.
    box.put([decision(at=NOW + 200)], ACTIONS, now=NOW + 200)
    [alert] = box.alerts()
    assert (alert.starts_at, alert.ends_at) == (NOW + 200, None)


def test_one_put_is_one_transaction(box: Outbox) -> None:
    good = decision()
    bad = decision(targets=("nowhere",))
    with pytest.raises(ValueError, match="'nowhere'"):
        box.put([good, bad], ACTIONS, now=NOW)
    assert box.recent(10) == [] and box.depth() == {}


def test_due_and_retry_follow_the_next_attempt_time(box: Outbox) -> None:
    [event_id] = box.put([decision(targets=("hook",))], ACTIONS, now=NOW)
    [item] = box.due(NOW)
    assert (item.event_id, item.action, item.attempts, item.created) == (event_id, "hook", 0, NOW)
    assert box.due(NOW - 1) == []
    box.retry(event_id, "hook", NOW + 10, "HTTP 500")
    assert box.due(NOW + 9.9) == []
    [item] = box.due(NOW + 10)
    assert item.attempts == 1
    [delivery] = box.recent(1)[0].deliveries
    assert (delivery.state, delivery.next_attempt, delivery.last_error) == ("pending", NOW + 10,
                                                                           "HTTP 500")
    box.delivered(event_id, "hook", NOW + 11)
    assert box.due(NOW + 1_000) == [] and box.depth() == {}
    [delivery] = box.recent(1)[0].deliveries
    assert (delivery.state, delivery.attempts, delivery.delivered) == ("delivered", 2, NOW + 11)


def test_a_damaged_event_row_fails_its_own_delivery_and_holds_back_no_other(
        box: Outbox, caplog: pytest.LogCaptureFixture) -> None:
    """A row edited by hand (or damaged) made every pass over its lane raise: every
    delivery behind it waited for ever."""
    import sqlite3

    bad, good = box.put([decision(targets=("hook",)), decision(model="n", targets=("hook",))],
                        ACTIONS, now=NOW)
    with sqlite3.connect(box.path) as db:
        db.execute("UPDATE events SET segment = 'not json' WHERE id = ?", (bad,))
    db.close()
    [item] = box.due(NOW)
    assert item.event_id == good
    assert f"event {bad} is not as driftwatch writes it" in caplog.text
    assert box.due(NOW + 1_000) == [item]  # the damaged one is settled, not met again
    [(state, attempts, error)] = box._read(
        "SELECT state, attempts, last_error FROM deliveries WHERE event_id = ?", (bad,))
    assert (state, attempts) == ("failed", 0)
    assert error.startswith(f"{box.path}: event {bad} is not as driftwatch writes it")


def test_a_damaged_alert_row_is_dropped_and_holds_back_no_other(
        box: Outbox, caplog: pytest.LogCaptureFixture) -> None:
    import sqlite3

    box.put([decision(targets=("am",)), decision(model="n", targets=("am",))], ACTIONS,
            now=NOW)
    with sqlite3.connect(box.path) as db:
        damaged = db.execute("SELECT decision_key FROM alerts ORDER BY decision_key").fetchone()
        db.execute("UPDATE alerts SET labels = '{' WHERE decision_key = ?", damaged)
    db.close()
    [alert] = box.alerts_due(NOW + 1)
    assert alert.key != damaged[0] and [a.key for a in box.alerts()] == [alert.key]
    assert f"the alert {damaged[0]!r} of action 'am' is not as driftwatch writes it" \
        in caplog.text


def test_a_delivery_older_than_max_age_expires_without_an_attempt(
        box: Outbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTWATCH_WEBHOOK_SECRET", SECRET)
    box.put([decision(targets=("hook",))], ACTIONS, now=NOW)
    settings = OutboxSettings(max_age_seconds=60)
    worker = DeliveryWorker(box, {"hook": ACTIONS["hook"]}, settings, "http://dw")
    try:
        worker.run_once(NOW + 61)  # port 9 would refuse: an attempt would be a retry, not this
    finally:
        worker.stop()
    [delivery] = box.recent(1)[0].deliveries
    assert (delivery.state, delivery.attempts) == ("expired", 0)
    assert "max_age_seconds" in (delivery.last_error or "")
    assert box.depth() == {}


def test_each_lane_reads_its_own_deliveries_and_one_whose_action_left_is_settled(
        box: Outbox) -> None:
    drift = decision(targets=("hook", "drift-only"), event_type="drift.detected")
    [event_id] = box.put([drift], ACTIONS, now=NOW)
    assert [d.action for d in box.due(NOW, action="hook")] == ["hook"]
    assert [d.action for d in box.due(NOW, other_than=("hook",))] == ["drift-only"]
    assert box.due(NOW, other_than=("hook", "drift-only")) == []
    # The config no longer has "drift-only": no webhook lane takes it, the pass settles it.
    worker = DeliveryWorker(box, {}, OutboxSettings(), "http://dw")
    try:
        worker.run_once(NOW)
    finally:
        worker.stop()
    states = {d.action: (d.state, d.attempts) for d in box.recent(1)[0].deliveries}
    assert states == {"hook": ("failed", 0), "drift-only": ("failed", 0)}
    assert box.recent(1)[0].id == event_id


def test_prune_drops_old_settled_events_and_keeps_pending_ones(box: Outbox) -> None:
    [old_done, old_pending] = box.put([decision(targets=("hook",)),
                                       decision(targets=("hook",), model="n")], ACTIONS, now=NOW)
    [new_done] = box.put([decision(targets=("hook",), model="o")], ACTIONS, now=NOW + 100)
    box.delivered(old_done, "hook", NOW + 1)
    box.delivered(new_done, "hook", NOW + 101)
    assert box.prune(before=NOW + 50) == 1
    assert {e.id for e in box.recent(10)} == {old_pending, new_done}
    # Cooldowns do not depend on the pruned events.
    assert box.last_fired(decision().key) == NOW


def test_last_fired_is_the_newest_firing_event_time_per_key(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    a = decision(at=NOW + 30)
    box.put([decision(at=NOW), a, decision(at=NOW + 10), decision(model="n", at=NOW + 99)],
            ACTIONS, now=NOW)
    box.put([decision(status="resolved", at=NOW + 500)], ACTIONS, now=NOW)
    assert box.last_fired(a.key) == NOW + 30
    assert box.last_fired("no-such-rule|model=m") is None
    box.close()
    reopened = Outbox(tmp_path / "o.sqlite3")
    assert reopened.last_fired(a.key) == NOW + 30
    reopened.close()


@pytest.mark.slow  # starts a process or runs many examples
def test_pending_deliveries_survive_a_process_that_dies_without_closing(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    # Another process puts and exits at once: no close, no atexit, no flush by Python.
    script = (
        "import os, sys; sys.path.insert(0, sys.argv[2]);"
        "from monitor.acting.outbox import Outbox;"
        "from tests.monitor.acting.test_outbox import ACTIONS, decision;"
        "box = Outbox(__import__('pathlib').Path(sys.argv[1]));"
        "ids = box.put([decision(targets=('hook', 'am'))], ACTIONS);"
        "print(ids[0], flush=True); os._exit(0)"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path), str(Path.cwd())],
                          capture_output=True, text=True, timeout=60, check=True)
    event_id = done.stdout.strip()
    box = Outbox(path)
    try:
        [item] = box.due(now=2e9)
        assert (item.event_id, item.action, item.attempts) == (event_id, "hook", 0)
        assert item.decision.summary == "toxic share 12% > 5%"
        assert [a.ends_at for a in box.alerts()] == [None]
        assert box.last_fired(decision().key) == NOW
    finally:
        box.close()


def test_the_outbox_uses_wal_and_full_sync(box: Outbox) -> None:
    db = sqlite3.connect(box.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(OutboxError, match=r"not a usable driftwatch outbox.*outbox\.path"):
        Outbox(path)


@pytest.mark.parametrize("where", ["a directory", "under a file"])
def test_a_path_that_cannot_be_a_file_is_a_clear_error(tmp_path: Path, where: str) -> None:
    """`driftwatch events --outbox DIR` and a daemon's outbox.path both opened it: a traceback
    from sqlite3.connect, or from mkdir."""
    (tmp_path / "file").touch()
    path = tmp_path if where == "a directory" else tmp_path / "file" / "outbox.sqlite3"
    with pytest.raises(OutboxError, match=r"cannot be opened as the outbox .*outbox\.path"):
        Outbox(path)


def test_an_unknown_schema_version_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE events (id TEXT)")
    db.execute("PRAGMA user_version = 7")
    db.commit()
    db.close()
    with pytest.raises(OutboxError, match=r"schema version 7.*reads version 1"):
        Outbox(path)


def test_a_missing_outbox_is_not_created_when_reading(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="no outbox at"):
        Outbox(tmp_path / "absent.sqlite3", create=False)
    assert not (tmp_path / "absent.sqlite3").exists()


def test_writer_and_reader_threads_share_the_outbox(box: Outbox) -> None:
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(50):
                box.put([decision(targets=("hook",), model=f"m{i}")], ACTIONS, now=NOW)
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    seen = 0
    while writer.is_alive():
        for item in box.due(NOW):
            box.delivered(item.event_id, item.action, NOW)
            seen += 1
    writer.join(timeout=60)
    for item in box.due(NOW):
        box.delivered(item.event_id, item.action, NOW)
        seen += 1
    assert errors == [] and seen == 50
    assert box.depth() == {}


def test_a_decision_made_again_keeps_its_id_and_is_stored_and_sent_once(box: Outbox) -> None:
    # A replay after a crash, or the next owner of a segment, makes the same decision again.
    first = decision(targets=("hook",))
    [a] = box.put([first], ACTIONS, now=NOW)
    [b] = box.put([decision(targets=("hook",))], ACTIONS, now=NOW + 5)
    assert a == b and a.startswith("msg_") and len(a) == 36
    assert len(box.recent(10)) == 1 and len(box.due(NOW + 10)) == 1
    # Another event time, status or rule is another decision.
    later = decision(targets=("hook",), at=first.at + 1)
    [c] = box.put([later], ACTIONS, now=NOW)
    assert c != a and len(box.recent(10)) == 2


def _full(box: Outbox) -> None:
    """SQLite's own 'database or disk is full': the file may not grow past its pages."""
    with box._lock:
        pages = box._db.execute("PRAGMA page_count").fetchone()[0]
        box._db.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_fails_the_write_whole_and_the_next_write_works(box: Outbox) -> None:
    box.put([decision(at=NOW - 1)], ACTIONS, now=NOW)
    _full(box)
    big = Decision(**{**vars(decision()), "details": {"examples": ["x" * 200_000]}})
    with pytest.raises(sqlite3.OperationalError, match="full"):
        box.put([big], ACTIONS, now=NOW)
    assert not box._db.in_transaction and len(box.recent(10)) == 1  # nothing of it stored
    with box._lock:
        box._db.execute("PRAGMA max_page_count = 1000000")
    box.put([big], ACTIONS, now=NOW)
    assert len(box.recent(10)) == 2


def test_the_daemon_waits_for_a_full_outbox_instead_of_running_the_batch_again(
        box: Outbox) -> None:
    """Raised out of the pipeline, the refused write had the worker run the batch again,
    feeding its records to the detectors and rules again; now the batch waits for the disk,
    and a stop that cannot wait any longer leaves it to be read again."""
    from consumers.processor import Cancelled
    from monitor.app.daemon import Acting
    from monitor.telemetry.metrics import METRICS

    acting = Acting(box, None, dict(ACTIONS))
    failures = METRICS.OUTBOX_WRITE_FAILURES._value.get()
    big = Decision(**{**vars(decision()), "details": {"examples": ["x" * 200_000]}})
    _full(box)
    writer = threading.Thread(target=acting.put, args=([big],))
    writer.start()
    deadline = time.monotonic() + 60
    while METRICS.OUTBOX_WRITE_FAILURES._value.get() < failures + 2:  # refused, and again
        assert time.monotonic() < deadline and writer.is_alive()
        time.sleep(0.05)
    with box._lock:
        box._db.execute("PRAGMA max_page_count = 1000000")  # room again
    writer.join(60)
    assert not writer.is_alive()
    assert [e.decision.details for e in box.recent(10)] == [big.details]  # stored once

    _full(box)
    acting.cancel.set()  # a stop that can wait no longer
    with pytest.raises(Cancelled):
        acting.put([Decision(**{**vars(big), "at": NOW + 1})])
