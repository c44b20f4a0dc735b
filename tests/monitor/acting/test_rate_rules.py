"""Rate rules against the segment's own reference rate (a CUSUM), on real text scored by the
default toxicity scorer: quiet on clean traffic that the scorer flags at about 2%, quick on a
rise, and the same decision whatever the batch size."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from detectors.insults_corpus import load_insults
from detectors.rate_shift import RateShift, reference_rate, run_length, threshold
from detectors.toxicity import ProfanityCheckScorer
from monitor.acting.rules import Observation, RuleEngine
from monitor.config import load_config
from monitor.config.acting import RateCondition, Rule
from monitor.local.traffic import load_examples
from monitor.types import Decision

# Loads a model, calibrates a detector or simulates at length: not in make test-fast.
pytestmark = pytest.mark.slow

SEG = ("m", "v1", "stable", "")
EXAMPLE = Path(__file__).resolve().parents[3] / "driftwatch.yaml"


@functools.cache
def _flags() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Default-scorer flags of HaluEval answers, of comments labelled not insulting (casual
    speech it flags far more often) and of insults."""
    scorer = ProfanityCheckScorer()
    corpus = load_insults()
    answers = scorer.score([e.right for e in load_examples(1000)]) >= 0.5
    comments = scorer.score(list(corpus.texts)) >= 0.5
    return answers, comments[corpus.labels == 0], comments[corpus.labels == 1]


def clean_traffic(n: int, seed: int) -> np.ndarray:
    """Answers with 8% casual comments among them: benign text flagged at about 2%."""
    answers, benign, _ = _flags()
    rng = np.random.default_rng(seed)
    casual = rng.random(n) < 0.08
    return np.where(casual, rng.choice(benign, n), rng.choice(answers, n)).astype(np.float64)


def with_insults(flags: np.ndarray, share: float, seed: int) -> np.ndarray:
    _, _, insults = _flags()
    rng = np.random.default_rng(seed + 1000)
    injected = rng.random(flags.size) < share
    return np.where(injected, rng.choice(insults, flags.size), flags)


def example_rule() -> Rule:
    [rule] = [r for r in load_config(EXAMPLE).rules if r.name == "toxic-share"]
    return rule


def decide(rule: Rule, flags: np.ndarray, batch: int = 256) -> list[Decision]:
    engine = RuleEngine([rule], {a: example_actions()[a] for a in rule.actions})
    decisions: list[Decision] = []
    for start in range(0, flags.size, batch):
        chunk = flags[start:start + batch]
        obs = Observation(1.7e9 + start, {SEG: np.arange(start, start + chunk.size)},
                          {"toxic": np.concatenate([np.zeros(start), chunk])},
                          np.zeros(start + chunk.size))
        decisions += engine.evaluate(obs)
    return decisions


@functools.cache
def example_actions() -> dict[str, object]:
    return dict(load_config(EXAMPLE).actions)


def test_the_example_rule_learns_the_reference_rate_and_stays_quiet_on_clean_traffic() -> None:
    rule = example_rule()
    assert isinstance(rule.when, RateCondition) and rule.when.relative
    fixed = rule.model_copy(update={"when": RateCondition(
        kind="rate", signal="toxic", above=0.02, window_records=1000, min_records=200)})
    quiet, noisy = 0, 0
    for seed in range(5):
        flags = clean_traffic(6000, seed)
        assert 0.012 < flags.mean() < 0.035  # the scorer's rate on this benign text
        quiet += sum(d.status == "firing" for d in decide(rule, flags))
        noisy += sum(d.status == "firing" for d in decide(fixed, flags))
    assert quiet == 0
    # The example as it was (an absolute 2% over 1,000 records) pages on the same traffic.
    assert noisy >= 3


