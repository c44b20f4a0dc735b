"""The two-stage topology on a real broker: scoring processes write to the scored topic,
deciding processes own its partitions (and the segments in them), and together they decide
what one `driftwatch backtest` of the same stream decides, also when a deciding process is
killed with SIGKILL and its segments move to the other one."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import msgspec
import pytest

from consumers.settings import KafkaSettings
from monitor.acting.outbox import Outbox
from monitor.app.backtest import backtest
from monitor.app.worker_count import input_partitions
from monitor.config import load_offline_config
from monitor.local import traffic
from monitor.pipeline.scored import FORMAT, decode, encode
from tests.support import (
    committed,
    free_port,
    free_ports,
    produce,
    read_topic,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.broker

MODELS = ("m-a", "m-b", "m-c", "m-d", "m-e", "m-f")
RULES = [
    {"name": "error-share", "severity": "critical", "event_type": "retrain.requested",
     "when": {"kind": "rate", "signal": "error", "above": 0.2, "window_records": 60,
              "min_records": 30}},
    # Judged against each segment's reference (its first 100 records): a new owner that
    # started cold would take its reference from the burst and decide differently.
    {"name": "error-shift", "when": {"kind": "rate", "signal": "error",
                                     "above_reference_by": 0.15, "reference_records": 100,
                                     "ert": 1_000}},
]


def _phase(n: int, errors: float, seed: int, start_ms: int) -> list[dict[str, object]]:
    mix = traffic.TrafficMix(canary_share=0.2, error_rate=errors, models=MODELS)
    return list(traffic.wire_records(n, seed=seed, start_ms=start_ms, mix=mix))


def _stream() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Clean, then an error burst (phase one); clean again (phase two)."""
    first = _phase(900, 0.0, 71, traffic.FIXED_START_MS)
    first += _phase(900, 0.5, 72, int(max(r["timestamp"] for r in first)) + 1_000)  # type: ignore[arg-type, call-overload]
    second = _phase(1_200, 0.0, 73, int(max(r["timestamp"] for r in first)) + 1_000)  # type: ignore[arg-type, call-overload]
    return first, second


def _key(rule: str, event_type: str, status: str, segment: dict[str, str]
         ) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
    return rule, event_type, status, tuple(sorted(segment.items()))


def _scored(bootstrap: str, topic: str, expected: int) -> tuple[list[str], dict[int, int]]:
    """The scored topic's record ids and each partition's end (read: Tansu's ListOffsets
    answers the last batch's base offset, not the high watermark)."""
    messages = read_topic(bootstrap, topic, 4, expected, weight=lambda m: len(decode(m.value)))
    ends: dict[int, int] = {}
    for m in messages:
        ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
    return [s.request_id for m in messages for s in decode(m.value)], ends


