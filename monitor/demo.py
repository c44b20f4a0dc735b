"""`driftwatch demo`: the embedded default, end to end on one machine.

A local Tansu broker, HaluEval-based LLM traffic replayed into it (with a little
malformed input), the real daemon consuming it, and a live terminal summary read
from the daemon's own /metrics endpoint, until Ctrl-C or --duration.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import httpx
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from consumers.settings import BatchSettings, KafkaSettings
from monitor import traffic
from monitor.config import Config, MetricsSettings, OverloadSettings, ScoringSettings
from monitor.daemon import run as run_daemon
from monitor.local_broker import LocalBroker, free_port

TOPIC = "llm-traffic"
DEAD_LETTER_TOPIC = "driftwatch-dead-letter"
PARTITIONS = 4
MALFORMED_EVERY = 100  # one bad message per this many good ones


class Replayer(threading.Thread):
    """Produces traffic at a steady rate, like a serving fleet's request log."""

    def __init__(self, bootstrap: str, rate: float, stop: threading.Event) -> None:
        super().__init__(name="driftwatch-demo-replay", daemon=True)
        self.servers, self.rate, self.halt = bootstrap, rate, stop
        self.sent = 0

    def run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.servers, linger_ms=20)
        malformed = itertools.cycle(traffic.malformed_payloads(60, seed=7))
        started = time.monotonic()
        for seed in itertools.count():
            for record in traffic.wire_records(5_000, seed=seed):
                if self.halt.is_set():
                    producer.close(timeout=5)
                    return
                producer.send(TOPIC, traffic.encode(record), key=str(record["request_id"]).encode())
                self.sent += 1
                if self.sent % MALFORMED_EVERY == 0:
                    producer.send(TOPIC, next(malformed)[0])
                ahead = self.sent / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    self.halt.wait(ahead)


@dataclass
class Snapshot:
    at: float
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    @classmethod
    def scrape(cls, url: str) -> Snapshot:
        snap = cls(time.monotonic())
        text = httpx.get(url, timeout=2).text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                snap.samples.setdefault(s.name, []).append((s.labels, s.value))
        return snap

    def total(self, name: str, **match: str) -> float:
        return sum(v for labels, v in self.samples.get(name, [])
                   if all(labels.get(k) == want for k, want in match.items()))

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for labels, v in self.samples.get(name, []):
            if all(labels.get(k) == want for k, want in match.items()):
                out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + v
        return out

    def quantile(self, q: float, name: str, **match: str) -> float | None:
        """histogram_quantile over the summed buckets, as PromQL does it."""
        buckets = sorted(
            (float(le), count)
            for le, count in self.by(f"{name}_bucket", "le", **match).items()
        )
        if not buckets or buckets[-1][1] == 0:
            return None
        rank, prev_le, prev_count = q * buckets[-1][1], 0.0, 0.0
        for le, count in buckets:
            if count >= rank:
                if le == float("inf"):
                    return prev_le
                return prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1)
            prev_le, prev_count = le, count
        return prev_le


