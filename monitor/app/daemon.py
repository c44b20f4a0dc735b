"""`driftwatch run`: the always-on daemon. Kafka in, scores and metrics out, until SIGTERM."""

from __future__ import annotations

import logging
import os
import platform
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from kafka import KafkaProducer
from kafka.errors import KafkaError

from consumers.batcher import Batch
from consumers.offsets import Partition
from consumers.processor import Settle, StreamProcessor, retry_while_waiting
from consumers.source import KafkaSource
from monitor.acting.canary import CanaryGate
from monitor.acting.delivery import DeliveryWorker
from monitor.acting.outbox import Outbox
from monitor.acting.review import ReviewSampler, export
from monitor.app.heap import HeapTrimmer
from monitor.app.review_io import LabelReader, review_publisher
from monitor.app.wiring import (
    Parts,
    build_models,
    build_parts,
    build_review,
    build_tokens,
    checkpointer,
    embedding_vectors_name,
    wire,
)
from monitor.config import SIGNAL_SCORERS, Action, Config, environment_warnings
from monitor.pipeline import scored
from monitor.pipeline.checkpoint import Checkpointer
from monitor.pipeline.model_scoring import ModelScorers, Overload
from monitor.pipeline.publish import PublishStage
from monitor.pipeline.scored import ScoredDecoder
from monitor.pipeline.tasks import DecideTasks, Task, TaskViews, task_path
from monitor.telemetry.endpoints import Endpoints, Health, HttpLimits, host_port
from monitor.telemetry.metrics import METRICS as m
from monitor.telemetry.metrics import driftwatch_version
from monitor.telemetry.observer import MetricsObserver
from monitor.types import Decision, IntakeCounts

log = logging.getLogger("driftwatch")


Stage = Literal["all", "score", "decide"]


def run(config: Config, stop: threading.Event | None = None, stage: Stage = "all",
        parent: int | None = None) -> int:
    """Run until `stop` is set (SIGTERM and SIGINT set it in the main thread); return 0.

    `stage`: "all" scores and decides in this process; "score" scores and writes the scored
    records to kafka.scored_topic; "decide" reads them and runs drift, rules and the canary
    gate, one task per scored partition (a split deployment, see the README). `parent`: the
    pid of the --workers process that started this one, which stops when it is gone."""
    stop = stop or threading.Event()
    if parent is not None:
        threading.Thread(target=stop_when_orphaned, args=(parent, stop), daemon=True,
                         name="driftwatch-parent-watch").start()
    if threading.current_thread() is threading.main_thread():
        # SIGHUP (the terminal it was started from closed) killed it outright by default:
        # no drain, no commit, no leaving the group (its partitions idle a session timeout).
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda signum, _frame: _request_stop(stop, signum))
    m.BUILD_INFO.info({"version": driftwatch_version(), "python": platform.python_version()})
    m.STAGE_INFO.labels(stage).set(1)
    # Until a first batch, "nothing processed since" counts from the start: a process stuck
    # before it reads as stalled for as long as it has run, not since 1970.
    m.LAST_PROCESSED_TIME.set_to_current_time()
    health = Health()
    settings = config.metrics
    limits = HttpLimits(settings.read_timeout_seconds, settings.max_body_bytes,
                        settings.max_connections, settings.admin_token())
    for warning in [*environment_warnings(), *settings.warnings()]:
        log.warning("%s", warning)
    endpoints = Endpoints(settings.host, settings.port, health, limits=limits).start()
    log.info("serving /metrics, /healthz, /readyz on http://%s (stage %s)",
             host_port(config.metrics.host, endpoints.port), stage)
    closers: list[Callable[[], None]] = []  # run in reverse order at the end
    heap = HeapTrimmer()  # before the models load: their buffers follow its mmap threshold
    try:
        stages = {"all": _run_all, "score": _run_score, "decide": _run_decide}
        return stages[stage](config, stop, health, endpoints, closers, heap)
    finally:
        m.READY.set(0)
        for close in reversed(closers):
            close()
        endpoints.stop()