def _decided(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The decide group's committed offsets, of the partitions that have records."""
    return {p: o for p, o in committed(bootstrap, group, topic, 4).items() if o is not None}


def _decisions(path: Path) -> dict[str, tuple[object, ...]]:
    box = Outbox(path)
    try:
        return {e.id: (_key(e.decision.rule, e.decision.event_type, e.decision.status,
                                  e.decision.segment), e.created) for e in box.recent(10_000)}
    finally:
        box.close()


def test_scoring_and_deciding_processes_decide_what_the_backtest_decides(
        broker, names, daemons, tmp_path: Path) -> None:
    topic, scored, group = names("split-in"), names("split-scored"), names("split")
    dlq = names("split-dlq")
    broker.create_topics([(topic, 6), (scored, 4), (dlq, 1)])
    first, second = _stream()
    shared = tmp_path / "shared"  # the decide stage's checkpoints: every instance reaches it

    def config(name: str) -> tuple[Path, int]:
        port = free_port()
        return write_config(
            tmp_path / f"{name}.yaml", broker.bootstrap, port,
            kafka={"topic": topic, "group_id": group, "scored_topic": scored,
                   "dead_letter_topic": dlq},
            metrics={"labels": ["model"]}, rules=RULES,
            canary={"enabled": True, "hard_gates": ["error"], "soft_gates": [],
                    "min_records": 20},
            outbox={"path": str(tmp_path / f"{name}.outbox")},
            checkpoint={"path": str(shared / "checkpoint.bin"), "interval_seconds": 1},
        ), port

    # What one process reading the stream in order decides.
    payloads = [traffic.encode(r) for r in first + second]
    expected = sorted(
        _key(str(e["rule"]), str(e["type"]), str(e["status"]), e["segment"])  # type: ignore[arg-type]
        for e in backtest(payloads, load_offline_config(config("backtest")[0]))
        if e["type"] != "dead_letter" and e["rule"] != "canary-gate")
    assert {(k[0], k[2]) for k in expected} >= {
        ("error-share", "firing"), ("error-share", "resolved"), ("error-shift", "firing")}
    assert len({k[3] for k in expected}) == len(MODELS)  # every segment decides something

    # Upstream keys its traffic by model: each model's records keep their order.
    def messages(records: list[dict[str, object]]):
        for r in records:
            yield MODELS.index(str(r["model"])), traffic.encode(r), str(r["model"]).encode()

    scorers = [daemons(*config(f"score-{i}"), "--stage", "score") for i in range(3)]
    deciders = [config(f"decide-{i}") for i in range(2)]
    a, b = (daemons(path, port, "--stage", "decide") for path, port in deciders)
    for d in (*scorers, a, b):
        d.wait_ready()
    ends = produce(broker.bootstrap, topic, messages(first))
    wait_for(lambda: committed(broker.bootstrap, group, topic, 6) == ends, 120,
             "the scoring processes to score and commit phase one")
    assert sum(d.metrics().sum("driftwatch_records_total", outcome="scored")
               for d in scorers) == len(first)  # each record scored once
    ids, scored_ends = _scored(broker.bootstrap, scored, len(first))
    assert sorted(ids) == sorted(str(r["request_id"]) for r in first)
    wait_for(lambda: _decided(broker.bootstrap, f"{group}-decide", scored) == scored_ends,
             120, "the deciding processes to decide and commit phase one")
    decided = [d.metrics().sum("driftwatch_records_total", outcome="decided") for d in (a, b)]
    assert sum(decided) == len(first) and min(decided) > 0  # each decided once, both busy

    # Every instance gives the same canary verdicts, for the models it owns and the rest.
    views = [d.get("/canary").json()["models"] for d in (a, b)]
    assert set(views[0]) == set(views[1]) == set(MODELS)
    for name in MODELS:
        assert {k: v for k, v in views[0][name].items() if k != "owner"} == \
            {k: v for k, v in views[1][name].items() if k != "owner"}
    assert sum(v["records"]["canary"] for v in views[0].values()) > 100

    # One owner per segment: no model's decisions come from both instances.
    owned = [{k[3] for k, _ in _decisions(tmp_path / f"decide-{i}.outbox").values()}
             for i in range(2)]
    assert owned[0] and owned[1] and not owned[0] & owned[1]

    # SIGKILL one deciding process; the other takes its partitions and state over.
    b.kill()
    ends = produce(broker.bootstrap, topic, messages(second))
    wait_for(lambda: committed(broker.bootstrap, group, topic, 6) == ends, 120,
             "the scoring processes to score and commit phase two")
    ids, scored_ends = _scored(broker.bootstrap, scored, len(first) + len(second))
    assert len(ids) == len(set(ids)) == len(first) + len(second)
    wait_for(lambda: _decided(broker.bootstrap, f"{group}-decide", scored) == scored_ends,
             120, "the surviving deciding process to decide and commit everything")
    # A scored-records message of another format version (a newer score stage, say) is refused
    # by name and dead-lettered, never misread.
    records = decode(read_topic(broker.bootstrap, scored, 4, 1)[0].value)
    newer = msgspec.msgpack.encode([FORMAT + 1, msgspec.msgpack.decode(encode(records))[1]])
    produce(broker.bootstrap, scored, [(3, newer, b"m-x")])
    [letter] = read_topic(broker.bootstrap, dlq, 1, 1, timeout_s=60)
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["reason"] == "scored_format" and letter.value == newer
    assert f"format {FORMAT + 1}; this driftwatch reads format {FORMAT} only" in \
        headers["detail"]
    # So is one whose embeddings another model made (a score stage of another
    # scoring.embedding): never compared with this stage's references.
    foreign = encode([msgspec.structs.replace(r, vectors="another-model") for r in records])
    produce(broker.bootstrap, scored, [(3, foreign, b"m-x")])
    letters = read_topic(broker.bootstrap, dlq, 1, 2, timeout_s=60)
    assert [x.value for x in letters] == [newer, foreign]
    detail = dict(letters[1].headers)["detail"].decode()
    assert "embeddings of 'another-model'; this decide stage compares 'sentence-transformers/" \
        "all-MiniLM-L6-v2'" in detail
    for d in (*scorers, a):
        assert d.terminate() == 0
    log = a.log.read_text()
    assert "resuming from the checkpoint" in log
    # One torch thread, and batches bigger than a scoring stage's (the default 4,096 records).
    assert "decide stage: torch intra-op threads: 1; batches of up to 4096 records" in log

    made = {**_decisions(tmp_path / "decide-1.outbox"), **_decisions(tmp_path / "decide-0.outbox")}
    assert sorted(k for k, _ in made.values()) == expected  # none lost, none under two ids


def test_workers_score_in_processes_of_their_own_and_a_killed_one_is_started_again(
        broker, names, daemons, tmp_path: Path) -> None:
    import os
    import signal

    import httpx

    topic, scored, group = names("workers-in"), names("workers-scored"), names("workers")
    broker.create_topics([(topic, 4), (scored, 2)])
    port = free_ports(3)  # the workers take port + 1, + 2
    config = write_config(
        tmp_path / "dw.yaml", broker.bootstrap, port,
        kafka={"topic": topic, "group_id": group, "scored_topic": scored},
        metrics={"labels": ["model"]},
        rules=[*RULES, {"name": "dead-letters", "when": {
            "kind": "rate", "signal": "dead_letter", "above": 0.1, "window_records": 200,
            "min_records": 100}}],
        outbox={"path": str(tmp_path / "outbox")},
        checkpoint={"path": str(tmp_path / "state" / "checkpoint.bin"), "interval_seconds": 1})
    # --workers auto on two CPUs (a cpuset of two) where the machine has them: two workers.
    cpus = set(sorted(os.sched_getaffinity(0))[:2])
    parent = daemons(config, port, "--workers", "auto" if len(cpus) == 2 else "2", cpus=cpus)
    parent.wait_ready()
    workers = [port + 1, port + 2]

    def metrics(p: int) -> str:
        return httpx.get(f"http://127.0.0.1:{p}/metrics", timeout=5).text

    wait_for(lambda: all(_ready(p) for p in workers), 120, "both scoring workers to be ready")
    assert all('driftwatch_stage{stage="score"} 1.0' in metrics(p) for p in workers)
    assert 'driftwatch_stage{stage="decide"} 1.0' in parent.get("/metrics").text
    first, second = _stream()
    ends = produce(broker.bootstrap, topic,
                   ((i % 4, traffic.encode(r), None) for i, r in enumerate(first)))
    wait_for(lambda: committed(broker.bootstrap, group, topic, 4) == ends, 120,
             "the workers to score and commit the first part")
    per_worker = [_sum(metrics(p), "scored") for p in workers]
    assert sum(per_worker) == len(first) and min(per_worker) > 0  # both scored a share

    # SIGKILL one worker: the parent starts it again, and nothing is left unscored.
    os.kill(_worker_pid(parent.process.pid, 1), signal.SIGKILL)
    # One message in four unreadable: dead letters, judged by the deciding process's rule.
    garbled = [b'{"request_id": "cut' if i % 4 == 3 else traffic.encode(r)
               for i, r in enumerate(second)]
    valid = [r for i, r in enumerate(second) if i % 4 != 3]
    ends = produce(broker.bootstrap, topic, ((i % 4, p, None) for i, p in enumerate(garbled)))
    wait_for(lambda: committed(broker.bootstrap, group, topic, 4) == ends, 180,
             "the workers to score and commit the rest")
    ids, _ = _scored(broker.bootstrap, scored, len(first) + len(valid))
    assert set(ids) == {str(r["request_id"]) for r in first + valid}  # none unscored
    wait_for(lambda: _ready(workers[0]), 120, "the killed worker to be started again")
    wait_for(lambda: parent.metrics().sum("driftwatch_records_total", outcome="decided")
             >= len(ids), 120, "every scored record to be decided")
    assert parent.terminate(timeout_s=90) == 0
    log = parent.log.read_text()
    assert len(cpus) < 2 or "--workers auto: 2 scoring processes (2 CPU cores" in log
    assert "scoring worker 1 exited with -9; starting it again" in log
    assert "scoring workers stopped: exit codes [0, 0]" in log
    fired = {k[0] for k, _ in _decisions(tmp_path / "outbox").values() if k[2] == "firing"}
    assert "dead-letters" in fired  # the score stage's dead letters reached the decide stage


def _ready(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _sum(text: str, outcome: str) -> float:
    from tests.support import Metrics

    return Metrics(text).sum("driftwatch_records_total", outcome=outcome)


def _worker_pid(parent: int, number: int) -> int:
    """The pid of scoring worker `number`, a child of `parent` (from /proc)."""
    for task in Path(f"/proc/{parent}/task").iterdir():
        for child in (task / "children").read_text().split():
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            if f"DRIFTWATCH_KAFKA__CLIENT_ID=driftwatch-score-{number}".encode() in environ:
                return int(child)
    raise AssertionError(f"no scoring worker {number} under pid {parent}")


def test_hostile_records_through_the_split_are_scored_once_or_dead_lettered_once(
        broker, names, daemons, tmp_path: Path) -> None:
    """A record whose scored form the producer would refuse (a 600,000-character model
    name: key and value of its message, 1.2 MB) and one whose response invents 120,000
    numbers: the first is dead-lettered at the score stage with its field named, the second
    scored with the first few numbers as evidence; every other record reaches the decide
    stage once. (Refused by the producer, the first had its batch retried and bisected, and
    each of its 59 neighbours was decided four times.)"""
    topic, scored, group = names("hostile-in"), names("hostile-scored"), names("hostile")
    dlq = names("hostile-dlq")
    broker.create_topics([(topic, 2), (scored, 2), (dlq, 1)])
    records = list(traffic.wire_records(60, seed=8, start_ms=traffic.FIXED_START_MS))
    records[10] = {**records[10], "model": "m" * 600_000}
    numbers = " ".join(str(i) for i in range(10_000, 130_000)) + "."
    records[20] = {**records[20], "response": numbers, "context": ["A short passage."]}
    ends = produce(broker.bootstrap, topic,
                   ((i % 2, traffic.encode(r), None) for i, r in enumerate(records)))
    common = {"kafka": {"topic": topic, "group_id": group, "scored_topic": scored,
                        "dead_letter_topic": dlq},
              "metrics": {"labels": ["model"]},
              "scorers": ["latency", "status", "groundedness"],
              "scoring": {"max_batch_seconds": None}}
    port, decide_port = free_port(), free_port()
    score = daemons(write_config(tmp_path / "score.yaml", broker.bootstrap, port, **common),
                    port, "--stage", "score")
    decide = daemons(write_config(tmp_path / "decide.yaml", broker.bootstrap, decide_port,
                                  **common), decide_port, "--stage", "decide")
    score.wait_ready(90)
    decide.wait_ready(90)
    wait_for(lambda: committed(broker.bootstrap, group, topic, 2) == ends, 120,
             "the score stage to finish the input")
    ids, scored_ends = _scored(broker.bootstrap, scored, 59)
    assert sorted(ids) == sorted(str(r["request_id"]) for i, r in enumerate(records) if i != 10)
    wait_for(lambda: {p: o for p, o in committed(broker.bootstrap, f"{group}-decide", scored,
                                                 2).items() if o} == scored_ends,
             120, "the decide stage to finish the scored topic")
    assert decide.metrics().sum("driftwatch_records_total", outcome="decided") == 59
    [letter] = read_topic(broker.bootstrap, dlq, 1, 1)
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["reason"] == "invalid_field" and headers["original_offset"] == "5"
    assert headers["detail"].endswith("- at `$.model`")
    big = [s for m in read_topic(broker.bootstrap, scored, 2, 59,
                                 weight=lambda m: len(decode(m.value)))
           for s in decode(m.value) if s.request_id == records[20]["request_id"]]
    assert len(big) == 1 and big[0].flags["novel_number"]
    assert big[0].novel_numbers == tuple(str(i) for i in range(10_000, 10_016))
    assert score.terminate() == 0 and decide.terminate() == 0


def test_the_input_partitions_come_from_the_broker(broker, names) -> None:
    """The most partitions among the input topics (a split request/response pair too); none
    from a broker that does not answer, within the timeout rather than kafka-python's 30 s."""
    one, request, response = names("one"), names("request"), names("response")
    broker.create_topics([(one, 3), (request, 2), (response, 5)])
    kafka = KafkaSettings(bootstrap_servers=[broker.bootstrap], topic=one)
    assert input_partitions(kafka) == 3
    split = KafkaSettings(bootstrap_servers=[broker.bootstrap], request_topic=request,
                          response_topic=response)
    assert input_partitions(split) == 5
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
        gone = KafkaSettings(bootstrap_servers=[f"127.0.0.1:{closed.getsockname()[1]}"],
                             topic=one)
        started = time.monotonic()
        assert input_partitions(gone, timeout_s=1.0) is None
        assert time.monotonic() - started < 15
