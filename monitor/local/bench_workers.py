"""`driftwatch bench throughput --workers N [N ...]`: records/s end to end through the real
daemon (`driftwatch run --workers N`) on a local broker, with every scorer, drift and a rule
on, next to naive `SentenceTransformer.encode` of the same texts, measured in the same run.

Each N gets a fresh broker and daemon; once it is ready, a first round warms it up (models,
drift warm-up and calibration, not timed), then each timed round times `records` new records
from the moment they are all in the topic to the last one decided. Every record is
model-scored (the overload sampler is off), so a rate is the models' work, not a sample's.

The load generator is not the system under test, yet it would share the same cores: each
round's records are encoded before, and produced while the daemon's processes are stopped
(SIGSTOP; SIGCONT starts the clock), as if a producer elsewhere had filled the topic. The
bench then sleeps through most of the round (its length is known from the round before) and
only polls `/metrics` near its end, so the measuring takes no CPU from what it measures.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import httpx
import psutil
import yaml
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from monitor.local import traffic
from monitor.local.bench import _naive_encode
from monitor.local.broker import LocalBroker, free_port

# Distilled tables outlive a run (they are a function of the model): built once per machine.
STATIC_DIR = Path("state/models").resolve()
NAIVE_RECORDS = 1_000  # naive encode is a rate per text: a long round of it adds nothing
_MODEL_SCORERS = ["latency", "tokens", "cost", "status", "length", "toxicity", "groundedness",
                  "sanity"]


def bench_workers(records: int, workers: list[int], rounds: int, partitions: int,
                  backends: list[str] | None = None) -> int:
    """One row per embedding backend and worker count, next to naive encode in this run."""
    backends = backends or ["auto"]
    if set(backends) & {"static", "hybrid"}:  # distilled once, before any daemon is timed
        from detectors.static_embedder import ensure_table

        ensure_table(None, STATIC_DIR)
    naive_n = min(records, NAIVE_RECORDS)
    texts_of = _texts(naive_n)
    naive = [naive_n / _naive_encode(texts_of, _device()) for _ in range(rounds)]
    rates: dict[tuple[str, int], list[float]] = {}
    for backend in backends:
        for n in workers:
            rates[backend, n] = _rates(n, records, rounds, partitions, backend)
            print(f"  {backend}, workers {n}: {_summary(rates[backend, n])}", flush=True)
    print(f"bench throughput: {records:,} HaluEval records a round ({naive_n:,} for naive "
          f"encode), {rounds} timed rounds, on {_device()}; every scorer, drift and a rule on; "
          f"records already in the topic when a round's clock starts; median (min-max)")
    print(f"{'path':<62}{'records/s':>24}")
    print(f"{'naive SentenceTransformer.encode(prompt, response)':<62}{_summary(naive):>24}")
    for (backend, n), values in rates.items():
        name = f"driftwatch run --workers {n}, embedding {backend}"
        print(f"{name:<62}{_summary(values):>24}")
    base = statistics.median(naive)
    for (backend, n), values in rates.items():
        print(f"ratio {backend} --workers {n} / naive: {statistics.median(values) / base:.2f}")
    for (backend, n), values in rates.items():
        one = rates.get((backend, 1))
        if n != 1 and one:
            print(f"ratio {backend} --workers {n} / --workers 1: "
                  f"{statistics.median(values) / statistics.median(one):.2f}"
                  f"  (goal >= 1.7 for 2 workers on 2 cores)")
    return 0


def _rates(workers: int, records: int, rounds: int, partitions: int,
           backend: str = "auto") -> list[float]:
    with tempfile.TemporaryDirectory(prefix="dw-bench-workers-") as tmp, \
            LocalBroker(log_file=Path(tmp) / "tansu.log") as broker:
        work = Path(tmp)
        topic = "bench-workers"
        broker.create_topics([(topic, partitions), ("driftwatch-scored", partitions)])
        port = free_port()
        config = work / "dw.yaml"
        config.write_text(yaml.safe_dump({
            # A session long enough to outlast the stop while a round's records are produced.
            "kafka": {"bootstrap_servers": [broker.bootstrap], "topic": topic,
                      "group_id": "bench-workers", "session_timeout_ms": 60_000,
                      "max_poll_interval_ms": 120_000},
            "metrics": {"port": port, "labels": ["model"]}, "scorers": _MODEL_SCORERS,
            "scoring": {"overload": {"max_lag": 100_000_000}, "models_dir": str(STATIC_DIR),
                        "embedding": {"backend": backend}},
            # 1,000 calibration bootstraps, not 5,000: calibration is not timed (it ends before
            # the first timed round), and an update costs the same whatever the threshold.
            "drift": {"enabled": True, "embedding": {"n_bootstraps": 1_000},
                      "reference": {"warmup_records": 300, "store": str(work / "references")}},
            "rules": [{"name": "errors", "when": {"kind": "rate", "signal": "error",
                                                  "above": 0.5}}],
            "outbox": {"path": str(work / "outbox.sqlite3")},
            "checkpoint": {"path": str(work / "checkpoint.bin")},
        }))
        log = open(work / "daemon.log", "ab")  # noqa: SIM115 (closed below)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "run", "--config", str(config),
             "--workers", str(workers)], stdout=log, stderr=subprocess.STDOUT)
        ports = [port] if workers == 1 else [port, *(port + i for i in range(1, workers + 1))]
        outcome = "scored" if workers == 1 else "decided"
        metrics = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
        try:
            wait_for(lambda: all(_ready(p) for p in ports) or _dead(daemon, work), 600,
                     "the daemon and its workers to be ready")
            done = 0
            out: list[float] = []
            last_s = 0.0  # the previous round's length

            def send(n: int, seed: int, start_ms: int, timed: bool = False) -> float:
                """Produce `n` records (the daemon stopped meanwhile when `timed`) and wait
                until they are decided; the seconds from all in the topic to all decided."""
                nonlocal done
                values = [traffic.encode(r)
                          for r in traffic.wire_records(n, seed=seed, start_ms=start_ms)]
                producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20)
                with _stopped(daemon.pid) if timed else nullcontext():
                    for j, value in enumerate(values):
                        producer.send(topic, value, partition=j % partitions)
                    producer.flush()
                    started = time.perf_counter()
                producer.close()
                done += n
                target = done
                if timed:
                    time.sleep(0.6 * last_s)  # no polling through most of the round
                    if _count(metrics, outcome) >= target:
                        print(f"  warning: a round ended within {0.6 * last_s:.1f}s, before its "
                              "first check: its rate is a lower bound", file=sys.stderr)
                wait_for(lambda: _count(metrics, outcome) >= target or _dead(daemon, work),
                         3_600, f"{target} records {outcome}", interval_s=0.05 if timed else 0.2)
                return time.perf_counter() - started

            for i in range(rounds + 1):  # round 0 warms up
                if i:
                    last_s = send(records, 100 + i, traffic.FIXED_START_MS + i * 3_600_000,
                                  timed=True)
                    out.append(records / last_s)
                    continue
                last_s = send(records, 100, traffic.FIXED_START_MS) / 2  # slower: models load
                # A calibration still running would take CPU from the timed rounds. Its result
                # is taken up by the segment's next record: a trickle, until every segment's
                # detectors test.
                trickle = 0
                deadline = time.monotonic() + 1_800
                while not _calibrated(metrics):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the drift detectors were not calibrated in 30 min")
                    trickle += 1
                    send(20, 10_000 + trickle,
                         traffic.FIXED_START_MS + 1_800_000 + trickle * 5_000)
                    time.sleep(1.0)
            return out
        finally:
            metrics.close()
            daemon.terminate()
            try:
                daemon.wait(timeout=120)
            except subprocess.TimeoutExpired:
                daemon.kill()
            log.close()


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str,
             interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


@contextmanager
def _stopped(pid: int) -> Iterator[None]:
    """The process and its children stopped (SIGSTOP) for the block, then continued."""
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for process in tree:
        process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for process in tree:
            process.send_signal(signal.SIGCONT)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _samples(metrics: httpx.Client) -> list[Sample]:
    text = metrics.get("/metrics").text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _count(metrics: httpx.Client, outcome: str) -> float:
    return sum(s.value for s in _samples(metrics)
               if s.name == "driftwatch_records_total" and s.labels.get("outcome") == outcome)


def _calibrated(metrics: httpx.Client) -> bool:
    return drift_armed(_samples(metrics))


def drift_armed(samples: Sequence[Sample]) -> bool:
    """Every tracked segment's embedding drift detectors calibrated and testing."""
    tracked = {frozenset(s.labels.items()) for s in samples
               if s.name == "driftwatch_drift_reference_records"}
    testing = {frozenset(s.labels.items() - {("stream", "response")}) for s in samples
               if s.name == "driftwatch_drift_threshold" and s.labels.get("stream") == "response"}
    return bool(tracked) and tracked <= testing


def _dead(process: subprocess.Popen[bytes], work: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"the daemon exited with {process.returncode}:\n"
                           + (work / "daemon.log").read_text()[-3_000:])
    return False


def _texts(n: int) -> list[str]:
    texts = []
    for r in traffic.wire_records(n, seed=99, start_ms=traffic.FIXED_START_MS):
        prompt = r["prompt"]
        texts.append(prompt if isinstance(prompt, str) else
                     "\n".join(m["content"] for m in prompt))  # type: ignore[union-attr]
        texts.append(str(r.get("response") or ""))
    return texts


def _device() -> str:
    from detectors.embedder import pick_device

    return pick_device("auto")


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})"