def _run_all(config: Config, stop: threading.Event, health: Health, endpoints: Endpoints,
             closers: list[Callable[[], None]], heap: HeapTrimmer) -> int:
    """Both stages in one process: score and decide each batch in turn."""
    overload = Overload(config.scoring.overload.max_lag, config.scoring.overload.min_fraction)
    models = build_models(config, live=True)  # loads models before joining the group
    _log_models(models)
    # Secrets, the outbox and its backlog of undelivered decisions: before the group join,
    # so a bad secret fails fast and deliveries left by a previous run resume at once.
    acting = acting_parts(config, endpoints)
    closers.append(acting.close)
    parts = build_parts(config, live=True, models=models,
                        last_fired=acting.outbox.last_fired if acting.outbox else None)
    _gate_warnings(config, parts.canary)
    endpoints.drift, endpoints.canary = parts.drift, parts.canary
    endpoints.shadow = parts.shadow
    checkpoints = checkpointer(config, models)
    if checkpoints is not None:
        closers.append(checkpoints.close)
    observer = MetricsObserver(on_lag=lambda lag: setattr(overload, "lag", lag))
    source = KafkaSource(config.kafka, config.join, config.batch, observer,
                         validation=config.validation, wire=config.wire)
    if not _open(source, stop, health):
        return 0
    cancel = acting.cancel  # set by the processor when a stop cannot wait any longer
    pipeline = wire(config, parts, on_decisions=acting.put, intake=observer.intake,
                    fraction=overload.fraction, cancel=cancel, checkpoints=checkpoints,
                    audit_log=config.audit_log,
                    review_publish=_review(config, parts.review, stop, closers))
    closers.append(pipeline.close)

    def on_loop() -> None:
        pipeline.checkpoint_if_due()
        heap.maybe_trim()

    return _consume(config, stop, health, source, pipeline.process, on_loop, cancel)


def _run_score(config: Config, stop: threading.Event, health: Health, endpoints: Endpoints,
               closers: list[Callable[[], None]], heap: HeapTrimmer) -> int:
    """The stateless stage: validate, score, and write each record to the scored topic."""
    overload = Overload(config.scoring.overload.max_lag, config.scoring.overload.min_fraction)
    models = build_models(config, live=True)
    _log_models(models)
    observer = MetricsObserver(on_lag=lambda lag: setattr(overload, "lag", lag))
    source = KafkaSource(config.kafka, config.join, config.batch, observer,
                         validation=config.validation, wire=config.wire)
    if not _open(source, stop, health):
        return 0
    k = config.kafka
    # max_block_ms: how long send() waits for metadata or buffer room in the worker; the
    # default 60 s held a stop that long (the settle sends again, and checks for a stop).
    producer = KafkaProducer(acks="all", linger_ms=5, max_block_ms=1_000, **k.client_options())
    closers.append(lambda: producer.close(timeout=5))
    cancel = threading.Event()
    key = scored.partition_key(config.metrics.labels,
                               config.canary.enabled or config.shadow.enabled)
    vectors = embedding_vectors_name(config.scoring.embedding) if models is not None else None
    publish = PublishStage(producer, k.scored_topic, key, cancel, intake=observer.intake,
                           vectors=vectors)
    pipeline = wire(config, Parts(models, tokens=build_tokens(config)),
                    on_decisions=_no_decisions, intake=observer.intake,
                    fraction=overload.fraction, cancel=cancel, audit_log=config.audit_log,
                    publish=publish)
    closers.append(pipeline.close)
    log.info("scoring into %s, keyed by %s", k.scored_topic, ", ".join(key) or "one key")
    return _consume(config, stop, health, source, pipeline.process, heap.maybe_trim, cancel)


