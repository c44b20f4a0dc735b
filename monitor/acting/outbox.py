"""The durable outbox: decisions, their webhook deliveries and Alertmanager alerts in SQLite.

The pipeline writes a batch's decisions here before committing its offsets; the delivery
worker reads what is due and records each attempt, so nothing is lost across restarts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from monitor.config.acting import Action, AlertmanagerAction, WebhookAction
from monitor.types import SEGMENT_LABELS, Decision

SCHEMA_VERSION = 1
FINAL_STATES = ("delivered", "expired", "disabled", "failed")
log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE events (
    id TEXT PRIMARY KEY,            -- Standard Webhooks message id, msg_<32 hex>
    created REAL NOT NULL,          -- wall time it entered the outbox
    event_type TEXT NOT NULL, rule TEXT NOT NULL, severity TEXT NOT NULL,
    status TEXT NOT NULL, decision_key TEXT NOT NULL, at REAL NOT NULL, idx INTEGER NOT NULL,
    segment TEXT NOT NULL, evidence TEXT NOT NULL, summary TEXT NOT NULL,
    targets TEXT NOT NULL, details TEXT NOT NULL
);
CREATE INDEX events_created ON events (created);
CREATE TABLE deliveries (
    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    action TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'expired', 'disabled', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    delivered REAL,
    PRIMARY KEY (event_id, action)
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt);
CREATE TABLE alerts (
    action TEXT NOT NULL, decision_key TEXT NOT NULL,
    labels TEXT NOT NULL, annotations TEXT NOT NULL,
    starts_at REAL NOT NULL,
    ends_at REAL,                   -- NULL while firing
    changed REAL NOT NULL,          -- wall time of the last put that changed it
    dirty INTEGER NOT NULL,         -- 1 until that change has reached Alertmanager
    next_send REAL NOT NULL, last_sent REAL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (action, decision_key)
);
-- Newest firing event time per decision key: rule cooldowns survive restarts and pruning.
CREATE TABLE fired (decision_key TEXT PRIMARY KEY, at REAL NOT NULL);
-- Endpoints that answered 410 Gone; a new URL for the action is a new endpoint.
CREATE TABLE disabled_endpoints (
    action TEXT NOT NULL, url TEXT NOT NULL, since REAL NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (action, url)
);
"""


class OutboxError(RuntimeError):
    """The outbox file cannot be used (not SQLite, or another schema version)."""


@dataclass(frozen=True)
class PendingDelivery:
    """A delivery of an event to one action that is due for its next attempt."""

    event_id: str
    action: str
    attempts: int  # attempts made so far
    created: float
    decision: Decision


@dataclass(frozen=True)
class DeliveryRecord:
    """The state of one event's delivery to one action, as stored in the outbox."""

    action: str
    state: str
    attempts: int
    next_attempt: float
    last_error: str | None
    delivered: float | None


@dataclass(frozen=True)
class EventRecord:
    """A stored event: its id, when it was created, its decision and its deliveries."""

    id: str
    created: float
    decision: Decision
    deliveries: tuple[DeliveryRecord, ...]


@dataclass(frozen=True)
class StoredAlert:
    """An Alertmanager alert as stored in the outbox, with its send state."""

    action: str
    key: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None  # None while firing
    changed: float
    dirty: bool
    attempts: int


def decision_id(decision: Decision) -> str:
    """The decision's message id, derived from what it decided (incident, type, status, the
    event time of the record that decided it, and a new error class's name): the same
    decision made again, by a replay after a crash or by the next owner of its segment, has
    the same id, so receivers that dedupe on the Standard Webhooks id see it once."""
    d = decision
    text = f"{d.key}\x1f{d.event_type}\x1f{d.status}\x1f{d.at!r}"
    if "error_class" in d.details:  # new classes of one segment and batch: one decision each
        text += f"\x1f{d.details['error_class']}"
    return f"msg_{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"


def alert_labels(decision: Decision) -> dict[str, str]:
    labels = {"alertname": decision.rule, "severity": decision.severity}
    labels.update({k: decision.segment[k] for k in SEGMENT_LABELS if decision.segment.get(k)})
    return labels


def alert_annotations(decision: Decision) -> dict[str, str]:
    annotations = {"summary": decision.summary}
    annotations.update({k: f"{v:.6g}" for k, v in decision.evidence.items()})
    return annotations


