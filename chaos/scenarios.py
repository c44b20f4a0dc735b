"""Failure scenarios against the real daemon (a process), a real Tansu broker and a real webhook
receiver on loopback. Each is reproducible from its seed, returns its figures and the checks
that must hold (at-least-once scoring, exact dead letters, no lost or re-identified decision,
bounded memory), and is what the tests run, with smaller sizes where a test needs them."""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chaos.hostile import SCORED, hostile_messages
from chaos.parts import (
    Daemon,
    committed,
    produce,
    read_topic,
    wait_for,
    write_config,
)
from monitor.local import traffic
from monitor.local.bench_workers import drift_armed
from monitor.local.broker import LocalBroker, free_port
from monitor.local.receiver import WebhookReceiver

SECRET_ENV = "DRIFTWATCH_CHAOS_WEBHOOK_SECRET"
_MIB = 1 << 20
T0 = traffic.FIXED_START_MS  # replayed event times start here


@dataclass(frozen=True)
class Report:
    """A scenario's figures and the checks that must hold; ok when all of them do."""

    scenario: str
    figures: dict[str, float | int | str]
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(self.checks.values())


@dataclass
class _Stack:
    workdir: Path
    broker: LocalBroker
    receiver: WebhookReceiver
    daemons: list[Daemon] = field(default_factory=list)

    def daemon(self, config: Path, port: int) -> Daemon:
        d = Daemon(config, port, self.workdir / f"daemon-{len(self.daemons)}.log")
        self.daemons.append(d)
        return d