def _review(config: Config, sampler: ReviewSampler | None, stop: threading.Event,
            closers: list[Callable[[], None]]
            ) -> Callable[[list[dict[str, object]]], None] | None:
    """The review queue's Kafka side: the topic's publisher (returned) and the labels
    reader; the store closes last."""
    if sampler is None:
        return None
    closers.append(sampler.store.close)
    export(sampler.store.estimates())  # what earlier runs' labels said, from the start
    if config.review.labels_topic:
        reader = LabelReader(config, sampler.store, stop)
        reader.start()
        closers.append(lambda: reader.join(timeout=10))
    if config.review.topic is None:
        return None
    publish, close = review_publisher(config)
    closers.append(close)
    return publish


def _run_decide(config: Config, stop: threading.Event, health: Health, endpoints: Endpoints,
                closers: list[Callable[[], None]], heap: HeapTrimmer) -> int:
    """The stateful stage: drift, rules and the canary gate on scored records, one task per
    scored partition, each with its own checkpoint under checkpoint.path's directory."""
    # One intra-op thread: the stage's torch work is small per call (a batch's MMD update),
    # and a pool spins between calls: with one, `bench decide` spent 10-14% less CPU on the
    # same records, CPU a split deployment's scoring processes share.
    import torch

    torch.set_num_threads(1)
    batch = config.batch.for_decide()
    log.info("decide stage: torch intra-op threads: %d; batches of up to %d records",
             torch.get_num_threads(), batch.max_records)
    acting = acting_parts(config, endpoints)
    closers.append(acting.close)
    last_fired = acting.outbox.last_fired if acting.outbox else None
    model = embedding_vectors_name(config.scoring.embedding)
    directory = config.checkpoint.path.parent / "tasks" if config.checkpoint.enabled else None

    # One review sampler for every task: one hourly budget, one store, one labels reader.
    sampler = build_review(config)
    publish = _review(config, sampler, stop, closers)

    def build(checkpoints: Checkpointer | None) -> Task:
        parts = build_parts(config, live=True, last_fired=last_fired, scored_input=True,
                            embedding_model=model)
        if parts.review is not None:
            parts.review.store.close()
            parts.review = sampler
        pipeline = wire(config, parts, on_decisions=acting.put, intake=IntakeCounts(),
                        checkpoints=checkpoints, scored_input=True,  # counts from the records
                        review_publish=publish)
        return Task(pipeline, parts.canary, parts.drift, shadow=parts.shadow)

    def open_checkpoints(partition: Partition) -> Checkpointer:
        assert directory is not None
        found = checkpointer(config, None, task_path(directory, partition), model)
        assert found is not None
        return found

    tasks = DecideTasks(build, open_checkpoints if directory is not None else None)
    closers.append(tasks.close)
    views = TaskViews(tasks, directory, (lambda: CanaryGate(config.canary))
                      if config.canary.enabled else None)
    endpoints.canary = views if config.canary.enabled else None
    endpoints.drift = views if config.drift.enabled else None
    endpoints.shadow = views.shadow if config.shadow.enabled else None
    interval_ms = (int(config.checkpoint.interval_seconds * 1000) if directory is not None
                   else config.kafka.commit_interval_ms)
    source = KafkaSource(config.kafka.for_decide(interval_ms), batch=batch,
                         observer=MetricsObserver(), decoder=ScoredDecoder(model))
    source.before_commit = tasks.save  # a checkpoint always covers what is committed
    source.after_revoke = tasks.release
    if not _open(source, stop, health):
        return 0

    def on_loop() -> None:
        tasks.checkpoint_if_due()
        heap.maybe_trim()

    return _consume(config, stop, health, source, tasks.process, on_loop, acting.cancel)