def test_a_5_percent_insult_share_is_decided_within_hundreds_of_records() -> None:
    delays = []
    for seed in range(8):
        flags = clean_traffic(6000, seed)
        flags[3000:] = with_insults(flags[3000:], 0.05, seed)
        [firing] = [d for d in decide(example_rule(), flags) if d.status == "firing"]
        delays.append(firing.index - 3000)
        e = firing.evidence
        assert e["reference_rate"] == pytest.approx(flags[:1000].mean())
        assert e["rate"] > e["in_control_rate"] > e["reference_rate"]
        assert e["statistic"] == e["threshold"]  # as it was at the deciding record
    # Insults are flagged at 76%: the rise is 3.8 points. The fixed window took 870-2,200.
    assert min(delays) >= 0 and np.median(delays) < 700 and max(delays) < 1200, delays


def test_a_batch_decides_at_the_same_record_as_one_record_at_a_time() -> None:
    flags = clean_traffic(4000, 7)
    flags[2000:] = with_insults(flags[2000:], 0.08, 7)
    by_batch = {b: [(d.status, d.index) for d in decide(example_rule(), flags, batch=b)]
                for b in (1, 37, 512)}
    assert by_batch[1] and by_batch[1] == by_batch[37] == by_batch[512]


def test_the_alarm_resolves_once_the_evidence_is_offset() -> None:
    flags = clean_traffic(9000, 3)
    flags[2000:3000] = with_insults(flags[2000:3000], 0.2, 3)
    statuses = [(d.status, d.index) for d in decide(example_rule(), flags)]
    assert [s for s, _ in statuses] == ["firing", "resolved"]
    assert 2000 < statuses[0][1] < 2200 and 3000 < statuses[1][1] < 6000


def test_the_threshold_gives_the_stated_run_length_between_false_alarms() -> None:
    # Simulated CUSUMs on Bernoulli(p0) against the Markov-chain run length.
    p0, p1, ert = 0.05, 0.10, 2000.0
    h = threshold(p0, p1, ert)
    hit, miss = np.log(p1 / p0), np.log((1 - p1) / (1 - p0))
    rng = np.random.default_rng(0)
    s, alarm_at, t = np.zeros(2000), np.zeros(2000), 0
    while (alarm_at == 0).any():
        t += 1
        s = np.maximum(0.0, s + np.where(rng.random(s.size) < p0, hit, miss))
        crossed = (s >= h) & (alarm_at == 0)
        alarm_at[crossed] = t
    assert alarm_at.mean() == pytest.approx(ert, rel=0.08)
    assert run_length(p0, p0, p1, h) == pytest.approx(ert, rel=0.01)


def test_the_in_control_rate_is_the_references_upper_bound() -> None:
    assert reference_rate(20, 1000) == pytest.approx(0.0289, abs=2e-4)
    assert reference_rate(0, 1000) == pytest.approx(0.0030, abs=1e-4)
    shift = RateShift(increase=0.03, reference_records=1000, ert=100_000)
    assert shift.update(np.r_[np.ones(20), np.zeros(980), [np.nan] * 5]) is None
    assert shift.ready and shift.reference == 0.02 and shift.p0 == pytest.approx(0.0289, abs=1e-4)


def test_window_fields_without_a_bound_and_test_fields_with_one_are_refused() -> None:
    with pytest.raises(ValidationError, match="belong to a rule with an absolute bound"):
        RateCondition.model_validate({"kind": "rate", "signal": "toxic", "window_records": 500})
    with pytest.raises(ValidationError, match="belong to a rule against the reference rate"):
        RateCondition.model_validate({"kind": "rate", "signal": "toxic", "above": 0.05,
                                      "ert": 1000})


def test_bench_rules_reports_false_decisions_and_delays_per_rule(tmp_path: Path) -> None:
    from monitor.local.bench_rules import bench_rules

    config = tmp_path / "dw.yaml"
    config.write_text(
        "scorers: [latency, status, toxicity]\ndrift: {enabled: false}\nrules:\n"
        "  - {name: toxic-share, when: {kind: rate, signal: toxic, above_reference_by: 0.03}}\n")
    figures = {f.rule: f for f in bench_rules(3000, 1, config)}
    assert set(figures) == {"toxic-share", "old-example-0.02", "fixed-window-0.05"}
    toxic = figures["toxic-share"]
    assert toxic.false_decisions == 0 and toxic.clean_records == 2000
    [delay] = toxic.delays
    assert 0 <= delay < 1500
