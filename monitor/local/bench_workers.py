"""`driftwatch bench throughput --workers N [N ...]`: records/s end to end through the real
daemon (`driftwatch run --workers N`) on a local broker, with every scorer, drift and a rule
on, next to naive `SentenceTransformer.encode` of the same texts, measured in the same run.

Each N gets a broker and daemon of its own, all started together; once they are ready, a
first round warms each up (models, drift warm-up and calibration, not timed; all at once).
The timed rounds then take turns: round i
of every daemon, the others stopped (SIGSTOP) meanwhile, so a shared host whose speed drifts
over a run slows each N alike, and the ratio is also given per pair of rounds. A round times
`records` new records from the moment they are all in the topic to the last one decided.
Every record is model-scored (the overload sampler is off), so a rate is the models' work,
not a sample's.

The load generator is not the system under test, yet it would share the same cores: each
round's records are encoded before, and produced while the daemon's processes are stopped
(SIGSTOP; SIGCONT starts the clock), as if a producer elsewhere had filled the topic. The
bench then sleeps through the round's expected length (the round before's) and scrapes
`/metrics` every half second after it; the clock stops at the daemon's own
`driftwatch_last_processed_timestamp_seconds` in the scrape that shows the round done. So
the measuring takes no CPU from what it measures, and its polling interval does not lengthen
a round. (Scraping every 50 ms through the last 40% of a round, as an earlier version did,
took 3-7% of a core in the bench alone, plus the daemon's answers; the two processes have no
core to spare for that, the one process has: it lowered the ratio.)

Each round also reads from /proc the CPU-seconds of every process of the daemon and of its
broker, from the clock's start (after the round was produced) to the scrape that shows it
done, and the table ends with them per 10,000 records by role: one process, or the scoring
processes, the deciding process and the broker. The split's total against one process's is
what the split adds to a record; with the cores each keeps busy it makes the ratio.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from pathlib import Path

import httpx
import psutil
import yaml
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from monitor.local import traffic
from monitor.local.bench import _naive_encode, texts_of
from monitor.local.broker import LocalBroker, free_ports
from monitor.local.figures import summary

# Distilled tables outlive a run (they are a function of the model): built once per machine.
STATIC_DIR = Path("state/models").resolve()
NAIVE_RECORDS = 1_000  # naive encode is a rate per text: a long round of it adds nothing
_MODEL_SCORERS = ["latency", "tokens", "cost", "status", "length", "toxicity", "groundedness",
                  "sanity"]


def bench_workers(records: int, workers: list[int], rounds: int, partitions: int,
                  backends: list[str] | None = None, warmup_records: int = 300,
                  n_bootstraps: int = 1_000, session_ms: int | None = None) -> int:
    """One row per embedding backend and worker count, next to naive encode in this run, and
    the CPU each role of each daemon spent a record. `warmup_records` and `n_bootstraps` size
    the drift detectors' untimed warm-up and calibration; `session_ms`, the consumer groups'
    session (by default one that outlasts the other daemons' rounds)."""
    backends = backends or ["auto"]
    if set(backends) & {"static", "hybrid"}:  # distilled once, before any daemon is timed
        from detectors.static_embedder import ensure_table

        ensure_table(None, STATIC_DIR)
    naive_n = min(records, NAIVE_RECORDS)
    texts_of = _texts(naive_n)
    naive = [naive_n / _naive_encode(texts_of, _device()) for _ in range(rounds)]
    keys = [(b, n) for b in backends for n in workers]
    daemon = {"warmup_records": warmup_records, "n_bootstraps": n_bootstraps,
              "session_ms": session_ms or (30_000 if len(keys) == 1 else 120_000)}
    rates, cpu = _interleaved(keys, records, rounds, partitions, daemon)
    print(f"bench throughput: {records:,} HaluEval records a round ({naive_n:,} for naive "
          f"encode), {rounds} timed rounds, on {_device()}; every scorer, drift and a rule on; "
          f"records already in the topic when a round's clock starts; the daemons' rounds "
          f"interleaved; median (min-max)")
    print(f"{'path':<62}{'records/s':>24}")
    print(f"{'naive SentenceTransformer.encode(prompt, response)':<62}{summary(naive):>24}")
    for (backend, n), values in rates.items():
        name = f"driftwatch run --workers {n}, embedding {backend}"
        print(f"{name:<62}{summary(values):>24}")
    base = statistics.median(naive)
    for (backend, n), values in rates.items():
        print(f"ratio {backend} --workers {n} / naive: {statistics.median(values) / base:.2f}")
    for (backend, n), values in rates.items():
        one = rates.get((backend, 1))
        if n != 1 and one:
            # Round i of each daemon ran next to round i of the other: a ratio per pair
            # cancels what the machine's own speed did meanwhile.
            pairs = [v / o for v, o in zip(values, one, strict=True)]
            goal = "  (goal >= 1.7 for 2 workers on 2 cores)" if n == 2 else ""
            print(f"ratio {backend} --workers {n} / --workers 1: "
                  f"{statistics.median(values) / statistics.median(one):.2f}; "
                  f"per pair of rounds {summary(pairs, 2)}{goal}")
    _print_cpu(cpu, records)
    return 0


def _print_cpu(cpu: dict[tuple[str, int], list[dict[str, float]]], records: int) -> None:
    """Each daemon's CPU-seconds per 10,000 records by role (median of its rounds), and, for
    N > 1, its total against one process's: what the split costs a record, which with the
    cores each topology keeps busy makes the ratio."""
    print("CPU-seconds per 10,000 records, median of the rounds (each process read from /proc "
          "from the clock's start until the round was seen done; the broker's share of "
          "producing the round excluded)")
    by_round = {key: [sum(r.values()) * 10_000 / records for r in rounds]
                for key, rounds in cpu.items()}
    totals = {key: statistics.median(values) for key, values in by_round.items()}
    for (backend, n), rounds in cpu.items():
        per = {role: statistics.median(r[role] for r in rounds) * 10_000 / records
               for role in rounds[0]}
        roles = "; ".join(f"{role} {seconds:.2f}" for role, seconds in per.items())
        one = totals.get((backend, 1))
        versus = f" ({totals[backend, n] / one:.2f}x --workers 1's)" if n != 1 and one else ""
        # Each round's total too: a slow round that cost more CPU a record was the host
        # running the same work slower; one that did not was cores taken or left idle.
        each = ", ".join(f"{total:.2f}" for total in by_round[backend, n])
        print(f"  {backend} --workers {n}: {roles}; {totals[backend, n]:.2f} in all{versus}; "
              f"by round {each}")


def _interleaved(keys: list[tuple[str, int]], records: int, rounds: int, partitions: int,
                 options: dict[str, int]) -> tuple[dict[tuple[str, int], list[float]],
                                                   dict[tuple[str, int], list[dict[str, float]]]]:
    """Every daemon started and warmed up, then timed in turns: round i of each, the order
    reversed every other round, the others stopped (SIGSTOP) meanwhile. A machine whose
    speed drifts over the minutes of a run (a shared host) then slows every daemon alike,
    instead of whichever ran last. Returns each daemon's rates and CPU by role, per round."""
    rates: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
    with ExitStack() as stack:
        # Started together: a start is mostly waiting (the group join on this broker holds
        # for half the session timeout, a minute here), so one at a time would add a minute
        # a daemon.
        started = time.monotonic()
        daemons = {key: stack.enter_context(_Daemon(key[1], partitions, key[0], **options))
                   for key in keys}
        for key, daemon in daemons.items():
            daemon.wait_ready()
            _progress(f"{key[0]} --workers {key[1]}: ready {time.monotonic() - started:.0f} s "
                      f"after the first start")

        def warm_up(key: tuple[str, int], daemon: _Daemon) -> None:
            daemon.warm_up(records)
            _progress(f"{key[0]} --workers {key[1]}: warmed up and drift calibrated "
                      f"{time.monotonic() - started:.0f} s after the first start")

        # Together too (untimed): most of a warm-up is waiting on calibration and trickles.
        with ThreadPoolExecutor(len(daemons)) as pool:
            list(pool.map(warm_up, daemons.keys(), daemons.values()))
        for daemon in daemons.values():
            daemon.pause()  # each is continued for its own rounds only
        for i in range(1, rounds + 1):
            order = list(daemons.items()) if i % 2 else list(daemons.items())[::-1]
            for key, daemon in order:
                with daemon.resumed(i):
                    rates[key].append(records / daemon.timed_round(records, i))
                _progress(f"round {i}: {key[0]} --workers {key[1]}: "
                          f"{rates[key][-1]:,.1f} records/s")
        for key, values in rates.items():
            print(f"  {key[0]}, workers {key[1]}: {summary(values)}", flush=True)
    return rates, {key: daemon.cpu for key, daemon in daemons.items()}


class _Daemon:
    """`driftwatch run --workers N` on a broker of its own, with its metrics client."""

    def __init__(self, workers: int, partitions: int, backend: str, session_ms: int,
                 warmup_records: int = 300, n_bootstraps: int = 1_000) -> None:
        """`session_ms` must outlast the stops: producing a round (seconds) and, when not
        alone, the other daemons' rounds. This broker holds each group join for half of it,
        so a daemon timed alone starts a minute sooner with a shorter one than a pair."""
        self.workers, self.partitions, self.backend = workers, partitions, backend
        self._session_ms = session_ms
        self._warmup_records, self._n_bootstraps = warmup_records, n_bootstraps
        self.cpu: list[dict[str, float]] = []  # per timed round: CPU-seconds by role
        self.topic = "bench-workers"
        self._stack = ExitStack()
        self._done = 0  # records produced so far
        self._last_s = 0.0  # the previous timed round's length
        self._outcome = "scored" if workers == 1 else "decided"

    def __enter__(self) -> _Daemon:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        stack = self._stack
        work = self.work = Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="dw-bench-workers-")))
        self.broker = stack.enter_context(LocalBroker(log_file=work / "tansu.log"))
        self.broker.create_topics([(self.topic, self.partitions),
                                   ("driftwatch-scored", self.partitions)])
        port = free_ports(self.workers + 1)  # the workers take port + 1 .. port + N
        config = work / "dw.yaml"
        config.write_text(yaml.safe_dump({
            "kafka": {"bootstrap_servers": [self.broker.bootstrap], "topic": self.topic,
                      "group_id": "bench-workers", "session_timeout_ms": self._session_ms,
                      "max_poll_interval_ms": 240_000},
            "metrics": {"port": port, "labels": ["model"]}, "scorers": _MODEL_SCORERS,
            "scoring": {"overload": {"max_lag": 100_000_000}, "models_dir": str(STATIC_DIR),
                        "embedding": {"backend": self.backend}},
            # 1,000 calibration bootstraps, not 5,000: calibration is not timed (it ends before
            # the first timed round), and an update costs the same whatever the threshold.
            "drift": {"enabled": True, "embedding": {"n_bootstraps": self._n_bootstraps},
                      "reference": {"warmup_records": self._warmup_records,
                                    "store": str(work / "references")}},
            "rules": [{"name": "errors", "when": {"kind": "rate", "signal": "error",
                                                  "above": 0.5}}],
            "outbox": {"path": str(work / "outbox.sqlite3")},
            "checkpoint": {"path": str(work / "checkpoint.bin")},
        }))
        log = stack.enter_context(open(work / "daemon.log", "ab"))  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "run", "--config", str(config),
             "--workers", str(self.workers)], stdout=log, stderr=subprocess.STDOUT)
        stack.callback(self._stop)
        self.metrics = stack.enter_context(
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5))
        self._ports = [port] if self.workers == 1 else [port, *(port + i for i in
                                                                range(1, self.workers + 1))]

    def wait_ready(self) -> None:
        wait_for(lambda: all(_ready(p) for p in self._ports) or _dead(self.process, self.work),
                 600, "the daemon and its workers to be ready")

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def warm_up(self, records: int) -> None:
        """A first round (models load, drift warm-up), then a trickle until every segment's
        drift detectors are calibrated: a calibration still running would take CPU from the
        timed rounds, and its result is taken up by the segment's next record."""
        self._last_s = self._send(records, 100, traffic.FIXED_START_MS) / 2  # models load
        trickle_until_armed(self.metrics, self.process, self.work, lambda i: self._send(
            20, 10_000 + i, traffic.FIXED_START_MS + 1_800_000 + i * 5_000))

    def pause(self) -> None:
        _signal_tree(self.process.pid, signal.SIGSTOP)

    @contextmanager
    def resumed(self, i: int) -> Iterator[None]:
        """Continued, and shown to be live before timed round `i` (20 records decided,
        untimed, dated just before that round's), then stopped again."""
        _signal_tree(self.process.pid, signal.SIGCONT)
        try:
            self._send(20, 20_000 + i, traffic.FIXED_START_MS + i * 3_600_000 - 120_000)
            yield
        finally:
            self.pause()

    def timed_round(self, records: int, i: int) -> float:
        self._last_s = self._send(records, 100 + i, traffic.FIXED_START_MS + i * 3_600_000,
                                  timed=True)
        return self._last_s

    def _send(self, n: int, seed: int, start_ms: int, timed: bool = False) -> float:
        """Produce `n` records (the daemon stopped meanwhile when `timed`) and wait until
        they are decided; the seconds from all in the topic to all decided."""
        values = [traffic.encode(traffic.unrepeated(r, self._done + j)) for j, r in
                  enumerate(traffic.wire_records(n, seed=seed, start_ms=start_ms))]
        producer = KafkaProducer(bootstrap_servers=self.broker.bootstrap, linger_ms=20)
        with _stopped(self.process.pid) if timed else nullcontext():
            for j, value in enumerate(values):
                producer.send(self.topic, value, partition=j % self.partitions)
            producer.flush()
            started = time.perf_counter()
            started_at = time.time()  # the daemon dates its batches on this clock
            before = self._cpu() if timed else {}
        producer.close()
        self._done += n
        if not timed:
            wait_counted(self.metrics, self.process, self.work, self._outcome, self._done)
            return time.perf_counter() - started
        seconds = timed_end(self.metrics, self.process, self.work, self._outcome, self._done,
                            started_at, self._last_s)
        self.cpu.append({role: v - before[role] for role, v in self._cpu().items()})
        return seconds

    def _cpu(self) -> dict[str, float]:
        """CPU-seconds so far of each role: the scoring processes (summed), the deciding
        process (with one worker, the one process that does both) and the broker."""
        parent = psutil.Process(self.process.pid)
        if self.workers == 1:
            roles = {"one process": _cpu_seconds(parent)}
        else:
            roles = {f"scoring ({self.workers} processes)":
                     sum(map(_cpu_seconds, parent.children(recursive=True))),
                     "deciding": _cpu_seconds(parent)}
        return roles | {"broker": _cpu_seconds(psutil.Process(self.broker.pid))}

    def _stop(self) -> None:
        stop_tree(self.process)


