"""`driftwatch bench decide`: records/s one deciding process decides (`driftwatch run --stage
decide`: drift on prompts and responses, a rule, checkpoints, the outbox), next to a raw
kafka-python loop that reads and decodes the same scored messages, in the same run.

The decide stage is the one a split deployment cannot spread over more processes than its
scored topic has busy partitions (a segment, or a model with a canary gate, lives in one), so
its capacity per process is what sizes it against the scoring processes in front of it.

The scored records are real: HaluEval traffic scored once by the score stage's own code (the
static table, every scorer), then replayed with new request ids and event times, in messages
as the score stage writes them (a batch's records of one key, up to 256 KiB). Rounds are timed
as `bench throughput --workers` times them: the process is stopped (SIGSTOP) while a round's
messages are produced, SIGCONT starts the clock, and the round ends at the daemon's own time
of the batch that decided the last record. The raw loop reads the same number of records from
a copy of the messages, without a consumer group (assigned partitions), and decodes each one.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

import httpx
import msgspec
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from monitor.local import traffic
from monitor.local.bench_workers import (
    _MODEL_SCORERS,
    STATIC_DIR,
    _dead,
    _progress,
    _ready,
    _signal_tree,
    _stopped,
    stop_tree,
    timed_end,
    trickle_until_armed,
    wait_counted,
    wait_for,
)
from monitor.local.broker import LocalBroker, free_port
from monitor.local.figures import summary
from monitor.pipeline import scored

SCORED_TOPIC, RAW_TOPIC = "bench-decide-scored", "bench-decide-raw"
_DISTINCT = 2_000  # records scored for real; a round replays them with new ids and times
_BATCH = 500  # records a score-stage batch (its messages hold one batch's records of a key)
WARMUP_RECORDS = 300  # a segment's drift reference: its first records


def bench_decide(records: int, rounds: int, partitions: int, segments: int | None = None,
                 warmup_records: int = WARMUP_RECORDS, n_bootstraps: int = 1_000) -> int:
    """One row for the raw loop, one for the decide stage, and their ratio. `segments`: the
    records spread over that many models (each a drift segment and a key), in turn."""
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dw-bench-decide-")))
        broker = stack.enter_context(LocalBroker(log_file=work / "tansu.log"))
        broker.create_topics([(SCORED_TOPIC, partitions), (RAW_TOPIC, partitions)])
        port = free_port()
        config = _write_config(work, broker.bootstrap, port, warmup_records, n_bootstraps,
                               segments or 2)
        pool = _scored_pool(config, min(records, _DISTINCT))
        if segments is not None:
            pool = [msgspec.structs.replace(r, model=f"model-{j % segments:03d}")
                    for j, r in enumerate(pool)]
        decider = stack.enter_context(_Decider(config, port, work))
        feed = _Feed(pool, broker.bootstrap)
        decider.wait_ready()
        started = time.monotonic()
        decider.warm_up(feed, records)
        _progress(f"warmed up and drift calibrated in {time.monotonic() - started:.0f} s")
        decider.pause()
        raw: list[float] = []
        decide: list[float] = []
        for i in range(1, rounds + 1):
            start_ms = traffic.FIXED_START_MS + i * 3_600_000
            for path in ("raw", "decide") if i % 2 else ("decide", "raw"):
                if path == "raw":
                    raw.append(records / _raw_round(feed, broker.bootstrap, records, start_ms))
                else:
                    with decider.resumed(feed, start_ms - 120_000):
                        decide.append(records / decider.timed_round(feed, records, start_ms))
                _progress(f"round {i}: {path}: {(raw if path == 'raw' else decide)[-1]:,.1f} "
                          f"records/s")
    keys = len({scored.key_of(r, _KEY) for r in pool})
    print(f"bench decide: {records:,} scored records a round (HaluEval traffic scored once by "
          f"the static table, every scorer; {keys} keys over {partitions} partitions), "
          f"{rounds} timed rounds; one `driftwatch run --stage decide` with drift, a rule, "
          f"checkpoints and the outbox; median (min-max)")
    print(f"{'path':<52}{'records/s':>24}{'µs a record':>14}")
    for name, values in (("raw kafka-python loop + scored-record decoding", raw),
                         ("driftwatch run --stage decide", decide)):
        print(f"{name:<52}{summary(values):>24}{1e6 / statistics.median(values):>14,.1f}")
    pairs = [d / r for d, r in zip(decide, raw, strict=True)]
    print(f"ratio decide / raw loop: {statistics.median(decide) / statistics.median(raw):.2f}; "
          f"per pair of rounds {summary(pairs, 2)}")
    return 0


_KEY = scored.partition_key(["model"], canary=False)


def _write_config(work: Path, bootstrap: str, port: int, warmup_records: int,
                  n_bootstraps: int, segments: int) -> Path:
    config = work / "dw.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": [bootstrap], "topic": "bench-decide-input",
                  "group_id": "bench-decide", "scored_topic": SCORED_TOPIC,
                  "session_timeout_ms": 30_000, "max_poll_interval_ms": 240_000},
        "metrics": {"port": port, "labels": ["model"],
                    "max_label_values": max(50, segments)},
        "scorers": _MODEL_SCORERS,
        "scoring": {"models_dir": str(STATIC_DIR), "embedding": {"backend": "static"}},
        "drift": {"enabled": True, "embedding": {"n_bootstraps": n_bootstraps},
                  "max_segments": max(20, segments),
                  "reference": {"warmup_records": warmup_records,
                                "store": str(work / "references")}},
        "rules": [{"name": "errors", "when": {"kind": "rate", "signal": "error",
                                              "above": 0.5}}],
        "outbox": {"path": str(work / "outbox.sqlite3")},
        "checkpoint": {"path": str(work / "checkpoint.bin")},
    }))
    return config


def _scored_pool(config_path: Path, n: int) -> list[scored.ScoredRecord]:
    """`n` HaluEval records through the score stage's models, as its scored records."""
    from consumers.decode import Decoder
    from consumers.wire import Record
    from detectors.static_embedder import ensure_table
    from monitor.app.wiring import embedding_vectors_name
    from monitor.config import load_config
    from monitor.pipeline.model_scoring import ModelScorers
    from monitor.pipeline.stages import operational_features

    ensure_table(None, STATIC_DIR)
    config = load_config(config_path)
    models = ModelScorers(config.scorers, config.scoring)
    vectors = embedding_vectors_name(config.scoring.embedding)  # as the score stage names them
    decoder = Decoder(10_000_000)
    wire = [decoder.decode(traffic.encode(traffic.unrepeated(r, j))) for j, r in
            enumerate(traffic.wire_records(n, seed=7, start_ms=traffic.FIXED_START_MS))]
    records = [r for r in wire if isinstance(r, Record)]
    out: list[scored.ScoredRecord] = []
    for at in range(0, len(records), _BATCH):
        batch = records[at:at + _BATCH]
        out += scored.encode_batch(batch, operational_features(batch), models.score(batch),
                                   vectors=vectors)
    return out


