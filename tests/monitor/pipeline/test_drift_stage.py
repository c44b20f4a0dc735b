"""The drift stage on its own: a batch gives the same embedding detections, at the same
records, as the same records one at a time (the detector resets mid-batch and goes on)."""

from __future__ import annotations

import logging
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from consumers.wire import Record
from detectors.mmd_online import OnlineMMD
from monitor.config import DriftSettings
from monitor.pipeline.drift import DriftStage
from monitor.pipeline.model_scoring import BatchScores
from monitor.pipeline.reference import ReferenceStore

# Loads a model, calibrates a detector or simulates at length: not in make test-fast.
pytestmark = pytest.mark.slow

SEG = ("m", "", "", "")


def _stream(n_ref: int, n_live: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(n_ref + n_live // 3, 16))
    shifted = rng.normal(loc=0.8, size=(n_live - n_live // 3, 16))  # a lasting shift
    rows = np.concatenate([ref, shifted]).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _feed(stage: DriftStage, rows: np.ndarray, first: int) -> list[tuple[str, int]]:
    n = len(rows)
    scores = BatchScores(np.ones(n, dtype=bool), np.full(n, np.nan), np.full(n, np.nan),
                         np.full(n, np.nan), {}, [()] * n, [()] * n, rows,
                         rows[:, ::-1].copy())  # responses: another view of each record
    records = [Record(request_id=f"r{first + i}") for i in range(n)]
    numeric = {"latency_seconds": np.full(n, 0.1)}
    events = stage.update(records, scores, numeric, ["ok"] * n, {SEG: np.arange(n)})
    return [(e.stream, first + e.index) for e in events if e.kind == "embedding"]


def test_a_batch_detects_what_the_same_records_one_at_a_time_detect() -> None:
    settings = DriftSettings.model_validate({
        "reference": {"warmup_records": 200},
        "embedding": {"ert": 50, "window_size": 20, "n_bootstraps": 500, "n_features": 64}})
    rows = _stream(200, 600)
    whole, single = DriftStage(settings, "cpu"), DriftStage(settings, "cpu")
    _feed(whole, rows[:200], 0)
    _feed(single, rows[:200], 0)
    batched = _feed(whole, rows[200:], 200)
    one_by_one = [e for i in range(200, 800) for e in _feed(single, rows[i:i + 1], i)]
    prompt = [i for s, i in batched if s == "prompt"]
    assert len(prompt) >= 3, batched  # the shift is seen, and seen again after each reset
    assert batched == sorted(one_by_one, key=lambda e: (e[0] != "prompt", e[1]))


def test_segments_that_share_a_snapshot_calibrate_once_and_detect_alike(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = DriftSettings.model_validate({
        "reference": {"source": "snapshot", "store": str(tmp_path)},
        "embedding": {"ert": 50, "window_size": 20, "n_bootstraps": 500, "n_features": 64}})
    rows = _stream(200, 600)
    ReferenceStore(tmp_path).save("default", rows[:200], rows[:200, ::-1].copy(),
                                  {"latency_seconds": np.full(200, 0.1)},
                                  {"outcome": np.array(["ok"] * 200)}, "test", "")
    calibrations = []
    original = OnlineMMD._calibrate

    def counted(self: OnlineMMD, *args: object) -> object:
        calibrations.append(self)
        return original(self, *args)

    monkeypatch.setattr(OnlineMMD, "_calibrate", counted)
    stage = DriftStage.from_settings(settings, "cpu", keep_warmup=False)
    segments = [(f"m{k}", "", "", "") for k in range(4)]
    found = {}
    for seg in segments:  # each segment sees the same records: its detections must match
        n = 600
        scores = BatchScores(np.ones(n, dtype=bool), np.full(n, np.nan), np.full(n, np.nan),
                             np.full(n, np.nan), {}, [()] * n, [()] * n, rows[200:],
                             rows[200:, ::-1].copy())
        records = [Record(request_id=f"r{i}") for i in range(n)]
        events = stage.update(records, scores, {"latency_seconds": np.full(n, 0.1)},
                              ["ok"] * n, {seg: np.arange(n)})
        found[seg] = [(e.stream, e.index) for e in events if e.kind == "embedding"]
    assert len(calibrations) == 2  # prompt and response, once for all four segments
    assert found[segments[0]] and all(f == found[segments[0]] for f in found.values())


def test_background_calibration_keeps_batches_flowing_then_detects_and_survives_a_checkpoint(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = DriftSettings.model_validate({
        "reference": {"warmup_records": 200},
        "embedding": {"ert": 50, "window_size": 20, "n_bootstraps": 500, "n_features": 64}})
    rows = _stream(200, 600)
    stage = DriftStage(settings, "cpu", calibrate_in_background=True)
    release = threading.Event()
    build = stage._build

    def held(*args: np.ndarray) -> dict[str, OnlineMMD]:
        release.wait(60)  # the calibration is still running while batches arrive
        return build(*args)

    stage._build = held  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="monitor.pipeline.drift")
    assert _feed(stage, rows[:200], 0) == []
    state = stage.state()[SEG]
    assert state.pending is not None and state.mmd == {}
    assert _feed(stage, rows[200:260], 200) == []  # not blocked, not tested
    assert state.untested == 60
    # A checkpoint taken now holds the reference; a restored stage calibrates it again.
    copy = pickle.loads(pickle.dumps(stage.state()))
    assert copy[SEG].pending is None and copy[SEG].pending_reference is not None
    restored = DriftStage(settings, "cpu", calibrate_in_background=False)
    restored.restore(copy)
    assert set(restored.state()[SEG].mmd) == {"prompt", "response"}
    release.set()
    state.pending.result(timeout=60)
    found = _feed(stage, rows[260:], 260)
    assert state.pending is None and set(state.mmd) == {"prompt", "response"}
    assert [i for s, i in found if s == "prompt"], found  # the shift after 467 is seen
    assert "in the background" in caplog.text
    assert "60 record(s) came while they were calibrated" in caplog.text


def test_an_error_class_new_to_the_reference_is_one_event_at_its_first_record() -> None:
    settings = DriftSettings.model_validate({
        "reference": {"warmup_records": 50},
        "embedding": {"ert": 50, "window_size": 20, "n_bootstraps": 200, "n_features": 16},
        "new_error_classes": {"enabled": True, "example_ids": 2, "max_per_segment": 2}})
    stage = DriftStage(settings, "cpu")
    rows = _stream(300, 0)
    n = 50

    def feed(first: int, outcomes: list[str]) -> list[tuple[str, int, tuple[str, ...]]]:
        part = rows[first:first + n]
        scores = BatchScores(np.ones(n, dtype=bool), np.full(n, np.nan), np.full(n, np.nan),
                             np.full(n, np.nan), {}, [()] * n, [()] * n, part, part.copy())
        records = [Record(request_id=f"r{first + i}") for i in range(n)]
        events = stage.update(records, scores, {"latency_seconds": np.full(n, 0.1)},
                              outcomes, {SEG: np.arange(n)})
        return [(e.examples[0][1], first + e.index, tuple(r for r, _, _ in e.examples))
                for e in events if e.kind == "new_error_class"]

    warmup = ["ok"] * 45 + ["error:timeout"] * 5
    assert feed(0, warmup) == []  # the reference: ok and timeouts
    live = ["ok"] * n
    live[3] = live[10] = "error:timeout"  # known: not news
    live[7] = live[9] = live[20] = "error:status 503"
    assert feed(50, live) == [("error:status 503", 57, ("r57", "r59"))]
    assert feed(100, live) == []  # announced once, not again
    live2 = ["ok"] * n
    live2[1], live2[2] = "error:content_filter", "error:overloaded"
    # max_per_segment 2: the second class new to this batch is past the cap
    assert feed(150, live2) == [("error:content_filter", 151, ("r151",))]

    # A batch that completes the reference (a catch-up) is checked from the next record on.
    stage = DriftStage(settings, "cpu")
    n = 60
    catch_up = ["ok"] * n
    catch_up[5] = catch_up[52] = "error:status 500"  # in the reference, then again: known
    catch_up[55] = "error:timeout"
    assert feed(0, catch_up) == [("error:timeout", 55, ("r55",))]


def test_a_store_that_cannot_take_the_warm_up_reference_leaves_the_segment_armed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Raised, the failed save had the batch run again, collecting its records into the
    warm-up a second time; now the segment is armed with the reference it learnt."""
    from monitor.telemetry.metrics import METRICS

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")  # the store's root cannot be made: every save fails (OSError)
    settings = DriftSettings.model_validate({
        "reference": {"warmup_records": 200},
        "embedding": {"ert": 50, "window_size": 20, "n_bootstraps": 500, "n_features": 64}})
    stage = DriftStage(settings, "cpu", store=ReferenceStore(blocked / "refs"))
    before = METRICS.DRIFT_REFERENCE_SAVE_FAILURES._value.get()
    rows = _stream(200, 600)
    assert _feed(stage, rows[:200], 0) == []  # does not raise
    assert METRICS.DRIFT_REFERENCE_SAVE_FAILURES._value.get() == before + 1
    assert "not saved under" in caplog.text
    state = stage.state()[SEG]
    assert set(state.mmd) == {"prompt", "response"} and state.collected == 200
    assert [i for s, i in _feed(stage, rows[200:], 200) if s == "prompt"]  # it detects


def test_a_rules_rollover_adopts_the_records_after_its_decision_a_commands_the_last_ones(
) -> None:
    """A drift is decided within a few records of its start: a rule that rolled over to the
    last `warmup_records` records adopted mostly the old traffic, and went on alarming (or,
    worse, fell quiet against a reference that was neither)."""
    settings = DriftSettings.model_validate({
        "reference": {"warmup_records": 100},
        "embedding": {"ert": 200, "window_size": 20, "n_bootstraps": 2_000, "n_features": 64}})
    rng = np.random.default_rng(3)

    def rows(n: int, loc: float) -> np.ndarray:
        r = rng.normal(loc=loc, size=(n, 16))
        return (r / np.linalg.norm(r, axis=1, keepdims=True)).astype(np.float32)

    old, new = rows(150, 0.0), rows(400, 0.8)
    ruled, commanded = DriftStage(settings, "cpu"), DriftStage(settings, "cpu")
    for stage in (ruled, commanded):
        _feed(stage, old[:100], 0)  # the warm-up
        _feed(stage, old[100:], 100)
        assert _feed(stage, new[:20], 150)  # the shift, decided within its first records
    ruled.request_rollover({"model": "m"}, "rule r", following=True)
    commanded.request_rollover({"model": "m"}, "command")
    # Until the next 100 records are in, the old reference judges them; a second request
    # meanwhile (the rule firing again) changes nothing.
    assert _feed(ruled, new[20:70], 170)
    ruled.request_rollover({"model": "m"}, "rule r", following=True)
    _feed(ruled, new[70:120], 220)
    _feed(commanded, new[20:120], 170)

    def reference(stage: DriftStage) -> np.ndarray:
        return stage.state()[SEG].mmd["prompt"].reference.cpu().numpy()

    np.testing.assert_allclose(reference(ruled), new[20:120], atol=1e-6)
    # The last records at its request (70 since the segment was armed), 50 of them old.
    np.testing.assert_allclose(reference(commanded), np.concatenate([old[100:], new[:20]]),
                               atol=1e-6)
    later_ruled = [i for s, i in _feed(ruled, new[120:], 270) if s == "prompt"]
    later_commanded = [i for s, i in _feed(commanded, new[120:], 270) if s == "prompt"]
    # Against the new traffic: false alarms alone (280 records at an ERT of 200).
    assert len(later_commanded) >= 12 and len(later_ruled) <= 6, (later_ruled, later_commanded)
