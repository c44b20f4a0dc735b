"""`driftwatch bench consume`: records/s through Kafka -> decode -> validate -> batch ->
operational scorers -> metrics, next to a raw kafka-python poll loop on the same topic, each
in 1 and in N processes of one consumer group (the scoring processes of `--workers N`), in
the same run.

Every run gets a fresh topic and group. Its processes join first; once the group has given
each of them partitions they are stopped (SIGSTOP), the topic is filled, and SIGCONT starts
the clock: the group join and the producer are not timed, and no rebalance happens inside a
run. A run ends with the last of its records processed (each process notes when, on one
monotonic clock). Rounds interleave the paths, so drift in the machine's load hits all alike.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import signal
import statistics
import time
from collections.abc import Callable, Sequence
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray
from typing import Any

from google.protobuf.json_format import ParseDict
from kafka import KafkaConsumer, KafkaProducer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from consumers.settings import WireSettings
from monitor.local import traffic
from monitor.local.broker import LocalBroker
from monitor.local.figures import summary

TOPIC = "bench-consume"
# Tansu holds a new group's first join for half the session timeout; a stopped process keeps
# its partitions for the session timeout less the heartbeats around the stop.
_SESSION_MS, _HEARTBEAT_MS = 10_000, 1_000
_MAX_STOP_S = 7.0
_SPAWN = multiprocessing.get_context("spawn")  # children free of the parent's threads


class _Shared:
    """What a run's processes and the bench share: records done, and per process its
    partitions and when it finished its last batch."""

    def __init__(self, processes: int) -> None:
        self.done: Synchronized[int] = _SPAWN.Value("q", 0)  # type: ignore[assignment]
        self.assigned: SynchronizedArray[int] = _SPAWN.Array("i", processes)  # type: ignore[assignment]
        self.last: SynchronizedArray[float] = _SPAWN.Array("d", processes)  # type: ignore[assignment]
        self.stop = _SPAWN.Event()

    def count(self, number: int, records: int) -> None:
        with self.done.get_lock():
            self.done.value += records
        self.last[number] = time.perf_counter()  # CLOCK_MONOTONIC: one clock for all


def _raw(bootstrap: str, topic: str, group: str, number: int, shared: _Shared) -> None:
    """The baseline: kafka-python's own poll loop, touching each value, committing at the end."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_interval_ms=_SESSION_MS,
        session_timeout_ms=_SESSION_MS, heartbeat_interval_ms=_HEARTBEAT_MS,
        max_poll_records=2_000)
    nbytes = 0
    while not shared.stop.is_set():
        for messages in consumer.poll(timeout_ms=100).values():
            nbytes += sum(len(m.value) for m in messages)
            shared.count(number, len(messages))
        shared.assigned[number] = len(consumer.assignment())
    consumer.commit()
    consumer.close(autocommit=False)


# `--mapped`: the records as a gateway names their fields (LiteLLM's standard logging
# payload: `id`, `startTime` and `response_time` in seconds, `response_cost`), read through
# `wire.fields`, and the route from a nested object.
MAPPED_FIELDS = {"request_id": "id", "timestamp": "startTime", "latency_ms": "response_time",
                 "cost_usd": "response_cost", "route": "metadata.team"}


def as_gateway_logs(record: dict[str, Any]) -> dict[str, Any]:
    """A wire record as the gateway of MAPPED_FIELDS logs it."""
    out = {k: v for k, v in record.items()
           if k not in ("request_id", "timestamp", "latency_ms", "cost_usd", "route")}
    out.update(id=record["request_id"], startTime=record["timestamp"] / 1_000,
               response_cost=record.get("cost_usd"), metadata={"team": record.get("route")})
    if record.get("latency_ms") is not None:
        out["response_time"] = record["latency_ms"] / 1_000
    return out


# `--otlp`: the records as an OpenTelemetry Collector's Kafka exporter writes their spans
# (otlp_json), OTLP_CALLS model calls a message, each beside an HTTP span; the labels the
# GenAI conventions have no name for in attributes of the application's, mapped.
OTLP_CALLS = 8
OTLP_FIELDS = {"route": "attributes.app.route", "deployment": "attributes.app.deployment",
               "model_version": "attributes.app.model_version"}


def as_otel_traces(records: Sequence[dict[str, Any]], per_message: int = OTLP_CALLS
                   ) -> list[bytes]:
    """Wire records as model-call spans of the GenAI conventions, `per_message` calls (and as
    many HTTP spans) a message of otlp_json."""
    out = []
    for first in range(0, len(records), per_message):
        spans: list[dict[str, Any]] = []
        for n, record in enumerate(records[first:first + per_message], start=first):
            start = int(record["timestamp"]) * 1_000_000
            spans.append(_otel_span(f"{n:016x}", start, record.get("latency_ms") or 0.0,
                                    _call_attributes(record), record.get("status") == "error"))
            spans.append(_otel_span(f"{n:015x}f", start, 1.0, {"http.request.method": "POST"}))
        out.append(json.dumps({"resourceSpans": [{
            "resource": {"attributes": [_kv("service.name", "chat-api")]},
            "scopeSpans": [{"scope": {"name": "opentelemetry.instrumentation.openai_v2"},
                            "spans": spans}]}]}).encode())
    return out


