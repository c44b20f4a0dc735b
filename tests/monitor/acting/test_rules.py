"""The rules engine: conditions, firing, cooldown, resolving, restart, config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import TypeAdapter

from monitor.acting.rules import Observation, RuleEngine
from monitor.config import ConfigError, load_config
from monitor.config.acting import Action, Rule
from monitor.types import Decision, DriftEvent

SEG = ("m", "v1", "stable", "")
ACTIONS = TypeAdapter(dict[str, Action]).validate_python({
    "hook": {"type": "webhook", "url": "http://127.0.0.1:1/hook"},
    "pager": {"type": "alertmanager", "url": "http://127.0.0.1:2"},
})


def _rule(**fields: object) -> Rule:
    return Rule.model_validate({"name": "r", "actions": ["hook", "pager"], **fields})


def _obs(at: float, n: int = 100, toxic: float = 0.0, latency: float = 0.1,
         drift: tuple[DriftEvent, ...] = (), messages: int = 0, dead: int = 0) -> Observation:
    hits = np.zeros(n)
    hits[: round(n * toxic)] = 1.0
    return Observation(at, {SEG: np.arange(n)}, {"toxic": hits, "error": np.zeros(n)},
                       np.full(n, latency), drift, dead_letters=dead, messages=messages)


def _run(engine: RuleEngine, observations: list[Observation]) -> list[tuple[int, Decision]]:
    return [(i, d) for i, o in enumerate(observations) for d in engine.evaluate(o)]


def test_a_rate_rule_fires_once_repeats_after_cooldown_and_resolves_to_alerts_only() -> None:
    rule = _rule(when={"kind": "rate", "signal": "toxic", "above": 0.05,
                       "window_records": 200, "min_records": 100}, cooldown_seconds=50)
    engine = RuleEngine([rule], ACTIONS)
    # 10 s a batch: clean, then toxic for 12 batches (120 s), then clean again.
    shares = [0.0] * 3 + [0.2] * 12 + [0.0] * 4
    fired = _run(engine, [_obs(10.0 * i, toxic=s) for i, s in enumerate(shares)])
    firing = [(i, d) for i, d in fired if d.status == "firing"]
    # Batch 3 fires. Repeats after 50 s: batches 8, 13.
    assert [i for i, _ in firing] == [3, 8, 13]
    assert all(d.targets == ("hook", "pager") for _, d in firing)
    first = firing[0][1]
    assert first.event_type == "quality.regressed" and first.segment == {
        "model": "m", "model_version": "v1", "deployment": "stable"}
    # Checked after every record: the 11th toxic record (the batch leads with them) tips the
    # 200-record window over 5%, wherever the batch boundaries fall.
    assert first.index == 10
    assert first.evidence["rate"] == pytest.approx(0.055) and first.evidence["records"] == 200
    assert "toxic share 0.055 (bound 0.05) over 200 records" in first.summary
    resolved = [(i, d) for i, d in fired if d.status == "resolved"]
    # The window is all clean again two batches after the toxic ones stop; only alerts care.
    assert [(i, d.targets) for i, d in resolved] == [(16, ("pager",))]


def test_within_the_cooldown_a_new_incident_reaches_only_alertmanager() -> None:
    rule = _rule(when={"kind": "rate", "signal": "toxic", "above": 0.05,
                       "window_records": 100, "min_records": 100}, cooldown_seconds=1_000)
    engine = RuleEngine([rule], ACTIONS)
    shares = [0.2, 0.0, 0.2]
    fired = _run(engine, [_obs(10.0 * i, toxic=s) for i, s in enumerate(shares)])
    assert [(i, d.status, d.targets) for i, d in fired] == [
        (0, "firing", ("hook", "pager")), (1, "resolved", ("pager",)), (2, "firing", ("pager",))]


def test_a_restart_remembers_the_cooldown_through_last_fired() -> None:
    rule = _rule(when={"kind": "rate", "signal": "toxic", "above": 0.05,
                       "window_records": 100, "min_records": 100}, cooldown_seconds=100)
    keys: list[str] = []

    def last_fired(key: str) -> float | None:
        keys.append(key)
        return 95.0  # the previous run acted at t=95

    engine = RuleEngine([rule], ACTIONS, last_fired=last_fired)
    fired = _run(engine, [_obs(t, toxic=0.2) for t in (100.0, 150.0, 200.0)])
    assert keys == ["r|deployment=stable,model=m,model_version=v1"]
    assert [(i, d.targets) for i, d in fired] == [(0, ("pager",)), (2, ("hook", "pager"))]


def test_a_latency_rule_uses_the_quantile_of_its_window() -> None:
    rule = _rule(when={"kind": "latency", "quantile": 0.99, "above_seconds": 2.0,
                       "window_records": 500, "min_records": 300})
    engine = RuleEngine([rule], ACTIONS)
    assert _run(engine, [_obs(0.0, n=200, latency=5.0)]) == []  # fewer than min_records
    slow = np.r_[np.full(490, 0.2), np.full(10, 3.0)]  # 2% slow: p99 is 3 s
    obs = Observation(1.0, {SEG: np.arange(500)}, {}, slow)
    (decision,) = engine.evaluate(obs)
    assert decision.evidence["latency_seconds"] == pytest.approx(3.0)
    assert decision.index == 499


def test_a_drift_rule_needs_k_consecutive_detections_and_clears_after_quiet_records() -> None:
    rule = _rule(when={"kind": "drift", "detector": "embedding", "stream": "prompt",
                       "consecutive": 2, "clear_after_records": 200})
    engine = RuleEngine([rule], ACTIONS)

    def event(stream: str, index: int) -> DriftEvent:
        return DriftEvent("embedding", stream, SEG, index, 0.3, 0.1,
                          examples=(("req-1", "a prompt", 7),))

    fired = _run(engine, [
        _obs(0, drift=(event("prompt", 40),)),  # 1
        _obs(1, drift=(event("response", 40),)),  # another stream: ignored
        _obs(2, drift=(event("prompt", 10),)),  # 2 in a row: fires at record 10
        _obs(3), _obs(4),  # 89 + 200 quiet records: clears
        _obs(5, drift=(event("prompt", 0),)),  # 1 again: not enough
    ])
    assert [(i, d.status, d.index) for i, d in fired] == [(2, "firing", 10), (4, "resolved", 99)]
    firing = fired[0][1]
    assert firing.event_type == "drift.detected"
    assert firing.evidence == {"statistic": 0.3, "threshold": 0.1, "consecutive": 2.0}
    assert firing.details["examples"] == [
        {"request_id": "req-1", "text": "a prompt", "nearest_reference": 7}]


def test_a_dead_letter_rule_watches_all_traffic() -> None:
    rule = _rule(when={"kind": "rate", "signal": "dead_letter", "above": 0.1,
                       "window_records": 1_000, "min_records": 500})
    engine = RuleEngine([rule], ACTIONS)
    fired = _run(engine, [_obs(0, messages=400, dead=10), _obs(1, messages=400, dead=200)])
    ((i, decision),) = fired
    assert i == 1 and decision.segment == {}
    assert decision.evidence["rate"] == pytest.approx(210 / 800)
    assert "all traffic" in decision.summary


def _config(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "dw.yaml"
    path.write_text(yaml.safe_dump({"kafka": {"topic": "t"}, **extra}))
    return path


def test_a_bad_rule_is_named_with_its_field(tmp_path: Path) -> None:
    rules = [{"name": "ok", "when": {"kind": "latency", "above_seconds": 1}},
             {"name": "toxic-share", "when": {"kind": "rate", "signal": "toxic", "above": 1.5}}]
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, rules=rules))
    assert "rule 'toxic-share' (rules[1]): when.above = 1.5" in str(err.value)


@pytest.mark.parametrize(("extra", "message"), [
    ({"rules": [{"name": "a", "when": {"kind": "latency", "above_seconds": 1},
                 "actions": ["nowhere"]}]},
     "rule 'a': actions: 'nowhere' is not defined"),
    ({"scorers": ["latency"],
      "rules": [{"name": "b", "when": {"kind": "rate", "signal": "ungrounded", "above": 0.1}}]},
     "rule 'b': when.signal: 'ungrounded' needs the 'groundedness' scorer"),
    ({"drift": {"enabled": False}, "rules": [{"name": "c", "when": {"kind": "drift"}}]},
     "rule 'c': when.kind: 'drift' needs drift.enabled: true"),
    ({"scorers": ["latency"], "rules": [{"name": "c2", "when": {"kind": "drift"}}]},
     "and a model scorer"),
    ({"rules": [{"name": "d", "when": {"kind": "latency", "above_seconds": 1}},
                {"name": "d", "when": {"kind": "latency", "above_seconds": 2}}]},
     "rule 'd': name: used by more than one rule"),
    ({"rules": [{"name": "e", "when": {"kind": "rate", "signal": "error", "above": 0.1,
                                       "window_records": 50, "min_records": 100}}]},
     "min_records (100) is larger than window_records (50)"),
    ({"rules": [{"name": "n", "when": {"kind": "drift", "detector": "new_error_class"}}]},
     "rule 'n': when.detector: 'new_error_class' needs drift.new_error_classes.enabled: true"),
    ({"rules": [{"name": "l", "when": {"kind": "labelled", "flag": "toxic", "above": 0.1}}]},
     "rule 'l': when.kind: 'labelled' needs review.enabled: true and review.labels_topic"),
])
def test_rule_cross_checks_say_what_to_fix(tmp_path: Path, extra: dict[str, object],
                                           message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, **extra))
    assert message in str(err.value)


def test_a_rate_spike_inside_one_large_batch_fires_at_the_same_record_as_in_small_batches(
) -> None:
    rule = _rule(when={"kind": "rate", "signal": "toxic", "above": 0.1,
                       "window_records": 50, "min_records": 50})
    hits = np.zeros(1_000)
    hits[400:430] = 1.0  # a burst in the middle, over by the end of the stream

    def first_firing(batch: int) -> list[tuple[str, int]]:
        engine = RuleEngine([rule], ACTIONS)
        out = []
        for start in range(0, hits.size, batch):
            part = hits[start:start + batch]
            obs = Observation(0.0, {SEG: np.arange(start, start + part.size)},
                              {"toxic": hits}, np.zeros(hits.size))
            out += [(d.status, d.index) for d in engine.evaluate(obs)]
        return out

    # 6 toxic records in the last 50 exceed 10% at record 405; one batch sees it too.
    assert first_firing(7)[0] == first_firing(1_000)[0] == ("firing", 405)
    assert first_firing(1_000) == [("firing", 405), ("resolved", 999)]


def _two_segments(at: dict[tuple[str, ...], float], toxic: float = 0.2, n: int = 100
                  ) -> Observation:
    segs = list(at)
    hits = np.zeros(n * len(segs))
    for j in range(len(segs)):
        hits[j * n: j * n + round(n * toxic)] = 1.0
    return Observation(max(at.values()), {s: np.arange(j * n, (j + 1) * n)
                                          for j, s in enumerate(segs)},
                       {"toxic": hits, "error": np.zeros(hits.size)}, np.full(hits.size, 0.1),
                       times=at)


def test_cooldowns_follow_each_segments_own_clock_and_never_run_backwards() -> None:
    # A catch-up: partition A (segment A) is an hour ahead of partition B (segment B), and
    # batches mix them. Each segment's incidents keep their own cooldown, in order.
    rule = _rule(when={"kind": "rate", "signal": "toxic", "above": 0.05,
                       "window_records": 100, "min_records": 100}, cooldown_seconds=100)
    engine = RuleEngine([rule], ACTIONS)
    a, b = ("m", "v1", "stable", ""), ("m", "v2", "stable", "")
    clean = _two_segments({a: 0.0, b: 0.0}, toxic=0.0)
    fired = []
    for t_a, t_b in ((3_600.0, 0.0), (3_650.0, 50.0), (3_500.0, 120.0), (3_720.0, 130.0)):
        fired += engine.evaluate(_two_segments({a: t_a, b: t_b}))
        engine.evaluate(Observation(0.0, clean.segments, clean.signals,
                                    clean.latency_seconds, times={a: t_a, b: t_b}))
    hooks = [(d.segment["model_version"], d.at) for d in fired if "hook" in d.targets]
    # Segment B fires at 0 and 120 (its cooldown is its own); A at 3600 and 3720, and the
    # out-of-order 3500 is read as A's latest time, 3650, within the cooldown.
    assert hooks == [("v1", 3_600.0), ("v2", 0.0), ("v2", 120.0), ("v1", 3_720.0)]
    ats = [d.at for d in fired if d.segment["model_version"] == "v1"]
    assert ats == sorted(ats)  # dated monotonically


def test_a_firing_time_from_the_far_future_in_the_outbox_does_not_silence_the_rule() -> None:
    rule = _rule(when={"kind": "rate", "signal": "toxic", "above": 0.05,
                       "window_records": 100, "min_records": 100}, cooldown_seconds=100)
    year_9999 = 253_402_300_799.0  # written by a version that did not bound event times
    engine = RuleEngine([rule], ACTIONS, last_fired=lambda key: year_9999)
    fired = _run(engine, [_obs(1_700_000_000.0, toxic=0.2)])
    assert [(d.status, d.targets) for _, d in fired] == [("firing", ("hook", "pager"))]


def _drift_event(stream: str, index: int) -> DriftEvent:
    return DriftEvent("embedding", stream, SEG, index, 0.3, 0.1)


def test_one_alarm_on_each_stream_at_the_same_record_is_not_two_consecutive_windows() -> None:
    rule = _rule(when={"kind": "drift", "detector": "embedding", "stream": "any",
                       "consecutive": 2, "clear_after_records": 1_000})
    engine = RuleEngine([rule], ACTIONS)
    fired = _run(engine, [
        _obs(0, drift=(_drift_event("prompt", 40), _drift_event("response", 40))),
        _obs(1, drift=(_drift_event("response", 70),)),  # the response stream's second window
    ])
    assert [(i, d.status, d.index, d.details["stream"]) for i, d in fired] == [
        (1, "firing", 70, "response")]
    assert fired[0][1].evidence["consecutive"] == 2.0


def test_a_drift_decision_is_dated_at_the_detection_that_completed_it() -> None:
    # Events arrive prompt-then-response; the prompt's second window (record 30) completes
    # the condition, although a response alarm comes later in the list at an earlier record.
    rule = _rule(when={"kind": "drift", "detector": "embedding", "stream": "any",
                       "consecutive": 2})
    engine = RuleEngine([rule], ACTIONS)
    fired = _run(engine, [
        _obs(0, drift=(_drift_event("prompt", 90),)),
        _obs(1, drift=(_drift_event("prompt", 30), _drift_event("response", 10))),
    ])
    [(i, decision)] = fired
    assert (i, decision.index, decision.details["stream"]) == (1, 30, "prompt")
    # And never dated before the latest detection that caused it, whatever the list order.
    late = RuleEngine([_rule(when={"kind": "drift", "stream": "any"})], ACTIONS)
    [(_, d)] = _run(late, [_obs(0, drift=(_drift_event("prompt", 80),
                                          _drift_event("response", 20)))])
    assert d.index == 20  # consecutive 1: the first alarm, record 20, completed it


def test_each_new_error_class_fires_once_with_every_target_and_any_leaves_it_out() -> None:
    rule = _rule(when={"kind": "drift", "detector": "new_error_class",
                       "clear_after_records": 150}, cooldown_seconds=3_600)
    any_drift = Rule.model_validate({"name": "any", "actions": ["hook"],
                                     "when": {"kind": "drift", "detector": "any"}})
    engine = RuleEngine([rule, any_drift], ACTIONS)

    def new(cls: str, index: int, *ids: str) -> DriftEvent:
        return DriftEvent("new_error_class", "outcome", SEG, index, float(len(ids)),
                          float("nan"), examples=tuple((rid, cls, -1) for rid in ids))

    fired = _run(engine, [
        _obs(0, drift=(new("error:status 503", 12, "a", "b"),)),
        # Within the cooldown a second class is news too: every target again.
        _obs(1, drift=(new("error:content_filter", 5, "c"),)),
        _obs(2), _obs(3),  # 94 + 100 records with no new class: resolved, to alerts only
    ])
    assert [(i, d.rule, d.status, d.index, d.targets) for i, d in fired] == [
        (0, "r", "firing", 12, ("hook", "pager")), (1, "r", "firing", 5, ("hook", "pager")),
        (2, "r", "resolved", 99, ("pager",))]
    first = fired[0][1]
    assert first.event_type == "drift.new_error_class"
    assert first.details["error_class"] == "error:status 503"
    assert first.details["request_ids"] == ["a", "b"]
    assert "new error class 'error:status 503', first seen in a, b" in first.summary


def test_a_labelled_rule_fires_on_the_corrected_rate_once_enough_labels_stand_behind_it(
        ) -> None:
    rule = _rule(when={"kind": "labelled", "flag": "toxic", "above": 0.05, "min_labels": 30})
    engine = RuleEngine([rule], ACTIONS)
    estimates: dict[str, tuple[float, int]] = {}

    def obs(at: float) -> Observation:
        return Observation(at, {SEG: np.arange(10)}, {"error": np.zeros(10)}, np.zeros(10),
                           corrected=lambda flag, seg: estimates.get(flag))

    assert engine.evaluate(obs(0)) == []  # no labels yet
    estimates["toxic"] = (0.2, 10)
    assert engine.evaluate(obs(1)) == []  # too few labels behind it
    estimates["toxic"] = (0.08, 40)
    [fired] = engine.evaluate(obs(2))
    assert fired.status == "firing" and fired.evidence == {
        "corrected_rate": 0.08, "above": 0.05, "labels": 40.0}
    assert "label-corrected toxic rate 0.08 (bound 0.05) from 40 reviewed records" in \
        fired.summary
    estimates["toxic"] = (0.03, 60)
    assert [d.status for d in engine.evaluate(obs(3))] == ["resolved"]