def render(now: Snapshot, before: Snapshot | None, sent: int, elapsed: float) -> Table:
    table = Table(title=f"driftwatch demo: {elapsed:,.0f}s, Ctrl-C to stop", show_header=False)
    table.add_column(style="bold cyan")
    table.add_column(justify="right")
    scored = now.total("driftwatch_records_total", outcome="scored")
    rate = 0.0
    if before is not None and now.at > before.at:
        scored_before = before.total("driftwatch_records_total", outcome="scored")
        rate = (scored - scored_before) / (now.at - before.at)
    dead = now.by("driftwatch_dead_letter_total", "reason")
    errors = now.total("driftwatch_responses_total", status="error")
    responses = now.total("driftwatch_responses_total")
    table.add_row("ready", "yes" if now.total("driftwatch_ready") else "no")
    table.add_row("records replayed", f"{sent:,}")
    table.add_row("records scored", f"{scored:,.0f}")
    table.add_row("records/s", f"{rate:,.0f}")
    table.add_row("consumer lag", f"{now.total('driftwatch_consumer_lag'):,.0f}")
    table.add_row("dead letters", ", ".join(f"{r}={n:.0f}" for r, n in sorted(dead.items()))
                  or "0")
    table.add_row("error rate", f"{errors / responses:.1%}" if responses else "-")
    for deployment in ("stable", "canary"):
        p50 = now.quantile(0.5, "driftwatch_request_latency_seconds", deployment=deployment)
        p99 = now.quantile(0.99, "driftwatch_request_latency_seconds", deployment=deployment)
        if p50 is not None and p99 is not None:
            table.add_row(f"latency p50 / p99 ({deployment})", f"{p50:.2f}s / {p99:.2f}s")
    tokens = now.by("driftwatch_tokens_total", "kind")
    table.add_row("tokens prompt / completion",
                  f"{tokens.get('prompt', 0):,.0f} / {tokens.get('completion', 0):,.0f}")
    table.add_row("cost", f"${now.total('driftwatch_cost_usd_total'):,.2f}")
    table.add_row("batches (mean size)", _mean_batch(now))
    scored_by_models = now.total("driftwatch_model_scored_records_total")
    if scored_by_models:
        flags = now.by("driftwatch_flags_total", "flag")
        shares = ", ".join(f"{name} {flags.get(name, 0) / scored_by_models:.1%}" for name in
                           ("toxic", "ungrounded", "novel_number", "refusal", "empty_response"))
        table.add_row("model-scored records", f"{scored_by_models:,.0f}")
        table.add_row("flagged", shares)
        g50 = now.quantile(0.5, "driftwatch_groundedness_score")
        if g50 is not None:
            table.add_row("groundedness p50", f"{g50:.2f}")
        table.add_row("scored fraction (overload)",
                      f"{now.total('driftwatch_scored_fraction'):.2f}")
        table.add_row("device", ", ".join(sorted({labels.get("device", "") for labels, _ in
                                                  now.samples.get("driftwatch_model_info", [])})))
    return table


def _mean_batch(snap: Snapshot) -> str:
    count = snap.total("driftwatch_batch_size_records_count")
    if not count:
        return "-"
    return f"{count:,.0f} ({snap.total('driftwatch_batch_size_records_sum') / count:.0f})"


def run_demo(rate: float, duration_s: float | None, metrics_port: int) -> int:
    console = Console()
    port = metrics_port or free_port()
    console.print("[bold]driftwatch demo[/]: loading models and starting a local Tansu broker ...")
    with LocalBroker() as broker:
        broker.create_topics([(TOPIC, PARTITIONS), (DEAD_LETTER_TOPIC, 1)])
        config = Config(
            kafka=KafkaSettings(bootstrap_servers=[broker.bootstrap], topic=TOPIC,
                                group_id="driftwatch-demo", dead_letter_topic=DEAD_LETTER_TOPIC),
            metrics=MetricsSettings(port=port),
            # Small batches keep the CPU demo lively; the daemon's defaults favour throughput.
            batch=BatchSettings(max_records=32, max_wait_ms=200),
            # Behind by more than this, the models score a uniform sample (all are counted).
            scoring=ScoringSettings(overload=OverloadSettings(max_lag=300)),
        )
        stop = threading.Event()
        replayer = Replayer(broker.bootstrap, rate, stop)
        daemon = threading.Thread(target=run_daemon, args=(config, stop), name="driftwatch-daemon")
        console.print(f"broker {broker.bootstrap}, topic {TOPIC} ({PARTITIONS} partitions), "
                      f"replaying HaluEval traffic at {rate:g} records/s")
        console.print(f"metrics: http://127.0.0.1:{port}/metrics  (also /healthz, /readyz)")
        replayer.start()
        daemon.start()
        started = time.monotonic()
        before: Snapshot | None = None
        now: Snapshot | None = None
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            with Live(console=console, refresh_per_second=2, transient=False) as live:
                while duration_s is None or time.monotonic() - started < duration_s:
                    time.sleep(1.0)
                    if not daemon.is_alive():
                        raise RuntimeError("the daemon thread stopped; see the log above")
                    try:
                        before, now = now, Snapshot.scrape(url)
                    except httpx.HTTPError:
                        continue  # the endpoint is starting
                    live.update(render(now, before, replayer.sent, time.monotonic() - started))
        except KeyboardInterrupt:
            console.print("stopping: finishing the batch in hand and committing ...")
        finally:
            stop.set()
            replayer.join(timeout=10)
            daemon.join(timeout=30)
        if now is not None:
            console.print()
            dead = now.total("driftwatch_dead_letter_total")
            console.print(
                f"demo summary: {now.total('driftwatch_records_total', outcome='scored'):.0f} "
                f"records scored, {dead:.0f} dead-lettered, {replayer.sent} replayed"
            )
    return 0