def as_proto(message: bytes) -> bytes:
    """An otlp_json message in the Collector's default otlp_proto encoding."""
    parsed = json.loads(message)
    for rs in parsed["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:  # OTLP's JSON writes ids in hex, protobuf's in base64
                for key in ("traceId", "spanId"):
                    span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return ParseDict(parsed, ExportTraceServiceRequest()).SerializeToString()


def _call_attributes(record: dict[str, Any]) -> dict[str, Any]:
    prompt = record.get("prompt")
    chat = ([{"role": "user", "content": prompt}] if isinstance(prompt, str)
            else [m for m in prompt or () if isinstance(m, dict)])
    attributes = {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": record.get("model"),
        "gen_ai.usage.input_tokens": record.get("prompt_tokens"),
        "gen_ai.usage.output_tokens": record.get("completion_tokens"),
        "gen_ai.input.messages": json.dumps([
            {"role": m.get("role") or "user",
             "parts": [{"type": "text", "content": m.get("content")}]} for m in chat]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
            {"type": "text", "content": record.get("response") or ""}]}]),
        "app.route": record.get("route"), "app.deployment": record.get("deployment"),
        "app.model_version": record.get("model_version")}
    return {k: v for k, v in attributes.items() if v is not None}


def _otel_span(span_id: str, start_ns: int, took_ms: float, attributes: dict[str, Any],
               error: bool = False) -> dict[str, Any]:
    return {"traceId": f"{int(span_id, 16):032x}", "spanId": span_id, "name": "chat",
            "kind": 3, "startTimeUnixNano": str(start_ns),
            "endTimeUnixNano": str(start_ns + int(took_ms * 1e6)),
            "attributes": [_kv(k, v) for k, v in attributes.items()],
            "status": {"code": 2} if error else {}}


def _kv(key: str, value: Any) -> dict[str, Any]:
    """An attribute as OTLP's JSON writes it (int64 as a string)."""
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


def _mapped(bootstrap: str, topic: str, group: str, number: int, shared: _Shared) -> None:
    _driftwatch(bootstrap, topic, group, number, shared,
                WireSettings(fields=MAPPED_FIELDS, latency_unit="s"))


def _otlp(bootstrap: str, topic: str, group: str, number: int, shared: _Shared) -> None:
    _driftwatch(bootstrap, topic, group, number, shared,
                WireSettings(fields=OTLP_FIELDS, format="otlp_json"))


def _otlp_proto(bootstrap: str, topic: str, group: str, number: int, shared: _Shared) -> None:
    _driftwatch(bootstrap, topic, group, number, shared,
                WireSettings(fields=OTLP_FIELDS, format="otlp_proto"))


def _driftwatch(bootstrap: str, topic: str, group: str, number: int, shared: _Shared,
                wire: WireSettings | None = None) -> None:
    """The same topic through KafkaSource, the worker thread, the pipeline and the metrics."""
    from consumers.batcher import Batch
    from consumers.processor import StreamProcessor
    from consumers.settings import BatchSettings, KafkaSettings
    from consumers.source import KafkaSource
    from monitor.app.wiring import assemble
    from monitor.pipeline.stages import SCORERS
    from monitor.telemetry.observer import MetricsObserver

    settings = KafkaSettings(bootstrap_servers=[bootstrap], topic=topic, group_id=group,
                             dead_letter_topic=f"{topic}-dlq", session_timeout_ms=_SESSION_MS,
                             heartbeat_interval_ms=_HEARTBEAT_MS,
                             max_poll_interval_ms=_SESSION_MS)
    source = KafkaSource(settings, batch=BatchSettings(), observer=MetricsObserver(), wire=wire)
    pipeline = assemble(list(SCORERS), ["model", "model_version", "deployment"], 50)

    def process(batch: Batch) -> None:
        pipeline.process(batch)
        shared.count(number, len(batch.records))

    def loop() -> None:
        shared.assigned[number] = len(source.assignment)

    source.open()
    StreamProcessor(source, process, on_loop=loop).run(shared.stop)  # type: ignore[arg-type]


_PATHS: dict[str, Callable[[str, str, str, int, _Shared], None]] = {
    "raw": _raw, "driftwatch": _driftwatch, "mapped": _mapped, "otlp": _otlp,
    "otlp_proto": _otlp_proto}


