"""State checkpoints: a restart resumes the detectors, rules and canary gate exactly where the
checkpoint left them; records read again are not applied twice; a bad file is a cold start."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from consumers.batcher import Batch
from consumers.decode import Decoder
from consumers.wire import Origin
from monitor.acting.canary import CanaryGate
from monitor.acting.rules import RuleEngine
from monitor.app.wiring import assemble
from monitor.config import OfflineConfig
from monitor.local import traffic
from monitor.pipeline.checkpoint import (
    FORMAT,
    Checkpoint,
    Checkpointer,
    CheckpointError,
    CheckpointInUse,
    CheckpointSettings,
    read,
    write,
)
from monitor.pipeline.drift import DriftStage
from monitor.pipeline.model_scoring import ModelScorers
from monitor.telemetry.metrics import METRICS as m
from monitor.types import Decision, DriftEvent

# Loads a model, calibrates a detector or simulates at length: not in make test-fast.
pytestmark = pytest.mark.slow

FINGERPRINTS = {"segments": "s1", "drift": "d1", "rules": "r1", "canary": "c1"}


def _settings(tmp_path: Path, name: str = "ckpt.bin") -> CheckpointSettings:
    # Due after every batch; the tests choose which file to keep.
    return CheckpointSettings(path=tmp_path / name, interval_seconds=1e-9)


# -- the file --------------------------------------------------------------------------------


def test_a_checkpoint_is_written_atomically_for_this_user_only_and_read_back(
        tmp_path: Path) -> None:
    path = tmp_path / "state" / "ckpt.bin"
    written = Checkpoint({("t", 0): 42}, {"rules": {"a": np.arange(3)}}, {"rules": "r"}, 1.0)
    size = write(path, written)
    assert size == path.stat().st_size
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.bin"]  # no temporary left over
    back = read(path)
    assert back.positions == {("t", 0): 42} and back.fingerprints == {"rules": "r"}
    np.testing.assert_array_equal(back.parts["rules"]["a"], np.arange(3))  # type: ignore[index]


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda b: b[:-7], "corrupt (checksum mismatch)"),
    (lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], "corrupt (checksum mismatch)"),
    (lambda b: b"{}", "is not a driftwatch checkpoint"),
    (lambda b: b"", "is not a driftwatch checkpoint"),
    (lambda b: b[:7] + (FORMAT + 1).to_bytes(2, "big") + b[9:],
     f"has checkpoint format {FORMAT + 1}; this driftwatch reads format {FORMAT}"),
])
def test_a_damaged_or_foreign_checkpoint_is_a_warning_and_a_cold_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, damage, reason: str) -> None:
    settings = _settings(tmp_path)
    write(settings.path, Checkpoint({("t", 0): 1}, {"rules": {}}, {"rules": "r1"}, 1.0))
    settings.path.write_bytes(damage(settings.path.read_bytes()))
    with pytest.raises(CheckpointError, match=r"ckpt\.bin"):
        read(settings.path)
    checkpoints = Checkpointer(settings, FINGERPRINTS)
    with caplog.at_level(logging.WARNING):
        assert checkpoints.load() is None
    assert reason in caplog.text and "cold start" in caplog.text
    checkpoints.close()


def test_a_file_others_can_write_is_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.bin"
    write(path, Checkpoint({}, {}, {}, 1.0))
    os.chmod(path, 0o666)
    with pytest.raises(CheckpointError, match="writable by other users"):
        read(path)


def test_a_payload_that_would_run_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("touch pwned",))

    path = tmp_path / "ckpt.bin"
    write(path, Checkpoint({}, {"rules": Evil()}, {}, 1.0))
    with pytest.raises(CheckpointError, match="is not allowed in a checkpoint"):
        read(path)
    assert not Path("pwned").exists()


@pytest.mark.parametrize(("module", "name"), [
    ("torch", "os.system"),  # a path through a library's attributes
    ("builtins", "eval"),
    ("torch", "os"),  # a module a library happens to hold
    ("torch", "sys"),
])
def test_names_that_lead_outside_the_allowed_libraries_are_refused(
        tmp_path: Path, module: str, name: str) -> None:
    import io

    from monitor.pipeline.checkpoint import _Unpickler

    payload = f"c{module}\n{name}\n.".encode()  # protocol 0: GLOBAL module name
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        _Unpickler(io.BytesIO(payload)).load()


def test_getattr_reaches_an_allowed_objects_methods_only() -> None:
    from river.drift import PageHinkley

    from monitor.pipeline.checkpoint import _bound_method

    detector = PageHinkley()
    assert _bound_method(detector, "update") == detector.update
    for obj, name in [(detector, "__class__"), (detector, "__init__"), (PageHinkley, "update"),
                      (os, "system"), (detector, "threshold")]:
        with pytest.raises(pickle.UnpicklingError, match="not allowed"):
            _bound_method(obj, name)


def test_a_part_whose_config_changed_is_dropped_and_the_rest_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(tmp_path)
    write(settings.path, Checkpoint({("t", 0): 5}, {"rules": {"x": 1}, "canary": {"y": 2}},
                                    {"rules": "r0", "canary": "c1"}, 1.0))
    checkpoints = Checkpointer(settings, FINGERPRINTS)
    with caplog.at_level(logging.WARNING):
        loaded = checkpoints.load()
    assert loaded is not None and loaded.parts == {"canary": {"y": 2}}
    assert loaded.positions == {("t", 0): 5}
    assert "checkpoint part 'rules' dropped: its config changed" in caplog.text
    checkpoints.close()


def test_two_instances_cannot_share_a_checkpoint_path(tmp_path: Path) -> None:
    first = Checkpointer(_settings(tmp_path), FINGERPRINTS)
    with pytest.raises(CheckpointInUse, match="give each instance its own"):
        Checkpointer(_settings(tmp_path), FINGERPRINTS)
    first.close()
    Checkpointer(_settings(tmp_path), FINGERPRINTS).close()  # free again once released


# -- resuming the pipeline's state ---------------------------------------------------------------

CONFIG = OfflineConfig(
    scorers=["status", "sanity"], metrics={"labels": ["deployment"]},
    drift={"enabled": True, "reference": {"warmup_records": 100},
           "embedding": {"ert": 200, "window_size": 20, "n_features": 64,
                         "n_bootstraps": 1_000}},
    rules=[{"name": "errors", "when": {"kind": "rate", "signal": "error", "above": 0.06,
                                       "window_records": 150, "min_records": 100}},
           {"name": "drift", "when": {"kind": "drift", "stream": "prompt"}}],
    canary={"enabled": True, "min_records": 40, "soft_gates": ["error", "embedding_drift"]},
)
BATCH = 50


@pytest.fixture(scope="module")
def batches() -> list[Batch]:
    """700 records, a topic shift after 400, in batches of 50 from one partition."""
    mix = traffic.TrafficMix(canary_share=0.3, error_rate=0.08)
    decoder = Decoder(1 << 20)
    raw = [*traffic.wire_records(400, seed=5, start_ms=traffic.FIXED_START_MS, mix=mix,
                                 examples=traffic.load_examples(600, ("qa",))),
           *traffic.wire_records(300, seed=6, start_ms=traffic.FIXED_START_MS + 400_000, mix=mix,
                                 examples=traffic.load_examples(600, ("dialogue",)))]
    records = [decoder.decode(traffic.encode(r)) for r in raw]
    return [Batch(records[i:i + BATCH], [(Origin("t", 0, j),) for j in range(i, i + BATCH)])
            for i in range(0, len(records), BATCH)]


@pytest.fixture(scope="module")
def models() -> ModelScorers:
    return ModelScorers(CONFIG.scorers, CONFIG.scoring)  # one embedder, its cache shared


class Run:
    """A daemon's pipeline with everything it decides written down."""

    def __init__(self, models: ModelScorers, checkpoints: Checkpointer | None = None) -> None:
        self.events: list[DriftEvent] = []
        self.decisions: list[Decision] = []
        self.drift = DriftStage.from_settings(CONFIG.drift, "cpu", "minilm", keep_warmup=False)
        self.canary = CanaryGate(CONFIG.canary)
        self.pipeline = assemble(
            CONFIG.scorers, ["deployment"], 50, models=models, drift=self.drift,
            on_events=self.events.extend, rules=RuleEngine(CONFIG.rules, CONFIG.actions),
            canary=self.canary, on_decisions=self.decisions.extend, checkpoints=checkpoints)

    def feed(self, batches: list[Batch]) -> Run:
        for batch in batches:
            self.pipeline.process(batch)
        return self

    def seen(self) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        return ([(e.kind, e.stream, e.segment, e.index, repr(e.statistic)) for e in self.events],
                [(d.rule, d.status, d.segment, d.summary, d.at) for d in self.decisions])