@contextmanager
def _stack(workdir: Path) -> Iterator[_Stack]:
    """A broker and a signing webhook receiver; every daemon started is killed on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    os.environ[SECRET_ENV] = secret  # daemons started from here read it from the environment
    receiver = WebhookReceiver(secret)
    try:
        with LocalBroker(log_file=workdir / "tansu.log") as broker:
            stack = _Stack(workdir, broker, receiver)
            try:
                yield stack
            finally:
                for d in stack.daemons:
                    d.kill()
    finally:
        receiver.close()


def _hook(receiver: WebhookReceiver, timeout_s: float = 10.0) -> dict[str, object]:
    return {"hook": {"type": "webhook", "url": receiver.url, "secret_env": SECRET_ENV,
                     "timeout_seconds": timeout_s}}


def _error_rule(cooldown_s: float) -> list[dict[str, object]]:
    # Event time advances ~100 ms a record: one decision per segment per cooldown of it.
    return [{"name": "errors", "cooldown_seconds": cooldown_s, "actions": ["hook"],
             "when": {"kind": "rate", "signal": "error", "above": 0.2,
                      "window_records": 200, "min_records": 100}}]


_FINAL = frozenset({"delivered", "failed", "expired", "disabled"})  # a delivery's end states


def _outbox_deliveries(outbox: Path) -> tuple[set[str], set[str]]:
    """(ids of decisions with a webhook to send, the states of their deliveries)."""
    db = sqlite3.connect(outbox)
    try:
        events = {row[0] for row in db.execute("SELECT DISTINCT event_id FROM deliveries")}
        states = {row[0] for row in db.execute("SELECT state FROM deliveries")}
    finally:
        db.close()
    return events, states


def _lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


@dataclass(frozen=True)
class _AuditedRun:
    """A topic of `messages` and a config that audits every scoring and acts through `hook`."""

    topic: str
    dlq: str
    group: str
    ends: dict[int, int]
    audit: Path
    outbox: Path
    port: int
    config: Path


def _audited_run(stack: _Stack, name: str, messages: list[bytes], partitions: int,
                 max_request_size: int = _MIB) -> _AuditedRun:
    topic, dlq, group = f"chaos-{name}", f"chaos-{name}-dlq", f"chaos-{name}"
    stack.broker.create_topics([(topic, partitions), (dlq, 1)])
    ends = produce(stack.broker.bootstrap, topic,
                   ((i % partitions, m, None) for i, m in enumerate(messages)),
                   max_request_size=max_request_size)
    audit, outbox = stack.workdir / "audit.jsonl", stack.workdir / "outbox.sqlite3"
    port = free_port()
    config = write_config(
        stack.workdir / "dw.yaml", stack.broker.bootstrap, port,
        kafka={"topic": topic, "group_id": group, "dead_letter_topic": dlq,
               "max_poll_records": 500},
        batch={"max_records": 200}, audit_log=str(audit), metrics={"labels": ["model"]},
        actions=_hook(stack.receiver), rules=_error_rule(60),
        outbox={"path": str(outbox), "backoff_initial_seconds": 0.1,
                "backoff_max_seconds": 0.5},
        checkpoint={"interval_seconds": 1},
    )
    return _AuditedRun(topic, dlq, group, ends, audit, outbox, port, config)


def _kill_mid_stream(stack: _Stack, run: _AuditedRun, kills: int, rng: random.Random,
                     most: int) -> list[int]:
    """Start the daemon and kill -9 it `kills` times, each time 500 to `most` scorings into
    its run; return the audit lines at each kill."""
    killed_at: list[int] = []
    for _ in range(kills):
        # Counted before the start: a fast daemon can score the rest of the stream between
        # its start and the test seeing it ready, and a target counted then is never reached.
        target = _lines(run.audit) + rng.randrange(500, max(501, most))
        daemon = stack.daemon(run.config, run.port)
        daemon.wait_ready(60)
        daemon.wait_until(lambda t=target: _lines(run.audit) > t, 120, "the run to be mid-stream")
        daemon.kill()  # SIGKILL: no drain, no commit, no goodbye
        killed_at.append(_lines(run.audit))
    return killed_at


def _finish(stack: _Stack, run: _AuditedRun, last: Daemon, partitions: int, letters: int
            ) -> tuple[bool, list[str], list]:
    """Let the last daemon commit to the end and drain its outbox, stop it: (exited cleanly,
    request_ids scored in order, the dead letters)."""
    last.wait_until(lambda: committed(stack.broker.bootstrap, run.group, run.topic, partitions)
                    == run.ends, 300, "the last run to commit to the end")
    # Committed to the end: every decision is in the outbox. Drained is read from the
    # outbox itself: the depth gauge is refreshed once a delivery pass, so it can still say
    # 0 from a pass before the last batch's decisions went in.
    last.wait_until(lambda: not _outbox_deliveries(run.outbox)[1] - _FINAL, 120,
                    "the outbox to drain")
    clean_exit = last.terminate() == 0
    return clean_exit, audited(run.audit), read_topic(stack.broker.bootstrap, run.dlq, 1, letters)


def audited(path: Path) -> list[str]:
    """The request ids of an audit log, in order. A line that a kill -9 cut short (the audit
    stage ends it before writing on) is skipped: its batch was not committed, so its records
    were scored again, and audited whole, by the next run."""
    ids = []
    for line in path.read_text().splitlines():
        try:
            ids.append(json.loads(line)["request_id"])
        except json.JSONDecodeError:
            continue
    return ids


# -- kill -9 ---------------------------------------------------------------------------------


def kill9(workdir: Path, records: int = 50_000, kills: int = 3, invalid: int = 500,
          partitions: int = 3, seed: int = 11) -> Report:
    """kill -9 the daemon at random points of a run, `kills` times, then let it finish: every
    request_id is scored at least once, the dead letters are exactly the invalid messages, and
    every decision with a webhook reaches a flaky receiver under one webhook-id."""
    started = time.monotonic()
    rng = random.Random(seed)
    mix = traffic.TrafficMix(canary_share=0.0, error_rate=0.3)
    wire = list(traffic.wire_records(records, seed=seed, start_ms=T0, mix=mix))
    bad = traffic.malformed_payloads(invalid, seed=seed)
    messages = [traffic.encode(r) for r in wire]
    for payload, _ in bad:  # invalid messages at random places; valid ones in event-time order
        messages.insert(rng.randrange(len(messages)), payload)
    with _stack(workdir) as stack:
        run = _audited_run(stack, "kill9", messages, partitions)
        stack.receiver.script = [(500, {}), ("reset", {})] * 20  # flaky as well
        killed_at = _kill_mid_stream(stack, run, kills, rng, min(8_000, records // 6))
        last = stack.daemon(run.config, run.port)
        last.wait_ready(60)
        clean_exit, scored, dead = _finish(stack, run, last, partitions, len(bad))
        events, states = _outbox_deliveries(run.outbox)
        got = stack.receiver.ids()
        invalid_set = {m for m, _ in bad}
        figures: dict[str, float | int | str] = {
            "messages": len(messages), "invalid messages": len(bad), "kills": kills,
            "records scored at kills": ", ".join(f"{n:,}" for n in killed_at),
            "scorings": len(scored), "scored twice or more": len(scored) - len(set(scored)),
            "dead letters": len(dead), "decisions with a webhook": len(events),
            "webhook requests": len(got), "distinct webhook-ids": len(set(got)),
            "requests cut off by a kill": stack.receiver.incomplete,
            "seconds": round(time.monotonic() - started, 1),
        }
        checks = {
            "every request_id scored at least once": set(scored) == {r["request_id"]
                                                                     for r in wire},
            "dead letters are exactly the invalid messages":
                {letter.value for letter in dead} == invalid_set,
            "no decision lost or invented (receiver = outbox)": set(got) == events,
            "every delivery delivered": states <= {"delivered"} and bool(events),
            "every request signed": all(r.verified for r in stack.receiver.received),
            "the last run exited cleanly": clean_exit,
        }
    return Report("kill9", figures, checks)


# -- broker outage ---------------------------------------------------------------------------


def broker_outage(workdir: Path, down_s: float = 30.0, before: int = 500, after: int = 300,
                  seed: int = 101) -> Report:
    """Stop the broker for `down_s` mid-run: /metrics keeps answering, /readyz says not ready,
    the daemon reconnects by itself and scores what arrives after. Tansu runs memory-only, so
    the restarted broker is empty: the topic is created again and the rest produced then."""
    workdir.mkdir(parents=True, exist_ok=True)
    topic, broker_port, port = "chaos-outage", free_port(), free_port()

    def payloads(n: int, s: int) -> list[bytes]:
        return [traffic.encode(r) for r in traffic.wire_records(n, seed=s,
                                                                start_ms=T0)]

    first = LocalBroker(port=broker_port, log_file=workdir / "tansu-1.log").start()
    daemon: Daemon | None = None
    try:
        first.create_topics([(topic, 2)])
        produce(first.bootstrap, topic, ((i % 2, p, None)
                                         for i, p in enumerate(payloads(before, seed))))
        config = write_config(workdir / "dw.yaml", first.bootstrap, port,
                              kafka={"topic": topic, "group_id": "chaos-outage"})
        daemon = Daemon(config, port, workdir / "daemon.log")
        daemon.wait_ready(60)
        daemon.wait_until(lambda: daemon.metrics().sum(  # type: ignore[union-attr]
            "driftwatch_records_total", outcome="scored") == before, 60, "the first part")
        first.stop()
        down_until = time.monotonic() + down_s
        polls = answered = not_ready = 0
        while time.monotonic() < down_until:
            daemon.check_alive()
            polls += 1
            answered += (daemon.get("/metrics").status_code == 200
                         and daemon.get("/healthz").status_code == 200)
            not_ready += daemon.get("/readyz").status_code == 503
            time.sleep(1)
        with LocalBroker(port=broker_port, log_file=workdir / "tansu-2.log") as second:
            back = time.monotonic()
            second.create_topics([(topic, 2)])
            produce(second.bootstrap, topic, ((i % 2, p, None)
                                              for i, p in enumerate(payloads(after, seed + 1))))
            wait_for(daemon.ready, 90, "the daemon to be ready again")
            ready_s = time.monotonic() - back
            daemon.wait_until(lambda: daemon.metrics().sum(  # type: ignore[union-attr]
                "driftwatch_records_total", outcome="scored") >= before + after, 90,
                "the records produced after the restart")
            scored_s = time.monotonic() - back
            time.sleep(1)  # anything scored twice would show by now
            scored = daemon.metrics().sum("driftwatch_records_total", outcome="scored")
            clean_exit = daemon.terminate() == 0
    finally:
        first.stop()
        if daemon is not None:
            daemon.kill()
    figures: dict[str, float | int | str] = {
        "outage seconds": down_s, "probes during the outage": polls,
        "/metrics and /healthz answered": answered, "/readyz said not ready": not_ready,
        "seconds to ready after the restart": round(ready_s, 1),
        "seconds to score what came after": round(scored_s, 1),
        "records scored": int(scored),
    }
    checks = {
        "/metrics answered all through the outage": answered == polls,
        "not ready for (nearly) the whole outage": not_ready >= polls - 2,
        "every record before and after scored, once": scored == before + after,
        "exited cleanly": clean_exit,
    }
    return Report("broker-outage", figures, checks)


# -- webhook outage --------------------------------------------------------------------------


def webhook_outage(workdir: Path, outage_s: float = 60.0, records: int = 3_000,
                   seed: int = 31) -> Report:
    """The webhook receiver answers 500, hangs and resets connections for `outage_s`: the
    decisions wait in the outbox (its depth metric rises), retries continue under the same
    webhook-id, and once the receiver is back every one is delivered and the depth falls to 0."""
    with _stack(workdir) as stack:
        topic, group = "chaos-webhook", "chaos-webhook"
        stack.broker.create_topics([(topic, 2)])
        outbox, port = workdir / "outbox.sqlite3", free_port()
        stack.receiver.hang_s = 3.0  # beyond the webhook timeout below
        config = write_config(
            workdir / "dw.yaml", stack.broker.bootstrap, port,
            kafka={"topic": topic, "group_id": group}, metrics={"labels": ["model"]},
            actions=_hook(stack.receiver, timeout_s=2.0), rules=_error_rule(5),
            outbox={"path": str(outbox), "backoff_initial_seconds": 0.5,
                    "backoff_max_seconds": 5.0},
        )
        daemon = stack.daemon(config, port)
        daemon.wait_ready(60)
        stack.receiver.outage(outage_s)
        outage_end = time.monotonic() + outage_s
        mix = traffic.TrafficMix(canary_share=0.0, error_rate=0.3)
        produce(stack.broker.bootstrap, topic, (
            (i % 2, traffic.encode(r), None) for i, r in
            enumerate(traffic.wire_records(records, seed=seed, start_ms=T0, mix=mix))))
        depths: list[tuple[float, float]] = []
        while time.monotonic() < outage_end:
            depths.append((time.monotonic(), daemon.metrics().sum("driftwatch_outbox_depth")))
            time.sleep(0.5)
        during = [r for r in stack.receiver.received if r.reply != 204]
        daemon.wait_until(lambda: not _outbox_deliveries(outbox)[1] - _FINAL, 60,
                          "the outbox to drain after the outage")
        drained_s = time.monotonic() - outage_end
        # The gauge follows the outbox at the delivery worker's next pass (poll_seconds).
        final_depth = daemon.metrics().sum("driftwatch_outbox_depth")
        settle = time.monotonic() + 10
        while final_depth and time.monotonic() < settle:
            time.sleep(0.2)
            final_depth = daemon.metrics().sum("driftwatch_outbox_depth")
        clean_exit = daemon.terminate() == 0
        events, states = _outbox_deliveries(outbox)
        got = stack.receiver.ids()
        delivered = [r for r in stack.receiver.received if r.reply == 204]
        peak = max((d for _, d in depths), default=0.0)
        # Retried all along: an endpoint gets one delivery at a time, so how many attempts a
        # decision gets depends on how many decisions wait (a rule re-fires at batch ends);
        # the gaps do not.
        times = sorted(r.at for r in during)
        longest_gap = max((b - a for a, b in itertools.pairwise([*times, outage_end])),
                          default=outage_s)
        figures: dict[str, float | int | str] = {
            "outage seconds": outage_s, "decisions with a webhook": len(events),
            "failed attempts during the outage": len(during),
            "longest gap between failed attempts (s)": round(longest_gap, 1),
            "of which 500 / hang / reset": " / ".join(
                str(sum(r.reply == kind for r in during)) for kind in (500, "hang", "reset")),
            "peak outbox depth": int(peak),
            "outbox depth when the outage ended": int(depths[-1][1]) if depths else 0,
            "seconds to drain after the outage": round(drained_s, 1),
            "deliveries accepted": len(delivered),
            "distinct webhook-ids": len(set(got)),
        }
        checks = {
            "the outbox depth rose during the outage": peak >= 1,
            "the outbox depth fell to 0 after": final_depth == 0,
            "every decision delivered once accepted": states == {"delivered"}
                and len(delivered) == len(events),
            "retries carry the decision's one webhook-id": set(got) == events,
            "every decision failed during the outage": {
                r.headers.get("webhook-id", "") for r in during} == events,
            "retried all along (no gap over 10 s)": longest_gap <= 10.0,
            "every request signed": all(r.verified for r in stack.receiver.received),
            "all three failure kinds were retried": {500, "hang", "reset"}
                <= {r.reply for r in during},
            "exited cleanly": clean_exit,
        }
    return Report("webhook-outage", figures, checks)


# -- soak ------------------------------------------------------------------------------------


def soak(workdir: Path, records: int = 200_000, warmup_share: float = 0.25,
         bound_mib: float = 150.0, seed: int = 7, sample_s: float = 1.0,
         bootstraps: int | None = None, reference_records: int = 300) -> Report:
    """`records` through the CPU model path (every scorer, drift, rules, checkpoints; the
    overload sampler picks what the models see) with the daemon's resident memory sampled.
    After warm-up (the first `warmup_share` of the records, and until every segment's drift
    detectors are calibrated and testing: the embedding cache and detector windows fill there,
    and a calibration's transient memory is not growth) RSS must stay within `bound_mib` of its
    value at the end of warm-up. `bootstraps` (the drift calibration's; default: the product's)
    and `reference_records` (each segment's warm-up reference): fewer arm the detectors
    sooner, so a shorter run still measures after warm-up."""
    started = time.monotonic()
    embedding = {} if bootstraps is None else {"n_bootstraps": bootstraps}
    with _stack(workdir) as stack:
        topic, group = "chaos-soak", "chaos-soak"
        stack.broker.create_topics([(topic, 4)])
        port = free_port()
        config = write_config(
            workdir / "dw.yaml", stack.broker.bootstrap, port,
            kafka={"topic": topic, "group_id": group}, metrics={"labels": ["model"]},
            scorers=["latency", "tokens", "cost", "status", "length", "toxicity",
                     "groundedness", "sanity"],
            scoring={"embedding": {"cache_size": 5_000},
                     "overload": {"max_lag": 500, "min_fraction": 0.01}},
            # Both segments arm (warm-up reference, calibration) within the warm-up share.
            drift={"enabled": True, "reference": {"warmup_records": reference_records,
                                                  "store": str(workdir / "references")},
                   "embedding": embedding},
            actions=_hook(stack.receiver), rules=_error_rule(600),
            outbox={"path": str(workdir / "outbox.sqlite3")},
            checkpoint={"interval_seconds": 5},
        )
        daemon = stack.daemon(config, port)
        daemon.wait_ready(120)
        sent = [0]

        def producer() -> None:  # in chunks, so the traffic never sits in memory whole
            mix = traffic.TrafficMix(error_rate=0.02)
            stream = traffic.wire_records(records, seed=seed, start_ms=T0, mix=mix)
            while sent[0] < records:
                chunk = [traffic.encode(next(stream))
                         for _ in range(min(10_000, records - sent[0]))]
                produce(stack.broker.bootstrap, topic,
                        ((i % 4, p, None) for i, p in enumerate(chunk)))
                sent[0] += len(chunk)

        thread = threading.Thread(target=producer, name="chaos-soak-producer", daemon=True)
        thread.start()
        samples: list[tuple[float, float]] = []  # (records scored, RSS MiB)
        scored = 0.0
        warm_from: float | None = None  # records scored when warm-up ended
        deadline = time.monotonic() + 3_600
        while scored < records and time.monotonic() < deadline:
            daemon.check_alive()
            now = daemon.metrics()
            scored = now.sum("driftwatch_records_total", outcome="scored")
            if warm_from is None and scored >= warmup_share * records and drift_armed(now.samples):
                warm_from = scored
            samples.append((scored, daemon.rss_bytes() / _MIB))
            time.sleep(sample_s)
        thread.join(timeout=60)
        m = daemon.metrics()
        model_scored = m.sum("driftwatch_model_scored_records_total")
        checkpoints = m.sum("driftwatch_checkpoints_total", outcome="written")
        clean_exit = daemon.terminate(timeout_s=60) == 0
    seconds = time.monotonic() - started
    (workdir / "rss.csv").write_text("records_scored,rss_mib\n" + "".join(
        f"{n:.0f},{rss:.1f}\n" for n, rss in samples))
    warm_end = float("inf") if warm_from is None else warm_from
    warm = [rss for n, rss in samples if n >= warm_end]
    at_warm = warm[0] if warm else float("nan")
    after = np.array([(n, rss) for n, rss in samples if n >= warm_end])
    slope = (float(np.polyfit(after[:, 0], after[:, 1], 1)[0]) * 100_000
             if len(after) >= 3 else float("nan"))
    figures: dict[str, float | int | str] = {
        "records scored": int(scored), "seconds": round(seconds, 1),
        "records per second": round(scored / seconds, 0),
        "model-scored (sampled under lag)": int(model_scored),
        "checkpoints written": int(checkpoints),
        "RSS at start (MiB)": round(samples[0][1], 1) if samples else 0.0,
        "warm-up ended at (records)": -1 if warm_from is None else int(warm_from),
        "RSS after warm-up (MiB)": round(at_warm, 1),
        "RSS peak after warm-up (MiB)": round(max(warm), 1) if warm else 0.0,
        "RSS at the end (MiB)": round(samples[-1][1], 1) if samples else 0.0,
        "RSS growth after warm-up (MiB)": round(max(warm) - at_warm, 1) if warm else 0.0,
        "RSS trend after warm-up (MiB per 100k records)": round(slope, 1),
        "bound (MiB)": bound_mib,
    }
    checks = {
        "every record scored": scored >= records,
        f"RSS within {bound_mib:g} MiB of its post-warm-up value":
            bool(warm) and max(warm) - at_warm <= bound_mib,
        "exited cleanly": clean_exit,
    }
    return Report("soak", figures, checks)


# -- hostile input, kill -9 and a frozen broker ---------------------------------------------


def hostile(workdir: Path, records: int = 20_000, kills: int = 1, freeze_s: float = 20.0,
            partitions: int = 3, copies: int = 3, seed: int = 13) -> Report:
    """Valid traffic with hostile messages of every kind that once stopped the monitor
    (chaos.hostile), a flaky webhook receiver, kill -9 mid-run and the broker frozen
    (SIGSTOP) for `freeze_s`: every valid record is scored, each hostile message gets its
    reason, readiness drops within seconds of the freeze, every decision is delivered, and
    the daemon never dies on its own."""
    started = time.monotonic()
    rng = random.Random(seed)
    mix = traffic.TrafficMix(canary_share=0.0, error_rate=0.3)
    wire = list(traffic.wire_records(records, seed=seed, start_ms=T0, mix=mix))
    bad = hostile_messages(copies, seed)
    messages = [traffic.encode(r) for r in wire]
    for h in bad:
        messages.insert(rng.randrange(len(messages)), h.payload)
    expected_scored = {r["request_id"] for r in wire} | {h.request_id for h in bad
                                                         if h.request_id}
    expected_letters = Counter((h.outcome, len(h.payload)) for h in bad if h.outcome != SCORED)
    with _stack(workdir) as stack:
        run = _audited_run(stack, "hostile", messages, partitions, max_request_size=4 * _MIB)
        stack.receiver.script = [(500, {}), ("reset", {}), (503, {"Retry-After": "1"})] * 10
        _kill_mid_stream(stack, run, kills, rng, min(5_000, records // 5))
        last = stack.daemon(run.config, run.port)
        last.wait_ready(60)
        last.wait_until(lambda: _lines(run.audit) > len(expected_scored) // 2, 300,
                        "half the records")
        stack.broker.freeze()
        frozen = time.monotonic()
        probes = not_ready = alive = 0
        not_ready_after: float | None = None
        try:
            while time.monotonic() - frozen < freeze_s:
                last.check_alive()
                probes += 1
                alive += last.get("/healthz").status_code == 200
                if last.get("/readyz").status_code == 503:
                    not_ready += 1
                    if not_ready_after is None:
                        not_ready_after = time.monotonic() - frozen
                time.sleep(1)
        finally:
            stack.broker.thaw()
        thawed = time.monotonic()
        wait_for(last.ready, 90, "the daemon to be ready after the thaw")
        ready_s = time.monotonic() - thawed
        clean_exit, scored, dead = _finish(stack, run, last, partitions,
                                           sum(expected_letters.values()))
        headers = [dict(x.headers) for x in dead]
        letters = Counter((h["reason"].decode(), int(h.get("original_value_bytes", b"0"))
                           or len(x.value)) for h, x in zip(headers, dead, strict=True))
        truncated = [len(x.value) for h, x in zip(headers, dead, strict=True)
                     if h.get("truncated") == b"true"]
        events, states = _outbox_deliveries(run.outbox)
        got = stack.receiver.ids()
        logs = "".join(d.log.read_text() for d in stack.daemons)
        figures: dict[str, float | int | str] = {
            "messages": len(messages), "hostile messages": len(bad),
            "hostile kinds": len({h.kind for h in bad}), "kills": kills,
            "broker frozen (s)": freeze_s, "probes while frozen": probes,
            "seconds to not-ready after the freeze": round(not_ready_after or -1.0, 1),
            "/readyz said not ready": not_ready, "/healthz answered": alive,
            "seconds to ready after the thaw": round(ready_s, 1),
            "scorings": len(scored), "scored twice or more": len(scored) - len(set(scored)),
            "dead letters": len(dead),
            "of which written again after a kill": len(dead) - sum(expected_letters.values()),
            "dead letters written as a prefix": len(truncated),
            "largest dead letter (bytes)": max((len(x.value) for x in dead), default=0),
            "decisions with a webhook": len(events), "webhook requests": len(got),
            "seconds": round(time.monotonic() - started, 1),
        }
        checks = {
            "every valid record scored at least once": set(scored) == expected_scored,
            # At least once: a kill re-reads what it had not committed, dead letters included.
            "each hostile message dead-lettered with its reason":
                letters.keys() == expected_letters.keys()
                and all(letters[k] >= n for k, n in expected_letters.items()),
            "dead letters over 1 MiB written as a prefix under 1 MB": bool(truncated)
                and all(x.value is not None and len(x.value) < 1_000_000 for x in dead)
                and len(truncated) == sum(n for (_, size), n in letters.items()
                                          if size >= 1_000_000),
            "not ready within 10 s of the freeze": not_ready_after is not None
                and not_ready_after <= 10,
            "/healthz answered all through the freeze": alive == probes,
            "no decision lost or invented (receiver = outbox)": set(got) == events,
            "every delivery delivered": states <= {"delivered"} and bool(events),
            "every request signed": all(r.verified for r in stack.receiver.received),
            "no crash, abort or poll-timeout eviction": not any(
                s in logs for s in ("Traceback", "terminate called", "poll timeout has expired")),
            "the last run exited cleanly": clean_exit,
        }
    return Report("hostile", figures, checks)


SCENARIOS = {"kill9": kill9, "broker-outage": broker_outage, "webhook-outage": webhook_outage,
             "soak": soak, "hostile": hostile}