def timed_run(bootstrap: str, broker: LocalBroker, path: str, processes: int,
              payloads: Sequence[bytes], partitions: int, name: str,
              records: int | None = None) -> float:
    """Records/s of `processes` processes of `path` over `payloads` in a fresh topic;
    `records`: how many the payloads hold, where a message holds several."""
    records = len(payloads) if records is None else records
    topic = f"{TOPIC}-{name}"
    broker.create_topics([(topic, partitions), (f"{topic}-dlq", 1)])
    shared = _Shared(processes)
    children = [_SPAWN.Process(target=_PATHS[path], args=(bootstrap, topic, f"g-{name}", i,
                                                          shared), daemon=True)
                for i in range(processes)]
    for child in children:
        child.start()
    try:
        _wait(lambda: sum(shared.assigned) == partitions and all(shared.assigned), 120,
              f"{processes} {path} process(es) to share {partitions} partitions", children)
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                 batch_size=256 * 1024)
        for child in children:
            os.kill(child.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        stopped = time.perf_counter()
        try:
            for i, value in enumerate(payloads):
                producer.send(topic, value, partition=i % partitions)
            producer.flush()
        finally:
            started = time.perf_counter()
            for child in children:
                os.kill(child.pid, signal.SIGCONT)  # type: ignore[arg-type]
        producer.close()
        if started - stopped > _MAX_STOP_S:  # the group may have moved partitions meanwhile
            raise RuntimeError(f"producing {len(payloads):,} records took "
                               f"{started - stopped:.1f}s, over the {_MAX_STOP_S:.0f}s a "
                               "stopped consumer keeps its partitions: use fewer --records")
        _wait(lambda: shared.done.value >= records, 600,
              f"{records:,} records through {path}", children)
        return shared.done.value / (max(shared.last) - started)
    finally:
        shared.stop.set()
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str,
          children: list[Any]) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if dead := [c.exitcode for c in children if c.exitcode is not None]:
            raise RuntimeError(f"a bench process exited with {dead[0]} while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.005)


def bench_consume(n: int, partitions: int, rounds: int, workers: Sequence[int],
                  mapped: bool = False, otlp: bool = False) -> int:
    """One row per path and process count, median (min-max) of `rounds`, and the ratios;
    `mapped`: one process also reads the records as a gateway logs them (`wire.fields`);
    `otlp`: as an OpenTelemetry Collector writes their spans (`wire.format: otlp_json`)."""
    records = list(traffic.wire_records(n, seed=11, start_ms=traffic.FIXED_START_MS))
    inputs = {"raw": [traffic.encode(r) for r in records]}
    inputs["driftwatch"] = payloads = inputs["raw"]
    if mapped:
        inputs["mapped"] = [json.dumps(as_gateway_logs(r)).encode() for r in records]
    if otlp:
        inputs["otlp"] = as_otel_traces(records)
        inputs["otlp_proto"] = [as_proto(m) for m in inputs["otlp"]]
    counts = sorted(set(workers) | {1})
    rates: dict[tuple[str, int], list[float]] = {}
    with LocalBroker() as broker:
        for r in range(rounds):
            for k in counts:
                for path in inputs if k == 1 else ("raw", "driftwatch"):
                    rate = timed_run(broker.bootstrap, broker, path, k, inputs[path],
                                     partitions, f"{path}-{k}-{r}",
                                     records=n if path.startswith("otlp") else None)
                    rates.setdefault((path, k), []).append(rate)
    mean_bytes = sum(map(len, payloads)) / n
    print(f"bench consume: {n:,} HaluEval records ({mean_bytes:,.0f} B mean) on {partitions} "
          f"partitions of a local Tansu broker, {rounds} round(s), median (min-max); "
          f"{os.cpu_count()} CPU cores")
    print(f"{'path':<52}{'records/s':>28}")
    for (path, k), values in rates.items():
        print(f"{_name(path, k):<52}{summary(values, 0):>28}")
    raw = statistics.median(rates["raw", 1])
    for k in counts:
        ours = statistics.median(rates["driftwatch", k])
        label = "driftwatch" if k == 1 else f"driftwatch {k} processes"
        print(f"ratio {label} / raw: {ours / raw:.2f}  (target >= 0.70)")
        if k > 1:
            print(f"ratio {label} / raw {k} processes: "
                  f"{ours / statistics.median(rates['raw', k]):.2f}  (same parallelism)")
    if mapped:
        ours = statistics.median(rates["mapped", 1])
        print(f"ratio driftwatch, fields mapped / raw: {ours / raw:.2f}; / driftwatch: "
              f"{ours / statistics.median(rates['driftwatch', 1]):.2f}")
    if otlp:
        wire = statistics.median(rates["driftwatch", 1])
        for path, encoding in (("otlp", "otlp_json"), ("otlp_proto", "otlp_proto")):
            print(f"ratio driftwatch, OTLP spans ({encoding}) / driftwatch: "
                  f"{statistics.median(rates[path, 1]) / wire:.2f}  (the same records; "
                  f"{OTLP_CALLS} model calls and {OTLP_CALLS} HTTP spans a message)")
    return 0


def _name(path: str, processes: int) -> str:
    if path == "mapped":
        return "driftwatch, the gateway's field names (wire.fields)"
    if path.startswith("otlp"):
        return f"driftwatch, OTLP spans (wire.format: {'otlp_json' if path == 'otlp' else path})"
    if path == "raw":
        return ("raw kafka-python poll loop (baseline)" if processes == 1 else
                f"raw kafka-python poll loop, {processes} processes")
    return "driftwatch decode+validate+batch+metrics" + (
        f", {processes} processes" if processes > 1 else "")
