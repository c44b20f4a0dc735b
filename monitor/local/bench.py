"""`driftwatch bench throughput` (without --workers): records/s end to end in one process
(broker -> decode -> every scorer -> metrics) next to naive encode of the same texts.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from kafka import KafkaProducer

from consumers.batcher import Batch
from consumers.processor import StreamProcessor
from consumers.settings import BatchSettings, KafkaSettings
from consumers.source import KafkaSource
from monitor.app.wiring import assemble
from monitor.local import traffic
from monitor.local.broker import LocalBroker
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


def _naive_encode(texts: list[str], device: str) -> float:
    """The baseline: plain SentenceTransformer.encode on every text, as most monitors call it."""
    from sentence_transformers import SentenceTransformer

    from detectors.embedder import resolve_model_path

    model = SentenceTransformer(resolve_model_path(None), device=device, local_files_only=True)
    started = time.perf_counter()
    model.encode(texts, normalize_embeddings=True)
    return time.perf_counter() - started


def bench_throughput(n: int, partitions: int, precision: str = "auto") -> int:
    """Records/s end to end (broker -> decode -> every scorer -> metrics) next to naive encode
    of the same prompts and responses, in the same run, on whatever device is present."""
    from monitor.config import OfflineConfig
    from monitor.pipeline.model_scoring import ModelScorers

    config = OfflineConfig()
    embedding = config.scoring.embedding.model_copy(update={"precision": precision})
    config = config.model_copy(update={
        "scoring": config.scoring.model_copy(update={"embedding": embedding})})
    models = ModelScorers(config.scorers, config.scoring)
    device = models.embedder.device if models.embedder else "cpu"
    records = list(traffic.wire_records(n, seed=13, start_ms=traffic.FIXED_START_MS))
    texts = []
    for r in records:
        prompt = r["prompt"]
        texts.append(prompt if isinstance(prompt, str) else
                     "\n".join(m["content"] for m in prompt))  # type: ignore[union-attr]
        texts.append(str(r.get("response") or ""))
    naive_s = _naive_encode(texts, device)
    with LocalBroker() as broker:
        broker.create_topics([(TOPIC, partitions), (f"{TOPIC}-dlq", 1)])
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20)
        for i, r in enumerate(records):
            producer.send(TOPIC, traffic.encode(r), partition=i % partitions)
        producer.flush()
        producer.close()
        settings = KafkaSettings(bootstrap_servers=[broker.bootstrap], topic=TOPIC,
                                 group_id="bench-throughput", dead_letter_topic=f"{TOPIC}-dlq")
        source = KafkaSource(settings, batch=BatchSettings(max_records=512),
                             observer=MetricsObserver())
        pipeline = assemble(config.scorers, ["model", "model_version", "deployment"], 50,
                            models=models)
        run = _timed(source, pipeline, n)
    naive = n / naive_s
    print(f"bench throughput: {n:,} HaluEval records on {device} "
          f"(embedder {models.embedder.backend if models.embedder else '-'}, "
          f"{models.embedder.precision if models.embedder else '-'})")
    print(f"{'path':<58}{'records/s':>12}")
    print(f"{'naive SentenceTransformer.encode(prompt, response)':<58}{naive:>12,.1f}")
    print(f"{'driftwatch end to end (broker, all scorers, metrics)':<58}{run.rate:>12,.1f}")
    print(f"ratio driftwatch / naive: {run.rate / naive:.2f}  (goal >= 3 on 2 CPU cores)")
    return 0


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
