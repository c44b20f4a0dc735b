"""Drift through the shared pipeline, run by `driftwatch backtest` on recorded traffic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from monitor.local import traffic

T0 = traffic.FIXED_START_MS  # replayed event times start here

SHIFT = 600
# One worker runs them all, so they share the module's models (see `models`).
pytestmark = pytest.mark.xdist_group("backtest-drift")


@pytest.fixture(scope="module")
def models():
    """One set of model scorers for the in-process backtests here: the model loads once, and
    the texts they share are embedded once (the embedder's cache)."""
    from monitor.app.wiring import build_models
    from monitor.config import OfflineConfig

    return build_models(OfflineConfig(scorers=["sanity"], drift={"enabled": True}), live=False)


def _traffic(path: Path) -> None:
    qa = traffic.load_examples(2_000, ("qa",))
    dialogue = traffic.load_examples(2_000, ("dialogue",))
    mix = traffic.TrafficMix(canary_share=0.0, error_rate=0.0)
    before = traffic.wire_records(SHIFT, seed=41, start_ms=T0, mix=mix, examples=qa)
    after = traffic.wire_records(300, seed=42, start_ms=T0, mix=mix, examples=dialogue)
    lines = [traffic.encode(r) for r in [*before, *after]]
    lines.insert(10, b"{not json")  # a dead letter keeps its place in the indices
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_backtest_reports_a_topic_shift_at_the_right_record(tmp_path: Path) -> None:
    data = tmp_path / "traffic.jsonl"
    _traffic(data)
    config = tmp_path / "dw.yaml"
    config.write_text(yaml.safe_dump({
        "scorers": ["latency", "sanity"],
        "metrics": {"labels": ["deployment"]},
        "drift": {
            "enabled": True,
            "reference": {"source": "warmup", "warmup_records": 300},
            "embedding": {"ert": 500, "window_size": 30, "n_features": 128,
                          "n_bootstraps": 2_000},
            "features": {"window_size": 200},
        },
    }))
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "backtest", "--config", str(config),
         "--input", str(data)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0] == {"index": 10, "type": "dead_letter", "reason": "not_json",
                         "detail": events[0]["detail"]}
    shift_at = SHIFT + 1  # the dead letter at line 10 moves every later record by one
    prompt = [e for e in events if e["type"] == "drift.embedding" and e["stream"] == "prompt"]
    assert prompt, done.stderr
    assert all(e["index"] >= shift_at for e in prompt)  # no false alarm before the shift
    assert prompt[0]["index"] - shift_at <= 60
    assert prompt[0]["segment"] == ["", "", "stable", ""]
    assert prompt[0]["statistic"] > prompt[0]["threshold"]
    assert prompt[0]["q_value"] is None
    assert prompt[0]["window"] in (7, 30)  # the window length that crossed: 30 or its quarter
    examples = prompt[0]["examples"]
    assert len(examples) == 3  # the window rows farthest from the reference: all post-shift
    assert {x["request_id"] for x in examples} <= {f"req-42-{i:08d}" for i in range(300)}
    assert all(x["text"] and isinstance(x["nearest_reference"], int) for x in examples)
    assert "drift.embedding prompt" in done.stderr  # the summary table
    assert "Loading weights" not in done.stderr  # ... alone: no model-loading chatter


def test_drift_metrics_follow_the_stage(tmp_path: Path, models) -> None:
    from prometheus_client import REGISTRY

    from monitor.app.backtest import backtest
    from monitor.config import OfflineConfig

    data = tmp_path / "traffic.jsonl"
    _traffic(data)
    config = OfflineConfig(
        # By deployment: segmenting by route would give the dialogue turns a segment (and a
        # warm-up reference) of their own, which is the point of segments, not of this test.
        scorers=["sanity"], metrics={"labels": ["deployment"]},
        drift={"enabled": True, "reference": {"warmup_records": 300},
               "embedding": {"ert": 500, "window_size": 30, "n_features": 128,
                             "n_bootstraps": 2_000}},
    )

    def detections() -> float:
        return REGISTRY.get_sample_value("driftwatch_drift_detections_total",
                                         {"kind": "embedding", "stream": "prompt"}) or 0.0

    before = detections()
    events = list(backtest(data.read_bytes().splitlines(), config, models))
    fired = sum(1 for e in events if e["type"] == "drift.embedding" and e["stream"] == "prompt")
    assert fired >= 1 and detections() - before == fired
    segment = {"model": "", "model_version": "", "deployment": "stable", "route": ""}
    assert REGISTRY.get_sample_value("driftwatch_drift_reference_records", segment) == 300
    threshold = REGISTRY.get_sample_value("driftwatch_drift_threshold",
                                          {"stream": "prompt", **segment})
    assert threshold is not None and threshold > 0