class Outbox:
    """SQLite (WAL, synchronous=FULL) shared by the pipeline thread and the delivery thread.

    >>> import tempfile, pathlib
    >>> box = Outbox(pathlib.Path(tempfile.mkdtemp()) / "outbox.sqlite3")
    >>> box.depth(), box.last_fired("rule|model=m")
    ({}, None)
    >>> box.close()
    """

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise OutboxError(f"no outbox at {self.path}: check outbox.path in the config")
        if not create and self.path.is_file() and self.path.stat().st_size == 0:
            # A reader writes nothing: an empty file would have been given the schema.
            raise OutboxError(f"{self.path} is empty: no outbox was written there; check "
                              "outbox.path in the config")
        # One connection behind a lock: writes are small, and SQLite serialises them anyway.
        self._lock = threading.Lock()
        try:  # a directory, a file for a directory, a path this user may not write
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False, timeout=30)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise OutboxError(f"{self.path} cannot be opened as the outbox ({exc}): set "
                              "outbox.path to a file this user may write") from None
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise OutboxError(f"{self.path} is not a usable driftwatch outbox ({exc}); move it "
                              "aside or set outbox.path to a new file") from None
        except OutboxError:
            self._db.close()
            raise

    def _open(self) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        if version == 0 and tables == 0:
            db.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        elif version != SCHEMA_VERSION:
            raise OutboxError(
                f"{self.path} has outbox schema version {version}, this driftwatch reads "
                f"version {SCHEMA_VERSION}: use the driftwatch release that wrote it, or move "
                "the file aside (its pending deliveries will not be sent)")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            if db.in_transaction:  # left open by a COMMIT or ROLLBACK that failed
                db.execute("ROLLBACK")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")  # a full disk can fail here too
            except BaseException:
                if db.in_transaction:  # SQLite rolls back some failures itself
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- Pipeline side -------------------------------------------------------------------------

    def put(self, decisions: Sequence[Decision], actions: Mapping[str, Action],
            now: float | None = None) -> list[str]:
        """Store decisions and what each target must receive, in one transaction."""
        now = time.time() if now is None else now
        ids: list[str] = []
        for d in decisions:
            undefined = [name for name in d.targets if name not in actions]
            if undefined:
                raise ValueError(f"decision of rule {d.rule!r} targets action {undefined[0]!r}, "
                                 f"which is not defined; defined: {sorted(actions)}")
        with self._write() as db:
            for d in decisions:
                ids.append(event_id := decision_id(d))
                stored = db.execute(
                    "INSERT OR IGNORE INTO events VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (event_id, now, d.event_type, d.rule, d.severity, d.status, d.key, d.at,
                     d.index, json.dumps(d.segment), json.dumps(d.evidence), d.summary,
                     json.dumps(list(d.targets)), json.dumps(d.details, default=str)))
                if not stored.rowcount:
                    continue  # made before (a replay): stored, and its deliveries queued, then
                if d.status == "firing":
                    db.execute("INSERT INTO fired VALUES (?, ?) ON CONFLICT (decision_key) DO "
                               "UPDATE SET at = max(at, excluded.at)", (d.key, d.at))
                for name in d.targets:
                    action = actions[name]
                    if isinstance(action, WebhookAction):
                        if d.status == "firing" and (action.event_types is None
                                                     or d.event_type in action.event_types):
                            db.execute("INSERT INTO deliveries (event_id, action, state, "
                                       "next_attempt) VALUES (?, ?, 'pending', ?)",
                                       (event_id, name, now))
                    elif isinstance(action, AlertmanagerAction):
                        _upsert_alert(db, name, d, now)
        return ids

    def last_fired(self, key: str) -> float | None:
        """Event time of the newest firing decision with this Decision.key."""
        rows = self._read("SELECT at FROM fired WHERE decision_key = ?", (key,))
        return rows[0][0] if rows else None

    # -- Delivery side -------------------------------------------------------------------------

    def due(self, now: float, limit: int = 100, *, action: str | None = None,
            other_than: Sequence[str] = ()) -> list[PendingDelivery]:
        """Pending deliveries due by `now`, oldest first: of one `action`, or of any action
        but those in `other_than`."""
        where, args = "", [now]
        if action is not None:
            where, args = " AND d.action = ?", [now, action]
        elif other_than:
            where = f" AND d.action NOT IN ({', '.join('?' * len(other_than))})"
            args = [now, *other_than]
        rows = self._read(
            "SELECT d.event_id, d.action, d.attempts, e.created, " + _EVENT_COLUMNS
            + " FROM deliveries d JOIN events e ON e.id = d.event_id "
            "WHERE d.state = 'pending' AND d.next_attempt <= ?" + where
            + " ORDER BY d.next_attempt, e.created LIMIT ?", (*args, limit))
        due = []
        for r in rows:
            try:
                due.append(PendingDelivery(r[0], r[1], r[2], r[3], self._decision(r[0], r[4:])))
            except OutboxError as exc:  # one damaged row must not hold every delivery behind it
                log.error("%s; its delivery to %r is marked failed", exc, r[1])
                self.give_up(r[0], r[1], "failed", str(exc)[:500], attempted=False)
        return due

    def delivered(self, event_id: str, action: str, now: float) -> None:
        with self._write() as db:
            db.execute("UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, "
                       "delivered = ?, last_error = NULL WHERE event_id = ? AND action = ?",
                       (now, event_id, action))

    def retry(self, event_id: str, action: str, next_attempt: float, error: str) -> None:
        with self._write() as db:
            db.execute("UPDATE deliveries SET attempts = attempts + 1, next_attempt = ?, "
                       "last_error = ? WHERE event_id = ? AND action = ?",
                       (next_attempt, error, event_id, action))

    def give_up(self, event_id: str, action: str, state: str, error: str,
                attempted: bool = True) -> None:
        """Final state without delivery: expired, disabled or failed."""
        if state not in FINAL_STATES or state == "delivered":
            raise ValueError(f"give_up: state must be expired, disabled or failed, not {state!r}")
        with self._write() as db:
            db.execute("UPDATE deliveries SET state = ?, attempts = attempts + ?, "
                       "last_error = ? WHERE event_id = ? AND action = ?",
                       (state, int(attempted), error, event_id, action))

    def disable_endpoint(self, action: str, url: str, reason: str, now: float) -> None:
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO disabled_endpoints VALUES (?, ?, ?, ?)",
                       (action, url, now, reason))

    def disabled_endpoints(self) -> dict[tuple[str, str], str]:
        rows = self._read("SELECT action, url, reason FROM disabled_endpoints")
        return {(a, u): r for a, u, r in rows}

    def alerts_due(self, now: float) -> list[StoredAlert]:
        rows = self._read("SELECT " + _ALERT_COLUMNS + " FROM alerts WHERE next_send <= ? "
                          "ORDER BY action, decision_key", (now,))
        due = []
        for r in rows:
            try:
                due.append(_alert(r))
            except (ValueError, TypeError) as exc:  # one damaged row must not hold the rest
                log.error("%s: the alert %r of action %r is not as driftwatch writes it "
                          "(%s: %s); dropped", self.path, r[1], r[0], type(exc).__name__, exc)
                with self._write() as db:
                    db.execute("DELETE FROM alerts WHERE action = ? AND decision_key = ?",
                               (r[0], r[1]))
        return due

    def alert_sent(self, alert: StoredAlert, now: float, next_send: float) -> None:
        with self._write() as db:
            # A put between reading and sending may have changed the alert: keep it dirty then.
            db.execute("UPDATE alerts SET last_sent = ?, attempts = 0, last_error = NULL, "
                       "next_send = CASE WHEN changed = ? THEN ? ELSE next_send END, "
                       "dirty = CASE WHEN changed = ? THEN 0 ELSE dirty END "
                       "WHERE action = ? AND decision_key = ?",
                       (now, alert.changed, next_send, alert.changed, alert.action, alert.key))

    def alert_failed(self, alert: StoredAlert, next_send: float, error: str) -> None:
        with self._write() as db:
            db.execute("UPDATE alerts SET attempts = attempts + 1, next_send = ?, last_error = ? "
                       "WHERE action = ? AND decision_key = ?",
                       (next_send, error, alert.action, alert.key))

    def drop_alert(self, alert: StoredAlert) -> None:
        with self._write() as db:
            db.execute("DELETE FROM alerts WHERE action = ? AND decision_key = ? AND changed = ?",
                       (alert.action, alert.key, alert.changed))

    def alerts(self) -> list[StoredAlert]:
        return [_alert(r) for r in self._read("SELECT " + _ALERT_COLUMNS + " FROM alerts "
                                              "ORDER BY action, decision_key")]

    def alerts_active(self) -> dict[str, int]:
        rows = self._read("SELECT action, count(*) FROM alerts WHERE ends_at IS NULL "
                          "GROUP BY action")
        return dict(rows)

    def depth(self) -> dict[str, int]:
        """Per action: pending webhook deliveries plus alert changes not yet pushed."""
        out: dict[str, int] = {}
        rows = self._read("SELECT action, count(*) FROM deliveries WHERE state = 'pending' "
                          "GROUP BY action UNION ALL SELECT action, count(*) FROM alerts "
                          "WHERE dirty = 1 GROUP BY action")
        for action, n in rows:
            out[action] = out.get(action, 0) + n
        return out

    def recent(self, limit: int = 20) -> list[EventRecord]:
        """The newest events, newest first, each with its deliveries."""
        rows = self._read("SELECT e.id, e.created, " + _EVENT_COLUMNS + " FROM events e "
                          "ORDER BY e.created DESC, e.rowid DESC LIMIT ?", (limit,))
        out: list[EventRecord] = []
        for r in rows:
            deliveries = self._read(
                "SELECT action, state, attempts, next_attempt, last_error, delivered "
                "FROM deliveries WHERE event_id = ? ORDER BY action", (r[0],))
            out.append(EventRecord(r[0], r[1], self._decision(r[0], r[2:]),
                                   tuple(DeliveryRecord(*d) for d in deliveries)))
        return out

    def _decision(self, event_id: str, r: Sequence) -> Decision:
        """A stored decision; OutboxError naming the event where its row is not one this
        driftwatch wrote (edited by hand, damaged)."""
        try:
            return _decision(r)
        except (ValueError, TypeError) as exc:
            raise OutboxError(f"{self.path}: event {event_id} is not as driftwatch writes it "
                              f"({type(exc).__name__}: {exc})") from None

    def prune(self, before: float) -> int:
        """Drop events created before `before` whose deliveries are all settled; return count."""
        with self._write() as db:
            cur = db.execute(
                "DELETE FROM events WHERE created < ? AND NOT EXISTS (SELECT 1 FROM deliveries "
                "d WHERE d.event_id = events.id AND d.state = 'pending')", (before,))
            return cur.rowcount


