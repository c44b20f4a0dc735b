"""The review queue: stratified sampling with reasons within a budget, and estimates from
labels that the stratified design does not bias."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitor.acting.review import ReviewSampler, ReviewStore
from monitor.config import ConfigError
from monitor.config.acting import ReviewSettings

SEG = ("m", "v1", "stable", "")


def _sampler(tmp_path: Path, **settings: object) -> ReviewSampler:
    config = ReviewSettings.model_validate({"enabled": True, "file": str(tmp_path / "r.jsonl"),
                                            **settings})
    return ReviewSampler(config, ReviewStore(tmp_path / "review.sqlite3"), 0.5, 0.5, seed=0)


def test_reasons_strata_and_the_hourly_budget(tmp_path: Path) -> None:
    sampler = _sampler(tmp_path, borderline_rate=1.0, uniform_rate=0.5, max_per_hour=4)
    ids = [f"r{i}" for i in range(8)]
    toxicity = np.array([0.55, 0.05, 0.02, 0.01, 0.03, 0.45, 0.9, 0.0])  # 0, 5: borderline
    chosen = sampler.sample(ids, [SEG] * 8, {"toxicity": toxicity},
                            {"toxic": toxicity >= 0.5}, {"r2": "drift"}, now=7_200.0)
    reasons = {ids[i]: r for i, r in chosen}
    assert reasons["r0"] == ["borderline"] and "drift" in reasons["r2"]
    assert len(chosen) == 4  # the budget: the rest of the hour's records are not considered
    # A new hour, a new budget.
    again = sampler.sample(["s0"], [SEG], {"toxicity": np.array([0.5])},
                           {"toxic": np.array([True])}, {}, now=10_800.0)
    assert [r for _, r in again] == [["borderline"]]
    with pytest.raises(ValueError, match=r"review\.file or review\.topic"):
        ReviewSettings(enabled=True)


def test_labels_give_unbiased_precision_recall_and_rate_where_the_naive_share_is_biased(
        tmp_path: Path) -> None:
    """A population whose true toxic rate is 5%; driftwatch flags with precision 80% and
    recall 60%; borderline records are sampled 20x more often than the rest."""
    rng = np.random.default_rng(3)
    n = 40_000
    truth = rng.random(n) < 0.05
    flagged = np.where(truth, rng.random(n) < 0.6, rng.random(n) < 0.0079)
    # Scores near the threshold for most flagged and true records: borderline.
    toxicity = np.where(flagged | truth, rng.uniform(0.42, 0.58, n), rng.uniform(0, 0.3, n))
    toxicity = np.where(flagged, np.maximum(toxicity, 0.5), np.minimum(toxicity, 0.499))
    sampler = _sampler(tmp_path, borderline_rate=0.4, uniform_rate=0.02, max_per_hour=10**6)
    ids = [f"r{i}" for i in range(n)]
    chosen = []
    for start in range(0, n, 1_000):
        part = slice(start, start + 1_000)
        chosen += [(start + i, r) for i, r in sampler.sample(
            ids[part], [SEG] * 1_000, {"toxicity": toxicity[part]},
            {"toxic": flagged[part]}, {}, now=0.0)]
    store = sampler.store
    for i, _ in chosen:
        assert store.add_label(ids[i], "toxic" if truth[i] else "ok", "alice") == "stored"
    assert store.add_label("never-sampled", "toxic", "bob") == "not_sampled"
    assert store.add_label(ids[chosen[0][0]], "spicy", "bob") == "unknown_label"
    [estimate] = store.estimates()
    true_precision = truth[flagged].mean()
    true_recall = flagged[truth].mean()
    assert estimate.labels == len(chosen)
    assert estimate.precision == pytest.approx(true_precision, abs=0.06)
    assert estimate.recall == pytest.approx(true_recall, abs=0.1)
    assert estimate.corrected_rate == pytest.approx(truth.mean(), abs=0.012)
    naive = np.mean([truth[i] for i, _ in chosen])  # the labelled share, unweighted
    assert abs(naive - truth.mean()) > 3 * abs(estimate.corrected_rate - truth.mean())
    assert store.corrected("toxic", SEG) == estimate
    # Labels change the reported precision: relabel every flagged record as not toxic.
    for i, _ in chosen:
        if flagged[i]:
            store.add_label(ids[i], "ok", "alice")
    [after] = store.estimates()
    assert after.precision == 0 and after.recall == 0


def test_a_review_line_past_the_topic_s_limit_is_cut_to_fit_and_says_so() -> None:
    import json

    from monitor.acting.review import encoded_within, review_line

    small = review_line("r1", SEG, ["uniform"], {"toxicity": 0.1}, {"toxic": 0}, "Où?",
                        "Là.", ["Ici."])
    assert encoded_within(small, 1_000) == json.dumps(small, ensure_ascii=False).encode()
    document = ["é" * 300_000, "a" * 100_000]  # 700 kB as UTF-8, 2 MB escaped
    big = review_line("r2", SEG, ["borderline"], {"toxicity": 0.5}, {"toxic": 1}, "p" * 50_000,
                      "r" * 10_000, document)
    value = encoded_within(big, 100_000)
    line = json.loads(value)
    assert 90_000 < len(value) <= 100_000 and line["cut"] is True
    share = len(line["context"][0]) / 300_000
    assert 0.05 < share < 0.2  # each text kept the same share of its length, from its start
    for got, full in [(line["prompt"], big["prompt"]), (line["response"], big["response"]),
                      *zip(line["context"], document, strict=True)]:
        assert full.startswith(got) and abs(len(got) / len(full) - share) < 0.001
    assert {k: v for k, v in line.items() if k not in ("prompt", "response", "context", "cut")} \
        == {k: v for k, v in big.items() if k not in ("prompt", "response", "context")}
    # Too much besides the texts: they are emptied, and the line goes as small as it gets.
    crowded = {**big, "context": [""] * 50_000}
    assert json.loads(encoded_within(crowded, 100_000))["prompt"] == ""


def test_a_review_file_on_a_full_disk_loses_its_lines_not_the_batch(tmp_path: Path) -> None:
    from consumers.wire import Origin, Record
    from monitor.pipeline.model_scoring import BatchScores
    from monitor.pipeline.review_step import ReviewStep
    from monitor.pipeline.stages import OperationalStage, Work
    from monitor.telemetry.metrics import METRICS

    sampler = _sampler(tmp_path, file="/dev/full", uniform_rate=1.0, max_per_hour=100)
    step = ReviewStep(sampler)  # /dev/full: every write fails with ENOSPC, as on a full disk
    records = [Record(request_id=f"r{i}", model="m", response="ok") for i in range(3)]
    work = Work(OperationalStage([], ["model"], 10).scored(records),
                [(Origin("t", 0, i),) for i in range(3)], np.full(3, np.nan))
    nan = np.full(3, np.nan)
    work.scores = BatchScores(np.ones(3, bool), np.array([0.1, 0.2, 0.3]), nan, nan,
                              {"toxic": np.zeros(3, bool)}, [()] * 3, [()] * 3, None, None)
    before = METRICS.REVIEW_WRITE_FAILURES.labels("file")._value.get()
    step.process(work)  # does not raise
    assert METRICS.REVIEW_WRITE_FAILURES.labels("file")._value.get() == before + 3
    step.close()


def test_a_review_store_that_refuses_a_batch_leaves_it_out_whole_and_raises_nothing(
        tmp_path: Path) -> None:
    """Raised, the refused write had the batch run again, its records fed to the detectors
    and rules twice. Here another connection holds the store's write lock past the busy
    timeout (a real `database is locked`, as a full disk or a stuck process gives)."""
    import sqlite3

    from prometheus_client import REGISTRY

    sampler = _sampler(tmp_path, uniform_rate=1.0, borderline_rate=1.0, max_per_hour=1_000)
    failed = REGISTRY.get_sample_value("driftwatch_review_write_failures_total",
                                       {"sink": "store"}) or 0.0
    toxicity = np.array([0.1, 0.9, 0.2])
    holder = sqlite3.connect(tmp_path / "review.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, until the rollback below
    try:
        chosen = sampler.sample(["a0", "a1", "a2"], [SEG] * 3, {"toxicity": toxicity},
                                {"toxic": toxicity >= 0.5}, {}, now=7_200.0)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert chosen == []
    assert REGISTRY.get_sample_value("driftwatch_review_write_failures_total",
                                     {"sink": "store"}) == failed + 3
    again = sampler.sample(["b0", "b1"], [SEG] * 2, {"toxicity": toxicity[:2]},
                           {"toxic": toxicity[:2] >= 0.5}, {}, now=7_300.0)
    assert [i for i, _ in again] == [0, 1]
    with sqlite3.connect(tmp_path / "review.sqlite3") as db:
        sampled = sorted(r for (r,) in db.execute("SELECT request_id FROM sampled"))
        frame = sum(n for (n,) in db.execute("SELECT records FROM frame"))
    assert (sampled, frame) == (["b0", "b1"], 2)  # nothing of the refused batch


def test_a_scratch_copy_reads_the_store_and_never_writes_it(tmp_path: Path) -> None:
    """What a backtest samples stays out of the daemon's store: before, its frame counts
    (the denominators of the corrected rates) grew by every record a backtest replayed."""
    sampler = _sampler(tmp_path, uniform_rate=1.0, max_per_hour=10**6)
    ids = [f"r{i}" for i in range(20)]
    sampler.sample(ids, [SEG] * 20, {"toxicity": np.zeros(20)},
                   {"toxic": np.zeros(20, dtype=bool)}, {}, now=0.0)
    assert sampler.store.add_label("r0", "not_toxic", "ann") == "stored"
    sampler.store.close()
    path = tmp_path / "review.sqlite3"
    before = path.read_bytes()
    scratch = ReviewStore(path, scratch=True)
    config = ReviewSettings(enabled=True, file=tmp_path / "r.jsonl", uniform_rate=1.0,
                            max_per_hour=10**6)
    ReviewSampler(config, scratch, 0.5, 0.5, seed=0).sample(
        [f"s{i}" for i in range(30)], [SEG] * 30, {"toxicity": np.zeros(30)},
        {"toxic": np.zeros(30, dtype=bool)}, {}, now=0.0)
    frame = "SELECT SUM(records) FROM frame"
    assert scratch._db.execute(frame).fetchone() == (50,)  # the copy: 20 saved, 30 its own
    assert scratch._db.execute("SELECT COUNT(*) FROM labels").fetchone() == (1,)
    assert path.read_bytes() == before
    saved = ReviewStore(path)
    assert saved._db.execute(frame).fetchone() == (20,)
    assert not ReviewStore(tmp_path / "none" / "r.sqlite3", scratch=True).path.parent.exists()
    (tmp_path / "junk.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(ConfigError, match=r"review\.store '.*junk\.sqlite3': cannot read it as "
                                          r"a review store \(file is not a database\)"):
        ReviewStore(tmp_path / "junk.sqlite3", scratch=True)


def test_a_backtest_samples_into_no_store_and_no_review_file(tmp_path: Path) -> None:
    """`driftwatch backtest` with the daemon's config: its review queue is a scratch copy."""
    import yaml

    from monitor.cli import main
    from monitor.local import traffic

    records = tmp_path / "in.jsonl"
    records.write_bytes(b"".join(traffic.encode(r) + b"\n" for r in traffic.wire_records(
        60, seed=4, start_ms=traffic.FIXED_START_MS)))
    store, queue = tmp_path / "state" / "review.sqlite3", tmp_path / "review.jsonl"
    config = tmp_path / "dw.yaml"
    config.write_text(yaml.safe_dump({
        "scorers": ["latency", "toxicity"], "drift": {"enabled": False},
        "scoring": {"toxicity": {"model": "profanity-check"}},
        "review": {"enabled": True, "file": str(queue), "store": str(store),
                   "uniform_rate": 1.0, "max_per_hour": 1_000}}))
    out = tmp_path / "events.jsonl"
    argv = ["backtest", "--config", str(config), "--input", str(records), "--output", str(out)]
    assert main(argv) == 0
    assert not store.parent.exists() and not queue.exists()
    ReviewStore(store).close()  # a daemon's store, empty: the backtest reads it, adds nothing
    before = store.read_bytes()
    assert main(argv) == 0
    assert store.read_bytes() == before and not queue.exists()