def test_an_error_rate_jump_is_an_early_change_event(models) -> None:
    from monitor.app.backtest import backtest
    from monitor.config import OfflineConfig

    qa = traffic.load_examples(2_000, ("qa",))
    calm = traffic.TrafficMix(canary_share=0.0, error_rate=0.02)
    stormy = traffic.TrafficMix(canary_share=0.0, error_rate=0.30)
    records = [*traffic.wire_records(700, seed=51, start_ms=T0, mix=calm, examples=qa),
               *traffic.wire_records(400, seed=52, start_ms=T0, mix=stormy, examples=qa)]
    config = OfflineConfig(
        scorers=["latency", "sanity"], metrics={"labels": ["deployment"]},
        drift={"enabled": True, "reference": {"warmup_records": 300},
               "embedding": {"ert": 500, "window_size": 30, "n_features": 64,
                             "n_bootstraps": 1_000}})
    # In process, on the module's models: the QA texts are embedded once for every test.
    events = list(backtest([traffic.encode(r) for r in records], config, models=models))
    changes = [e for e in events if e["type"] == "drift.change" and e["stream"] == "error_rate"]
    assert changes, events
    # Batches are 256 records, so an event is placed at the last record of its batch.
    assert 700 <= changes[0]["index"] < 700 + 2 * 256
    assert np.isnan(changes[0]["statistic"])  # river gives a flag, not a statistic


def test_a_pinned_snapshot_arms_the_detectors_without_warm_up(tmp_path: Path, models) -> None:
    from monitor.app.backtest import backtest
    from monitor.app.reference_build import build_reference
    from monitor.config import OfflineConfig
    from monitor.pipeline.reference import ReferenceStore

    qa = traffic.load_examples(2_000, ("qa",))
    mix = traffic.TrafficMix(canary_share=0.0, error_rate=0.0)
    base = OfflineConfig(scorers=["sanity"], metrics={"labels": ["deployment"]})
    store = ReferenceStore(tmp_path / "refs")
    reference = [traffic.encode(r) for r in
                 traffic.wire_records(400, seed=61, start_ms=T0, mix=mix, examples=qa)]
    build_reference(reference, base, store, "prod", "test")
    build_reference(reference[:100], base, store, "prod", "test")  # v2, not pinned below
    data = tmp_path / "traffic.jsonl"
    _traffic(data)
    config = OfflineConfig(
        scorers=["sanity"], metrics={"labels": ["deployment"]},
        drift={"enabled": True,
               "reference": {"source": "snapshot", "store": str(tmp_path / "refs"),
                             "name": "prod", "version": 1},
               "embedding": {"ert": 500, "window_size": 30, "n_features": 128,
                             "n_bootstraps": 2_000}},
    )
    events = list(backtest(data.read_bytes().splitlines(), config, models))
    prompt = [e for e in events if e["type"] == "drift.embedding" and e["stream"] == "prompt"]
    shift_at = SHIFT + 1
    assert prompt and all(e["index"] >= shift_at for e in prompt)
    assert prompt[0]["index"] - shift_at <= 60


def test_a_warm_up_reference_is_saved_once_and_reused_after_a_restart(tmp_path: Path,
                                                                      models) -> None:
    from consumers.batcher import Batch
    from consumers.decode import Decoder
    from monitor.app.wiring import assemble
    from monitor.config import OfflineConfig
    from monitor.pipeline.drift import DriftStage, warmup_name
    from monitor.pipeline.reference import ReferenceStore

    config = OfflineConfig(
        scorers=["sanity"], metrics={"labels": ["deployment"]},
        drift={"enabled": True,
               "reference": {"warmup_records": 100, "store": str(tmp_path / "refs")},
               "embedding": {"ert": 200, "window_size": 20, "n_features": 64,
                             "n_bootstraps": 1_000}},
    )
    qa = traffic.load_examples(2_000, ("qa",))
    mix = traffic.TrafficMix(canary_share=0.0, error_rate=0.0)
    decoder = Decoder(1 << 20)
    records = [decoder.decode(traffic.encode(r)) for r in
               traffic.wire_records(150, seed=71, start_ms=T0, mix=mix, examples=qa)]
    store = ReferenceStore(tmp_path / "refs")
    name = warmup_name("default", ("", "", "stable", ""))

    def run() -> DriftStage:  # a daemon's life: a stage, a pipeline, some traffic
        stage = DriftStage.from_settings(config.drift, "cpu", "minilm")
        pipeline = assemble(config.scorers, ["deployment"], 50, models=models, drift=stage)
        pipeline.process(Batch(records, [()] * len(records)))
        return stage

    first = run()
    assert store.versions(name) == [1]
    saved = store.load(name)
    assert saved.meta.records == 100 and saved.meta.embedding_model == "minilm"
    second = run()  # after a restart: armed from the saved reference, nothing relearnt
    assert store.versions(name) == [1]
    state = second._segments[("", "", "stable", "")]
    assert state.mmd and state.collected == 100
    np.testing.assert_array_equal(state.mmd["prompt"].reference.cpu().numpy(),
                                  first._segments[("", "", "stable", "")]
                                  .mmd["prompt"].reference.cpu().numpy())