def _replayed() -> float:
    return m.CHECKPOINT_REPLAYED._value.get()


def test_a_restart_from_a_checkpoint_decides_exactly_as_a_run_without_one(
        tmp_path: Path, batches: list[Batch], models: ModelScorers) -> None:
    whole = Run(models).feed(batches)
    events, decisions = whole.seen()
    assert any(e[0] == "embedding" for e in events), "the shift should be detected"
    assert {d[0] for d in decisions} == {"errors", "drift"}

    settings = _settings(tmp_path)
    kept = tmp_path / "kept.bin"
    first_checkpoints = Checkpointer(settings, FINGERPRINTS)
    first = Run(models, first_checkpoints).feed(batches[:6])  # records 0-299, checkpointed
    shutil.copy(settings.path, kept)
    first_events, first_decisions = (list(x) for x in first.seen())
    first.feed(batches[6:8])  # applied, then the process dies before the next checkpoint
    first_checkpoints.close()
    shutil.copy(kept, settings.path)

    # Kafka's committed offset trails the checkpoint by a batch: that batch is read again,
    # scored and counted, and not applied to the state twice.
    replayed = _replayed()
    second = Run(models, Checkpointer(settings, FINGERPRINTS)).feed(batches[5:])
    assert _replayed() - replayed == BATCH
    again_events, again_decisions = second.seen()
    assert first_events + again_events == events
    assert first_decisions + again_decisions == decisions
    # The detectors are bit for bit where the uninterrupted run left them.
    seg = ("", "", "stable", "")
    for stream in ("prompt", "response"):
        a, b = whole.drift.state()[seg].mmd[stream], second.drift.state()[seg].mmd[stream]
        assert (a.t, a.statistic) == (b.t, b.statistic)
    status = whole.canary.status()["models"]
    assert status and all(sum(model["records"].values()) > 300  # type: ignore[index]
                          for model in status.values())  # type: ignore[union-attr]
    assert second.canary.status() == whole.canary.status()


def test_without_a_checkpoint_the_state_starts_cold(
        tmp_path: Path, batches: list[Batch], models: ModelScorers) -> None:
    settings = _settings(tmp_path)
    checkpoints = Checkpointer(settings, FINGERPRINTS)
    run = Run(models, checkpoints).feed(batches[:3])
    assert run.drift.state()[("", "", "stable", "")].mmd  # armed after 100 stable records
    run.pipeline.close()
    checkpoints.close()
    settings.path.unlink()
    cold = Run(models, Checkpointer(settings, FINGERPRINTS))
    assert cold.drift.state() == {}
