"""`driftwatch demo`: the embedded default, end to end on one machine.

A local Tansu broker, HaluEval-based LLM traffic replayed into it (with a little
malformed input, and a topic shift after `SHIFT_AFTER` records), the real daemon consuming
it with drift detection, rules, the canary gate and a signed webhook to a local receiver,
and a live terminal summary read from the daemon's own /metrics endpoint, until Ctrl-C or
--duration. State (references, outbox) lives in a temporary directory.
"""

from __future__ import annotations

import base64
import itertools
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from consumers.settings import BatchSettings, KafkaSettings
from monitor.app.daemon import run as run_daemon
from monitor.config import (
    CheckpointSettings,
    Config,
    DriftReferenceSettings,
    DriftSettings,
    MetricsSettings,
    OverloadSettings,
    ScoringSettings,
)
from monitor.config.acting import (
    CanarySettings,
    OutboxSettings,
    ReviewSettings,
    Rule,
    ShadowSettings,
    WebhookAction,
)
from monitor.local import traffic
from monitor.local.broker import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS, LocalBroker, free_port
from monitor.local.receiver import WebhookReceiver

TOPIC = "llm-traffic"
DEAD_LETTER_TOPIC = "driftwatch-dead-letter"
PARTITIONS = 4
MALFORMED_EVERY = 100  # one bad message per this many good ones
SHIFT_AFTER = 3_000  # QA and summarization first, then dialogue joins: a topic shift
SHADOW_SHARE = 0.2  # stable requests a shadow model also answers
SECRET_ENV = "DRIFTWATCH_DEMO_WEBHOOK_SECRET"


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
        before = traffic.load_examples(tasks=("qa", "summarization"))
        after = traffic.load_examples()
        for seed in itertools.count():
            pool = before if self.sent < SHIFT_AFTER else after
            # A shadow model answers a fifth of the stable requests too (same request_id,
            # so the same partition: the daemon pairs the two answers).
            records = traffic.wire_records(500, seed=seed, examples=pool)
            for record in traffic.with_shadow(list(records), SHADOW_SHARE, seed):
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


def demo_config(bootstrap: str, port: int, state: Path, hook_url: str) -> Config:
    hook = "retrain-hook"
    return Config(
        kafka=KafkaSettings(bootstrap_servers=[bootstrap], topic=TOPIC,
                            group_id="driftwatch-demo", dead_letter_topic=DEAD_LETTER_TOPIC,
                            session_timeout_ms=SESSION_TIMEOUT_MS,
                            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS),
        metrics=MetricsSettings(port=port),
        # Small batches keep the CPU demo lively; the daemon's defaults favour throughput.
        batch=BatchSettings(max_records=32, max_wait_ms=200),
        # Behind by more than this, the models score a uniform sample (all are counted).
        scoring=ScoringSettings(overload=OverloadSettings(max_lag=300)),
        drift=DriftSettings(reference=DriftReferenceSettings(
            warmup_records=150, store=state / "references")),
        actions={hook: WebhookAction(type="webhook", url=hook_url, secret_env=SECRET_ENV)},
        rules=[Rule.model_validate(r) for r in (
            {"name": "prompt-drift", "event_type": "retrain.requested", "actions": [hook],
             "cooldown_seconds": 60, "when": {"kind": "drift", "stream": "prompt"}},
            {"name": "toxic-share", "actions": [hook], "cooldown_seconds": 60,
             "when": {"kind": "rate", "signal": "toxic", "above": 0.02,
                      "window_records": 500, "min_records": 100}},
            {"name": "error-share", "actions": [hook], "cooldown_seconds": 60,
             "when": {"kind": "rate", "signal": "error", "above": 0.05,
                      "window_records": 500, "min_records": 100}},
        )],
        canary=CanarySettings(enabled=True, min_records=100, actions=[hook]),
        shadow=ShadowSettings(enabled=True, min_pairs=100, actions=[hook]),
        # People review a sample: borderline scores, a control share, what drift named.
        review=ReviewSettings(enabled=True, file=state / "review.jsonl",
                              store=state / "review.sqlite3", uniform_rate=0.02),
        outbox=OutboxSettings(path=state / "outbox.sqlite3"),
        checkpoint=CheckpointSettings(path=state / "checkpoint.bin"),
    )


@dataclass
class Snapshot:
    """One scrape of the daemon's /metrics, with sums, breakdowns and quantiles over it."""

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


def render(now: Snapshot, before: Snapshot | None, sent: int, elapsed: float,
           hook: WebhookReceiver | None = None) -> Table:
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
    _acting_rows(table, now, hook)
    return table