def stop_tree(process: subprocess.Popen[bytes]) -> None:
    """Continue a (maybe stopped) daemon and its children, then stop it: SIGTERM, and
    SIGKILL when it is not gone in two minutes."""
    with suppress(psutil.Error):  # a stopped process would not act on SIGTERM
        _signal_tree(process.pid, signal.SIGCONT)
    process.terminate()
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()


def _progress(line: str) -> None:
    """A step of a long run, on stderr as it happens (the table goes to stdout at the end)."""
    print(f"  {line}", file=sys.stderr, flush=True)


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
    tree = _signal_tree(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for process in tree:
            process.send_signal(signal.SIGCONT)


def _signal_tree(pid: int, sig: signal.Signals) -> list[psutil.Process]:
    """Send `sig` to the process and all its children; the processes signalled."""
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for process in tree:
        process.send_signal(sig)
    return tree


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _samples(metrics: httpx.Client) -> list[Sample]:
    text = metrics.get("/metrics").text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _count(samples: Sequence[Sample], outcome: str) -> float:
    return sum(s.value for s in samples
               if s.name == "driftwatch_records_total" and s.labels.get("outcome") == outcome)


def _last_processed(samples: Sequence[Sample]) -> float:
    return next((s.value for s in samples
                 if s.name == "driftwatch_last_processed_timestamp_seconds"), 0.0)


def _scrape(metrics: httpx.Client, process: subprocess.Popen[bytes], work: Path,
            attempts: int = 3) -> list[Sample]:
    """The daemon's samples. A scrape that fails at the transport (a reset or refused
    connection) while the daemon still runs is tried again, up to `attempts` in all, a fifth
    of a second apart, as a scraper counts one missed scrape rather than end a long run; a
    daemon that exited raises with its log."""
    attempt = 1
    while True:
        try:
            return _samples(metrics)
        except httpx.TransportError:
            _dead(process, work)
            if attempt >= attempts:
                raise
        attempt += 1
        time.sleep(0.2)


def wait_counted(metrics: httpx.Client, process: subprocess.Popen[bytes], work: Path,
                 outcome: str, target: int) -> None:
    """Until the daemon's `outcome` count reaches `target` (an untimed round)."""
    wait_for(lambda: _count(_scrape(metrics, process, work), outcome) >= target
             or _dead(process, work), 3_600, f"{target} records {outcome}")


def timed_end(metrics: httpx.Client, process: subprocess.Popen[bytes], work: Path,
              outcome: str, target: int, started_at: float, expected_s: float) -> float:
    """Seconds from `started_at` (wall clock) to the end of the daemon's batch that brought
    its `outcome` count to `target`. Asleep through the round's expected length, then a scrape
    every half second: the end is the daemon's own time of its last batch, read in the scrape
    that shows the round done, so the polling neither takes CPU from the round nor lengthens
    it."""
    time.sleep(expected_s)
    ended_at = 0.0

    def done() -> bool:
        nonlocal ended_at
        samples = _scrape(metrics, process, work)
        ended_at = _last_processed(samples)
        return _count(samples, outcome) >= target or _dead(process, work)

    wait_for(done, 3_600, f"{target} records {outcome}", interval_s=0.5)
    if ended_at <= started_at:
        raise RuntimeError(f"the daemon's last batch is dated {ended_at:.3f}, before the "
                           f"round started ({started_at:.3f})")
    return ended_at - started_at


def trickle_until_armed(metrics: httpx.Client, process: subprocess.Popen[bytes], work: Path,
                        send: Callable[[int], object]) -> None:
    """`send(i)` the i-th trickle of records (i from 1), a second apart, until every tracked
    segment's drift detectors are calibrated; 30 minutes at most."""
    trickle = 0
    deadline = time.monotonic() + 1_800
    while not drift_armed(_scrape(metrics, process, work)):
        if time.monotonic() > deadline:
            raise TimeoutError("the drift detectors were not calibrated in 30 min")
        trickle += 1
        send(trickle)
        time.sleep(1.0)


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
    return texts_of(list(traffic.wire_records(n, seed=99, start_ms=traffic.FIXED_START_MS)))


def _device() -> str:
    from detectors.embedder import pick_device

    return pick_device("auto")