def test_a_drift_rule_decides_and_its_rollover_action_adopts_the_new_traffic(
        tmp_path: Path, models) -> None:
    from monitor.app.backtest import backtest
    from monitor.config import OfflineConfig

    qa = traffic.load_examples(2_000, ("qa",))
    dialogue = traffic.load_examples(2_000, ("dialogue",))
    mix = traffic.TrafficMix(canary_share=0.0, error_rate=0.0)
    records = [*traffic.wire_records(SHIFT, seed=61, start_ms=T0, mix=mix, examples=qa),
               *traffic.wire_records(1_400, seed=62, start_ms=T0 + 3_600_000, mix=mix,
                                     examples=dialogue)]
    data = tmp_path / "traffic.jsonl"
    data.write_bytes(b"\n".join(traffic.encode(r) for r in records) + b"\n")
    settings: dict[str, object] = {
        "scorers": ["latency", "sanity"], "metrics": {"labels": ["deployment"]},
        # ERT 5,000: a false alarm in the 700 records checked below is unlikely (~13%).
        "drift": {"enabled": True, "reference": {"warmup_records": 300},
                  "embedding": {"ert": 5_000, "window_size": 30, "n_features": 128,
                                "n_bootstraps": 5_000}},
        "actions": {"roll": {"type": "reference_rollover"}},
        "rules": [{"name": "prompt-drift", "cooldown_seconds": 0,
                   "when": {"kind": "drift", "stream": "prompt", "clear_after_records": 100}}],
    }
    # In process, with one set of models: the second run's embeddings come from the cache.
    lines = data.read_bytes().splitlines()
    plain = list(backtest(lines, OfflineConfig(**settings), models))
    settings["rules"][0]["actions"] = ["roll"]  # type: ignore[index]
    rolled = list(backtest(lines, OfflineConfig(**settings), models))

    def prompt_drift(events: list[dict]) -> list[int]:
        return [e["index"] for e in events
                if e["type"] == "drift.embedding" and e["stream"] == "prompt"]

    decisions = [e for e in plain if e.get("rule") == "prompt-drift" and e["status"] == "firing"]
    assert decisions and decisions[0]["type"] == "drift.detected"
    assert decisions[0]["index"] == prompt_drift(plain)[0] >= SHIFT
    assert decisions[0]["segment"] == {"deployment": "stable"}
    assert decisions[0]["evidence"]["statistic"] > decisions[0]["evidence"]["threshold"]
    # Without a rollover the detector re-fires all through the new traffic; with one, the
    # reference becomes the traffic after the decision, and false alarms are what is left
    # (ERT 5,000; 700 records).
    late = SHIFT + 700
    assert len([i for i in prompt_drift(plain) if i >= late]) >= 10
    assert len([i for i in prompt_drift(rolled) if i >= late]) <= 3  # 60 without (this seed)
    rolled_decisions = [e for e in rolled if e.get("rule") == "prompt-drift"]
    assert rolled_decisions[0]["actions"] == ["roll"]
    assert rolled_decisions[-1]["status"] == "resolved"  # quiet once the reference moved


def test_a_changed_chat_template_is_flagged_per_record_and_drifts_the_token_ratio(
        tmp_path: Path, models) -> None:
    from monitor.app.backtest import backtest
    from monitor.config import OfflineConfig

    qa = traffic.load_examples(2_000, ("qa",))
    mix = traffic.TrafficMix(canary_share=0.0, error_rate=0.0)
    records = list(traffic.wire_records(1_000, seed=71, start_ms=T0, mix=mix, examples=qa))
    for r in records[600:]:  # the stack now wraps every prompt in a 60-token template
        r["prompt_tokens"] += 60
    config = OfflineConfig(
        scorers=["latency", "tokens", "sanity", "tokenization"],
        metrics={"labels": ["deployment"]},
        drift={"enabled": True, "reference": {"warmup_records": 300},
               "embedding": {"ert": 500, "window_size": 30, "n_features": 64,
                             "n_bootstraps": 1_000},
               "features": {"window_size": 100}},
        rules=[{"name": "tokens", "when": {"kind": "rate", "signal": "token_mismatch",
                                           "above": 0.05, "window_records": 100,
                                           "min_records": 50}}])
    out = list(backtest([traffic.encode(r) for r in records], config, models=models))
    fired = [e["index"] for e in out if e["type"] == "quality.regressed"
             and e["status"] == "firing"]
    # Learnt on the first 200 records; a 60-token template is off the line for most prompts.
    assert fired and 600 <= fired[0] < 650, out
    ratio = [e["index"] for e in out if e["type"] == "drift.feature"
             and e["stream"] == "prompt_token_ratio"]
    assert ratio and min(ratio) >= 600, ratio  # the ratio's shift is feature drift too