class _Feed:
    """Rounds of scored records: the pool replayed with new request ids and event times."""

    def __init__(self, pool: list[scored.ScoredRecord], bootstrap: str) -> None:
        self._pool = pool
        self._bootstrap = bootstrap
        self._made = 0

    def messages(self, n: int, start_ms: int) -> list[scored.Message]:
        start_s = start_ms / 1000.0
        records = [msgspec.structs.replace(
            self._pool[(self._made + j) % len(self._pool)],
            request_id=f"bench-{self._made + j:09d}", event_time=start_s + j * 0.02)
            for j in range(n)]
        self._made += n
        return [m for at in range(0, n, _BATCH)
                for m in scored.messages(records[at:at + _BATCH], _KEY)]

    def produce(self, topic: str, messages: list[scored.Message]) -> None:
        producer = KafkaProducer(bootstrap_servers=self._bootstrap, linger_ms=20)
        try:
            for m in messages:
                producer.send(topic, m.value, key=m.key)
            producer.flush()
        finally:
            producer.close()


def _raw_round(feed: _Feed, bootstrap: str, n: int, start_ms: int) -> float:
    """Seconds a bare kafka-python loop takes to read and decode `n` new scored records."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, max_poll_records=2_000)
    try:
        parts = [TopicPartition(RAW_TOPIC, p)
                 for p in sorted(consumer.partitions_for_topic(RAW_TOPIC) or ())]
        consumer.assign(parts)
        ends = consumer.end_offsets(parts)
        feed.produce(RAW_TOPIC, feed.messages(n, start_ms))
        for tp in parts:
            consumer.seek(tp, ends[tp])
        done = 0
        started = time.perf_counter()
        while done < n:
            for batch in consumer.poll(timeout_ms=100).values():
                done += sum(len(scored.decode(m.value)) for m in batch)
        return time.perf_counter() - started
    finally:
        consumer.close()


class _Decider:
    """`driftwatch run --stage decide` on the bench's broker, with its metrics client."""

    def __init__(self, config: Path, port: int, work: Path) -> None:
        self._stack = ExitStack()
        self.work, self._port, self._decided = work, port, 0
        self._last_s = 0.0
        log = self._stack.enter_context(open(work / "daemon.log", "ab"))  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "run", "--config", str(config), "--stage",
             "decide"], stdout=log, stderr=subprocess.STDOUT)
        self._stack.callback(self._stop)
        self.metrics = self._stack.enter_context(
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5))

    def __enter__(self) -> _Decider:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def wait_ready(self) -> None:
        wait_for(lambda: _ready(self._port) or _dead(self.process, self.work), 600,
                 "the deciding process to be ready")

    def warm_up(self, feed: _Feed, records: int) -> None:
        """A first round (drift warm-up), then a trickle until every segment's detectors are
        calibrated (a calibration still running would take CPU from the timed rounds)."""
        self._last_s = self._send(feed, records, traffic.FIXED_START_MS) / 2
        trickle_until_armed(self.metrics, self.process, self.work, lambda i: self._send(
            feed, 20, traffic.FIXED_START_MS + 1_800_000 + i * 5_000))

    def pause(self) -> None:
        _signal_tree(self.process.pid, signal.SIGSTOP)

    @contextmanager
    def resumed(self, feed: _Feed, start_ms: int) -> Iterator[None]:
        """Continued and shown live (20 records decided, untimed), then stopped again."""
        _signal_tree(self.process.pid, signal.SIGCONT)
        try:
            self._send(feed, 20, start_ms)
            yield
        finally:
            self.pause()

    def timed_round(self, feed: _Feed, records: int, start_ms: int) -> float:
        self._last_s = self._send(feed, records, start_ms, timed=True)
        return self._last_s

    def _send(self, feed: _Feed, n: int, start_ms: int, timed: bool = False) -> float:
        """Produce `n` scored records (the process stopped meanwhile when `timed`) and wait
        until they are decided: the seconds from all in the topic to all decided."""
        messages = feed.messages(n, start_ms)
        with _stopped(self.process.pid) if timed else nullcontext():
            feed.produce(SCORED_TOPIC, messages)
            started = time.perf_counter()
            started_at = time.time()  # the daemon dates its batches on this clock
        self._decided += n
        if not timed:
            wait_counted(self.metrics, self.process, self.work, "decided", self._decided)
            return time.perf_counter() - started
        return timed_end(self.metrics, self.process, self.work, "decided", self._decided,
                         started_at, self._last_s)

    def _stop(self) -> None:
        stop_tree(self.process)