def _consume(config: Config, stop: threading.Event, health: Health, source: KafkaSource,
             process: Callable[[Batch], Settle | None], on_loop: Callable[[], None],
             cancel: threading.Event) -> int:
    """The poll loop over an open source until `stop`; readiness follows the group."""

    joining = JoinWatch(source.settings.group_id)

    def loop() -> None:
        connected = source.connected()
        missing = source.missing_topics() if connected else health.missing_topics
        if missing != health.missing_topics:
            _log_missing(missing, health.missing_topics)
        in_group = source.in_group()
        health.tick(connected, len(source.assignment), in_group, missing)
        joining.observe(connected, in_group or bool(source.assignment), time.monotonic())
        m.READY.set(health.ready()[0])  # what /readyz answers, by the same rule
        m.PAUSED.set(source.paused)
        on_loop()

    log.info("consuming %s as group %s from %s", ", ".join(source.settings.topics),
             source.settings.group_id, ",".join(source.settings.bootstrap_servers))
    processor = StreamProcessor(source, process, config.batch.max_in_flight, loop,
                                config.batch.drain_seconds, cancel=cancel)
    processor.run(stop)
    log.info("stopped: %s", processor.summary)
    return 0


class JoinWatch:
    """Says when a connected member has not finished joining its consumer group for a while
    (a rebalance that never completes: a member stuck joining, a broker's coordinator
    wedged): /readyz says not ready, and without this line nothing said why."""

    AFTER_S = 30.0
    EVERY_S = 60.0

    def __init__(self, group: str) -> None:
        self.group = group
        self._since: float | None = None
        self._next = 0.0

    def observe(self, connected: bool, joined: bool, now: float) -> None:
        if not connected or joined:
            if joined and self._since is not None and now - self._since >= self.AFTER_S:
                log.info("joined consumer group %s after %.0fs", self.group, now - self._since)
            self._since = None
            return
        if self._since is None:
            self._since, self._next = now, now + self.AFTER_S
        elif now >= self._next:
            log.warning("connected to Kafka but not a member of consumer group %s after %.0fs: "
                        "its rebalance has not completed (a member stuck joining, or the "
                        "group's coordinator); nothing is read and this process is not ready "
                        "meanwhile", self.group, now - self._since)
            self._next = now + self.EVERY_S


def _log_missing(missing: list[str], before: list[str]) -> None:
    """Say when input topics go missing from the brokers (not ready until they are there) and
    when they come: kafka-python's own line says only "not found in cluster metadata"."""
    if missing:
        log.warning("input topic%s %s not on the brokers: nothing is read from %s, and this "
                    "process is not ready, until %s created (a name misspelt in the kafka "
                    "section, or a cluster that creates no topic on demand)",
                    "s" if len(missing) > 1 else "", ", ".join(map(repr, missing)),
                    "them" if len(missing) > 1 else "it",
                    "they are" if len(missing) > 1 else "it is")
    else:
        log.info("input topic%s %s now on the brokers", "s" if len(before) > 1 else "",
                 ", ".join(map(repr, before)))


def _no_decisions(decisions: list[Decision]) -> None:
    raise AssertionError("the score stage makes no decisions")


@dataclass
class Acting:
    """The outbox and its delivery thread: present when the config has rules, a canary gate
    or actions."""

    outbox: Outbox | None = None
    delivery: DeliveryWorker | None = None
    actions: dict[str, Action] = field(default_factory=dict)
    # The processor's cancel: set when a stop can wait no longer for the batches in hand.
    cancel: threading.Event = field(default_factory=threading.Event)

    def put(self, decisions: list[Decision]) -> None:
        """Store the decisions; durable before the batch is acked. A write the outbox refuses
        (a full disk, an I/O error, a lock held past its timeout) is tried again here, with
        the batch waiting and its offsets uncommitted: raised, it would have the worker run
        the batch again, feeding its records to the detectors and rules a second time."""
        outbox = self.outbox
        assert outbox is not None

        def refused(exc: Exception, delay: float) -> None:
            m.OUTBOX_WRITE_FAILURES.inc()
            log.error("the outbox at %s refused %d decision(s) (%s: %s); the batch waits, "
                      "trying again in %.0fs", outbox.path, len(decisions),
                      type(exc).__name__, exc, delay)

        ids = retry_while_waiting(
            lambda: outbox.put(decisions, self.actions), (sqlite3.Error,), refused,
            self.cancel, "stopping with decisions the outbox refused; their batch is read again")
        for event_id, d in zip(ids, decisions, strict=True):
            log.info("decision %s: %s %s %s (%s) -> %s", event_id, d.event_type, d.status,
                     d.summary, d.severity, ", ".join(d.targets) or "no action")

    def close(self) -> None:
        if self.delivery is not None:
            self.delivery.stop()
        if self.outbox is not None:
            self.outbox.close()


