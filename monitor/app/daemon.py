"""`driftwatch run`: the always-on daemon. Kafka in, scores and metrics out, until SIGTERM."""

from __future__ import annotations

import logging
import platform
import signal
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from kafka.errors import KafkaError

from consumers.processor import StreamProcessor
from consumers.source import KafkaSource
from monitor.acting.canary import CanaryGate
from monitor.acting.delivery import DeliveryWorker
from monitor.acting.outbox import Outbox
from monitor.app.heap import HeapTrimmer
from monitor.app.wiring import build_models, build_parts, checkpointer, wire
from monitor.config import SIGNAL_SCORERS, Action, Config
from monitor.pipeline.checkpoint import Checkpointer
from monitor.pipeline.model_scoring import ModelScorers, Overload
from monitor.telemetry.endpoints import Endpoints, Health, HttpLimits
from monitor.telemetry.metrics import METRICS as m
from monitor.telemetry.observer import MetricsObserver
from monitor.types import Decision

log = logging.getLogger("driftwatch")


def driftwatch_version() -> str:
    try:
        return version("driftwatch")
    except PackageNotFoundError:
        return "0+unknown"


def run(config: Config, stop: threading.Event | None = None) -> int:
    """Run until `stop` is set (SIGTERM and SIGINT set it in the main thread); return 0."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: _request_stop(stop, signum))
    m.BUILD_INFO.info({"version": driftwatch_version(), "python": platform.python_version()})
    health = Health()
    settings = config.metrics
    limits = HttpLimits(settings.read_timeout_seconds, settings.max_body_bytes,
                        settings.max_connections, settings.admin_token())
    for warning in settings.warnings():
        log.warning("%s", warning)
    endpoints = Endpoints(settings.host, settings.port, health, limits=limits).start()
    log.info("serving /metrics, /healthz, /readyz on http://%s:%d",
             config.metrics.host, endpoints.port)
    acting = Acting()
    checkpoints: Checkpointer | None = None
    heap = HeapTrimmer()  # before the models load: their buffers follow its mmap threshold
    try:
        overload = Overload(config.scoring.overload.max_lag, config.scoring.overload.min_fraction)
        models = build_models(config, live=True)  # loads models before joining the group
        _log_models(models)
        # Secrets, the outbox and its backlog of undelivered decisions: before the group join,
        # so a bad secret fails fast and deliveries left by a previous run resume at once.
        acting = acting_parts(config, endpoints)
        parts = build_parts(config, live=True, models=models,
                            last_fired=acting.outbox.last_fired if acting.outbox else None)
        _gate_warnings(config, parts.canary)
        endpoints.drift, endpoints.canary = parts.drift, parts.canary
        checkpoints = checkpointer(config, models)
        observer = MetricsObserver(on_lag=lambda lag: setattr(overload, "lag", lag))
        source = KafkaSource(config.kafka, config.join, config.batch, observer,
                             validation=config.validation)
        health.heartbeat = source.heartbeat_fresh
        if not _open(source, stop, health):
            return 0
        cancel = threading.Event()  # set by the processor when a stop cannot wait any longer
        pipeline = wire(config, parts, on_decisions=acting.put, intake=observer.intake,
                        fraction=overload.fraction, cancel=cancel, checkpoints=checkpoints,
                        audit_log=config.audit_log)

        def on_loop() -> None:
            ready = source.connected() and bool(source.assignment)
            health.tick(source.connected(), len(source.assignment))
            m.READY.set(ready)
            m.PAUSED.set(source.paused)
            pipeline.checkpoint_if_due()
            heap.maybe_trim()

        log.info("consuming %s as group %s from %s", ", ".join(config.kafka.topics),
                 config.kafka.group_id, ",".join(config.kafka.bootstrap_servers))
        processor = StreamProcessor(source, pipeline.process, config.batch.max_in_flight,
                                    on_loop, config.batch.drain_seconds, cancel=cancel)
        try:
            processor.run(stop)
        finally:
            pipeline.close()
        log.info("stopped: %s", processor.summary)
        return 0
    finally:
        m.READY.set(0)
        acting.close()
        if checkpoints is not None:
            checkpoints.close()
        endpoints.stop()


@dataclass
class Acting:
    """The outbox and its delivery thread: present when the config has rules, a canary gate
    or actions."""

    outbox: Outbox | None = None
    delivery: DeliveryWorker | None = None
    actions: dict[str, Action] = field(default_factory=dict)

    def put(self, decisions: list[Decision]) -> None:
        assert self.outbox is not None
        ids = self.outbox.put(decisions, self.actions)  # durable before the batch is acked
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
    generator = f"http://{config.metrics.host}:{endpoints.port}/metrics"
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
        why = (", ".join(models.embedding_users) if role == "embedding"
               else "the toxicity scorer")
        log.info("%s model %s on %s %s %s, for %s", role, name, device, backend, precision,
                 why)
    if models.embedder is None:
        log.info("no embedding model: no enabled scorer, drift detector or canary gate needs "
                 "one")


def _request_stop(stop: threading.Event, signum: int) -> None:
    log.info("%s received: finishing the batch in hand, committing, exiting",
             signal.Signals(signum).name)
    stop.set()


def _open(source: KafkaSource, stop: threading.Event, health: Health) -> bool:
    """Connect, retrying with capped exponential backoff; False if stopped first.

    kafka-python's bootstrap blocks for as long as the broker is away, so it runs in a
    thread of its own and SIGTERM is still answered at once.
    """
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
