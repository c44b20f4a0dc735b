"""`driftwatch run`: the always-on daemon. Kafka in, scores and metrics out, until SIGTERM."""

from __future__ import annotations

import logging
import platform
import signal
import threading
from importlib.metadata import PackageNotFoundError, version

from kafka.errors import KafkaError

from consumers.processor import StreamProcessor
from consumers.source import KafkaSource
from monitor import metrics as m
from monitor.config import Config
from monitor.endpoints import Endpoints, Health
from monitor.observer import MetricsObserver
from monitor.pipeline import Pipeline

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
    endpoints = Endpoints(config.metrics.host, config.metrics.port, health).start()
    log.info("serving /metrics, /healthz, /readyz on http://%s:%d",
             config.metrics.host, endpoints.port)
    try:
        source = KafkaSource(config.kafka, config.join, config.batch, MetricsObserver())
        if not _open(source, stop, health):
            return 0
        pipeline = Pipeline(config.scorers, config.metrics.labels,
                            config.metrics.max_label_values, audit_log=config.audit_log)

        def on_loop() -> None:
            ready = source.connected() and bool(source.assignment)
            health.tick(source.connected(), len(source.assignment))
            m.READY.set(ready)
            m.PAUSED.set(source.paused)

        log.info("consuming %s as group %s from %s", ", ".join(config.kafka.topics),
                 config.kafka.group_id, ",".join(config.kafka.bootstrap_servers))
        try:
            StreamProcessor(source, pipeline.process, config.batch.max_in_flight, on_loop).run(stop)
        finally:
            pipeline.close()
        log.info("stopped cleanly: in-flight batches finished and offsets committed")
        return 0
    finally:
        m.READY.set(0)
        endpoints.stop()


def _request_stop(stop: threading.Event, signum: int) -> None:
    log.info("%s received: finishing the batch in hand, committing, exiting",
             signal.Signals(signum).name)
    stop.set()


def _open(source: KafkaSource, stop: threading.Event, health: Health) -> bool:
    """Connect with capped exponential backoff; False if stopped before it worked."""
    delay = 0.5
    while not stop.is_set():
        try:
            source.open()
            return True
        except KafkaError as exc:
            health.tick(broker_connected=False, partitions=0)
            log.warning("cannot reach Kafka at %s (%s); retrying in %.1fs",
                        ",".join(source.settings.bootstrap_servers), exc, delay)
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
    return False