def acting_parts(config: Config, endpoints: Endpoints) -> Acting:
    if not (config.rules or config.canary.enabled or config.actions):
        return Acting()
    outbox = Outbox(config.outbox.path)
    generator = f"http://{host_port(config.metrics.host, endpoints.port)}/metrics"
    delivery = DeliveryWorker(outbox, config.actions, config.outbox, generator)
    delivery.start()
    log.info("%d rule(s), canary gate %s, outbox %s, actions: %s", len(config.rules),
             "on" if config.canary.enabled else "off", config.outbox.path,
             ", ".join(config.actions) or "none")
    return Acting(outbox, delivery, dict(config.actions))


def _gate_warnings(config: Config, canary: CanaryGate | None) -> None:
    for gate in canary.gates if canary is not None else ():
        scorer = SIGNAL_SCORERS.get(gate)
        if scorer is not None and scorer not in config.scorers:
            log.warning("canary gate %r needs the %r scorer, which is off: it will have "
                        "no data and is left out of promotion", gate, scorer)


def _log_models(models: ModelScorers | None) -> None:
    if models is None:
        return
    for role, name, device, backend, precision in models.models():
        why = {"embedding": ", ".join(models.embedding_users),
               "embedding_scorers": "refusal similarity and groundedness"}.get(
                   role, "the toxicity scorer")
        log.info("%s model %s on %s, for %s", role, name,
                 " ".join(part for part in (device, backend, precision) if part), why)
    if models.embedder is None:
        log.info("no embedding model: no enabled scorer, drift detector or canary gate needs "
                 "one")


def stop_when_orphaned(parent: int, stop: threading.Event, every_s: float = 1.0) -> None:
    """Set `stop` once this process's parent is no longer `parent`: a --workers parent
    killed outright (kill -9, an OOM kill) cannot stop its scoring processes, which would go
    on scoring and holding their partitions, unlooked-after, and a restarted parent would
    start as many again beside them."""
    while not stop.wait(every_s):
        if os.getppid() != parent:
            log.warning("the --workers process (pid %d) that started this one is gone: "
                        "finishing the batch in hand, committing, exiting", parent)
            stop.set()


def _request_stop(stop: threading.Event, signum: int) -> None:
    log.info("%s received: finishing the batch in hand, committing, exiting",
             signal.Signals(signum).name)
    stop.set()


def _open(source: KafkaSource, stop: threading.Event, health: Health) -> bool:
    """Connect, retrying with capped exponential backoff; False if stopped first.

    kafka-python's bootstrap blocks for as long as the broker is away, so it runs in a
    thread of its own and SIGTERM is still answered at once.
    """
    health.heartbeat = source.heartbeat_fresh
    delay = 0.5
    servers = ",".join(source.settings.bootstrap_servers)
    while not stop.is_set():
        outcome: list[BaseException | None] = []
        opener = threading.Thread(target=_try_open, args=(source, outcome), daemon=True,
                                  name="driftwatch-connect")
        opener.start()
        warn_at = time.monotonic() + 5.0
        while not outcome and not stop.is_set():
            health.tick(broker_connected=False, partitions=0)
            stop.wait(0.2)
            if time.monotonic() >= warn_at:
                log.warning("cannot reach Kafka at %s yet; still trying", servers)
                warn_at += 30.0
        if not outcome:
            return False
        if outcome[0] is None:
            return True
        log.warning("cannot reach Kafka at %s (%s); retrying in %.1fs", servers, outcome[0], delay)
        stop.wait(delay)
        delay = min(delay * 2, 30.0)
    return False


def _try_open(source: KafkaSource, outcome: list[BaseException | None]) -> None:
    try:
        source.open()
        outcome.append(None)
    except KafkaError as exc:
        outcome.append(exc)