_EVENT_COLUMNS = ("e.event_type, e.rule, e.severity, e.status, e.segment, e.evidence, "
                  "e.summary, e.targets, e.at, e.idx, e.details")
_ALERT_COLUMNS = ("action, decision_key, labels, annotations, starts_at, ends_at, changed, "
                  "dirty, attempts")


def _decision(r: Sequence) -> Decision:
    return Decision(event_type=r[0], rule=r[1], severity=r[2], status=r[3],
                    segment=json.loads(r[4]), evidence=json.loads(r[5]), summary=r[6],
                    targets=tuple(json.loads(r[7])), at=r[8], index=r[9],
                    details=json.loads(r[10]))


def _alert(r: Sequence) -> StoredAlert:
    return StoredAlert(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4], r[5], r[6],
                       bool(r[7]), r[8])


def _upsert_alert(db: sqlite3.Connection, action: str, d: Decision, now: float) -> None:
    # Event time can run ahead of the wall clock (skew) or far behind (lag): an alert never
    # starts or ends in the future, or Alertmanager would think it still pending/firing.
    at = min(d.at, now)
    row = db.execute("SELECT ends_at FROM alerts WHERE action = ? AND decision_key = ?",
                     (action, d.key)).fetchone()
    active = row is not None and row[0] is None
    annotations = json.dumps(alert_annotations(d))
    if d.status == "firing" and active:
        # Labels stay those of the first firing: a new label set would be another alert and
        # leave this one to linger until its endsAt.
        db.execute("UPDATE alerts SET annotations = ?, changed = ?, dirty = 1, next_send = ? "
                   "WHERE action = ? AND decision_key = ?", (annotations, now, now, action, d.key))
    elif d.status == "firing":
        db.execute("INSERT OR REPLACE INTO alerts (action, decision_key, labels, annotations, "
                   "starts_at, ends_at, changed, dirty, next_send) "
                   "VALUES (?, ?, ?, ?, ?, NULL, ?, 1, ?)",
                   (action, d.key, json.dumps(alert_labels(d)), annotations, at, now, now))
    elif active:
        db.execute("UPDATE alerts SET ends_at = max(?, starts_at), changed = ?, dirty = 1, "
                   "next_send = ?, attempts = 0 WHERE action = ? AND decision_key = ?",
                   (at, now, now, action, d.key))
    # A resolve for an alert that is not firing here has nothing to end.
