"""`driftwatch bench throughput` (without --workers): records/s end to end in one process
(broker -> decode -> every scorer -> metrics) next to naive encode of the same texts, in
interleaved rounds of the same run.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer

from consumers.batcher import Batch
from consumers.processor import StreamProcessor
from consumers.settings import BatchSettings, KafkaSettings
from consumers.source import KafkaSource
from monitor.app.wiring import assemble
from monitor.config import OfflineConfig
from monitor.local import traffic
from monitor.local.broker import LocalBroker
from monitor.local.figures import summary
from monitor.pipeline.pipeline import Pipeline
from monitor.telemetry.observer import MetricsObserver

TOPIC = "bench-consume"


@dataclass(frozen=True)
class Run:
    """Records read in one timed consume run, and how long it took."""

    records: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def texts_of(records: list[dict[str, object]]) -> list[str]:
    """Each record's prompt (chat messages joined) and response: what naive encode embeds."""
    texts = []
    for r in records:
        prompt = r["prompt"]
        texts.append(prompt if isinstance(prompt, str) else
                     "\n".join(m["content"] for m in prompt))  # type: ignore[attr-defined]
        texts.append(str(r.get("response") or ""))
    return texts


def naive_model(device: str, model: str | None = None) -> Any:
    """The baselines' model: a plain SentenceTransformer, as most monitors load it."""
    from sentence_transformers import SentenceTransformer

    from detectors.embedder import resolve_model_path
    from detectors.load_report import quiet_model_loading

    quiet_model_loading()  # as the daemon's own embedder does
    return SentenceTransformer(resolve_model_path(model), device=device, local_files_only=True)


def _naive_encode(texts: list[str], device: str) -> float:
    """The baseline: plain SentenceTransformer.encode on every text, as most monitors call it."""
    model = naive_model(device)
    model.encode(texts[:8])  # the first call's one-off set-up is not the steady rate
    started = time.perf_counter()
    model.encode(texts, normalize_embeddings=True)
    return time.perf_counter() - started


def bench_throughput(n: int, partitions: int, precision: str = "auto", rounds: int = 3) -> int:
    """Records/s end to end (broker -> decode -> every scorer -> metrics) next to naive encode
    of the same prompts and responses, on whatever device is present: `rounds` rounds of each,
    taking turns (the order reversed every other round), so a host whose speed drifts over the
    run slows both alike; median (min-max), and the ratio also per pair of rounds."""
    from detectors.embedder import pick_device

    config = OfflineConfig()
    embedding = config.scoring.embedding.model_copy(update={"precision": precision})
    config = config.model_copy(update={
        "scoring": config.scoring.model_copy(update={"embedding": embedding})})
    device = pick_device(config.scoring.device)
    records = [traffic.unrepeated(r, i) for i, r in
               enumerate(traffic.wire_records(n, seed=13, start_ms=traffic.FIXED_START_MS))]
    texts = texts_of(records)
    naive: list[float] = []
    ours: list[float] = []
    embedder = "-"
    with LocalBroker() as broker:
        broker.create_topics([(TOPIC, partitions), (f"{TOPIC}-dlq", 1)])
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20)
        for i, r in enumerate(records):
            producer.send(TOPIC, traffic.encode(r), partition=i % partitions)
        producer.flush()
        producer.close()
        for i in range(rounds):
            for path in ("naive", "driftwatch")[::1 if i % 2 == 0 else -1]:
                if path == "naive":
                    naive.append(n / _naive_encode(texts, device))
                else:
                    run, embedder = _round(config, broker.bootstrap, n, i)
                    ours.append(run.rate)
            print(f"  round {i + 1}: naive {naive[-1]:,.1f}, driftwatch {ours[-1]:,.1f} "
                  f"records/s", flush=True)
    pairs = [o / b for o, b in zip(ours, naive, strict=True)]
    print(f"bench throughput: {n:,} HaluEval records a round, {rounds} round(s) of each path "
          f"taking turns, on {device} (embedder {embedder}); median (min-max)")
    print(f"{'path':<58}{'records/s':>24}")
    print(f"{'naive SentenceTransformer.encode(prompt, response)':<58}{summary(naive):>24}")
    print(f"{'driftwatch end to end (broker, all scorers, metrics)':<58}{summary(ours):>24}")
    print(f"ratio driftwatch / naive: {statistics.median(ours) / statistics.median(naive):.2f}; "
          f"per pair of rounds {summary(pairs, 2)}  (goal >= 3 on 2 CPU cores)")
    return 0


def _round(config: OfflineConfig, bootstrap: str, n: int, i: int) -> tuple[Run, str]:
    """One timed read of the topic by a new consumer group, with models of its own: the
    embedding cache starts empty, as it would in a daemon that just started."""
    from monitor.pipeline.model_scoring import ModelScorers

    models = ModelScorers(config.scorers, config.scoring)
    if models.embedder:  # as naive encode: the first call's set-up is not timed
        models.embedder.encode([f"warm-up text {k}" for k in range(8)])
    settings = KafkaSettings(bootstrap_servers=[bootstrap], topic=TOPIC,
                             group_id=f"bench-throughput-{i}", dead_letter_topic=f"{TOPIC}-dlq")
    source = KafkaSource(settings, batch=BatchSettings(max_records=512),
                         observer=MetricsObserver())
    pipeline = assemble(config.scorers, ["model", "model_version", "deployment"], 50,
                        models=models)
    embedder = (f"{models.embedder.backend}, {models.embedder.precision}"
                if models.embedder else "-")
    return _timed(source, pipeline, n), embedder


def _timed(source: KafkaSource, pipeline: Pipeline, n: int) -> Run:
    """Run the poll loop until n records are processed; time from the first poll that returned
    records (like the raw loop's first record) to the last processed batch."""
    stop = threading.Event()
    processed = 0
    first_poll: float | None = None
    last = 0.0

    def process(batch: Batch) -> None:
        nonlocal processed, last
        pipeline.process(batch)
        processed += len(batch.records)
        last = time.perf_counter()
        if processed >= n:
            stop.set()

    source.open()
    poll = source.poll

    def timed_poll(timeout_s: float) -> int:
        nonlocal first_poll
        got = poll(timeout_s)
        if got and first_poll is None:
            first_poll = time.perf_counter()
        return got

    source.poll = timed_poll  # type: ignore[method-assign]
    StreamProcessor(source, process).run(stop)
    return Run(processed, last - (first_poll or last))