def _acting_rows(table: Table, now: Snapshot, hook: WebhookReceiver | None) -> None:
    for stream in ("prompt", "response"):
        stats = now.samples.get("driftwatch_drift_statistic", [])
        limits = {tuple(sorted(labels.items())): v for labels, v in
                  now.samples.get("driftwatch_drift_threshold", [])}
        ratios = [v / limits[key] for labels, v in stats if labels.get("stream") == stream
                  and limits.get(key := tuple(sorted(labels.items())))]
        if ratios:
            table.add_row(f"drift {stream} (worst statistic / threshold)", f"{max(ratios):.2f}")
    detections = now.by("driftwatch_drift_detections_total", "kind")
    if detections:
        table.add_row("drift detections", ", ".join(f"{k} {v:.0f}" for k, v in
                                                    sorted(detections.items())))
    decided = now.by("driftwatch_rule_actions_total", "event_type")
    table.add_row("decisions", ", ".join(f"{k} {v:.0f}" for k, v in sorted(decided.items()))
                  or "0")
    verdicts = [labels["verdict"] for labels, v in now.samples.get("driftwatch_canary_verdict", [])
                if v == 1]
    if verdicts:
        table.add_row("canary verdict", ", ".join(sorted(verdicts)))
    shadow = [labels["verdict"] for labels, v in now.samples.get("driftwatch_shadow_verdict", [])
              if v == 1]
    paired = now.by("driftwatch_shadow_records_total", "outcome")
    if shadow or paired:
        table.add_row("shadow verdict (pairs, unpaired)",
                      f"{', '.join(sorted(shadow)) or 'watching'} ({paired.get('paired', 0):.0f}"
                      f", {paired.get('unpaired', 0):.0f})")
    review = now.by("driftwatch_review_sampled_total", "reason")
    table.add_row("sent for review", ", ".join(f"{k} {v:.0f}" for k, v in sorted(review.items()))
                  or "0")
    table.add_row("outbox depth", f"{now.total('driftwatch_outbox_depth'):.0f}")
    if hook is not None:
        got = ", ".join(f"{k} {v}" for k, v in sorted(hook.types().items())) or "0"
        table.add_row("webhooks received (signature ok)", got)


def _mean_batch(snap: Snapshot) -> str:
    count = snap.total("driftwatch_batch_size_records_count")
    if not count:
        return "-"
    return f"{count:,.0f} ({snap.total('driftwatch_batch_size_records_sum') / count:.0f})"


@dataclass
class Stack:
    """What `demo_stack` runs: broker, replayer, daemon thread and the webhook receiver."""

    bootstrap: str
    port: int
    replayer: Replayer
    daemon: threading.Thread
    hook: WebhookReceiver


@contextmanager
def demo_stack(rate: float, metrics_port: int) -> Iterator[Stack]:
    """The demo's moving parts, started; stopped cleanly on exit (finish, commit, close)."""
    port = metrics_port or free_port()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    os.environ[SECRET_ENV] = secret  # the daemon reads its webhook secret from the environment
    hook = WebhookReceiver(secret, path="/retrain")
    with LocalBroker() as broker, tempfile.TemporaryDirectory(prefix="driftwatch-demo-") as tmp:
        broker.create_topics([(TOPIC, PARTITIONS), (DEAD_LETTER_TOPIC, 1)])
        config = demo_config(broker.bootstrap, port, Path(tmp), hook.url)
        stop = threading.Event()
        replayer = Replayer(broker.bootstrap, rate, stop)
        daemon = threading.Thread(target=run_daemon, args=(config, stop), name="driftwatch-daemon")
        replayer.start()
        daemon.start()
        try:
            yield Stack(broker.bootstrap, port, replayer, daemon, hook)
        finally:
            stop.set()
            replayer.join(timeout=10)
            daemon.join(timeout=30)
            hook.close()


def run_demo(rate: float, duration_s: float | None, metrics_port: int,
             until_scored: int | None = None) -> int:
    """Run until Ctrl-C, `duration_s` seconds, or (when set) `until_scored` records scored,
    whichever comes first."""
    console = Console()
    console.print("[bold]driftwatch demo[/]: loading models and starting a local Tansu broker ...")
    now: Snapshot | None = None
    with demo_stack(rate, metrics_port) as stack:
        console.print(f"broker {stack.bootstrap}, topic {TOPIC} ({PARTITIONS} partitions), "
                      f"replaying HaluEval traffic at {rate:g} records/s")
        console.print(f"metrics: http://127.0.0.1:{stack.port}/metrics  (also /healthz, "
                      "/readyz, /canary)")
        started = time.monotonic()
        before: Snapshot | None = None
        url = f"http://127.0.0.1:{stack.port}/metrics"
        try:
            with Live(console=console, refresh_per_second=2, transient=False) as live:
                while (duration_s is None or time.monotonic() - started < duration_s) and not (
                        until_scored is not None and now is not None
                        and now.total("driftwatch_records_total", outcome="scored")
                        >= until_scored):
                    time.sleep(1.0)
                    if not stack.daemon.is_alive():
                        raise RuntimeError("the daemon thread stopped; see the log above")
                    try:
                        before, now = now, Snapshot.scrape(url)
                    except httpx.HTTPError:
                        continue  # the endpoint is starting
                    live.update(render(now, before, stack.replayer.sent,
                                       time.monotonic() - started, stack.hook))
        except KeyboardInterrupt:
            console.print("stopping: finishing the batch in hand and committing ...")
    if now is not None:
        console.print()
        dead = now.total("driftwatch_dead_letter_total")
        console.print(
            f"demo summary: {now.total('driftwatch_records_total', outcome='scored'):.0f} "
            f"records scored, {dead:.0f} dead-lettered, {stack.replayer.sent} replayed, "
            f"{sum(stack.hook.types().values())} signed webhooks received"
        )
    return 0
