"""Unit tests for the metrics side: the batch histogram against prometheus_client's own, bounded
labels, and the pipeline's counters read back as deltas from a registry of the tests' own."""

from __future__ import annotations

import json
import math
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumers.batcher import Batch
from consumers.processor import Cancelled
from consumers.wire import Origin, Record
from monitor.app.wiring import assemble
from monitor.pipeline.stages import OperationalStage
from monitor.telemetry.batch_histogram import BatchHistogram
from monitor.telemetry.labels import OTHER, UNKNOWN, CappedLabel, SegmentLabeler, sanitize
from monitor.telemetry.metrics import Metrics
from tests.support import wait_for

# Dyadic bounds and values: every sum is exact in float64 whatever the summation order.
BUCKETS = (0.25, 0.5, 1.0, 2.5, 10.0)
ON_BOUNDS = [0.25, 0.5, 1.0, 2.5, 10.0]
LABELS = ("model", "route")

Sample = tuple[str, tuple[tuple[str, str], ...], float]


def _samples(registry: CollectorRegistry) -> set[Sample]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def _pair(name: str) -> tuple[BatchHistogram, Histogram, CollectorRegistry, CollectorRegistry]:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram(name, "doc", LABELS, BUCKETS, registry=ours)
    stock = Histogram(name, "doc", LABELS, buckets=BUCKETS, registry=theirs)
    return batch, stock, ours, theirs


def _observe_both(
    batch: BatchHistogram, stock: Histogram, labels: tuple[str, str], values: Iterable[float]
) -> None:
    values = list(values)
    batch.observe_many(labels, np.asarray(values, dtype=np.float64))
    for v in values:
        if math.isfinite(v):
            stock.labels(*labels).observe(v)


def test_batch_histogram_exposes_the_same_series_as_a_stock_histogram() -> None:
    batch, stock, ours, theirs = _pair("dw_test_latency_seconds")
    _observe_both(batch, stock, ("m1", "qa"),
                  [*ON_BOUNDS, -1.0, 0.0, 0.125, 0.375, 3.0, 10.5, 1e6, math.nan])
    _observe_both(batch, stock, ("m2", "chat"), [0.5, 0.5, math.nan, 2.5])
    # A second batch for an existing series accumulates instead of replacing it.
    _observe_both(batch, stock, ("m1", "qa"), [0.25, 7.0, math.nan])

    assert _samples(ours) == _samples(theirs)
    counts = {(s[1], s[0]): s[2] for s in _samples(ours) if s[0].endswith("_count")}
    assert counts[((("model", "m1"), ("route", "qa")), "dw_test_latency_seconds_count")] == 14


def test_values_on_a_bound_fall_in_that_bounds_bucket() -> None:
    registry = CollectorRegistry()
    batch = BatchHistogram("dw_test_bounds", "doc", ["k"], BUCKETS, registry=registry)
    batch.observe_many(("v",), np.asarray(ON_BOUNDS))
    buckets = {
        dict(labels)["le"]: value
        for name, labels, value in _samples(registry) if name == "dw_test_bounds_bucket"
    }
    assert buckets == {"0.25": 1, "0.5": 2, "1.0": 3, "2.5": 4, "10.0": 5, "+Inf": 5}


def test_an_all_nan_batch_creates_no_series() -> None:
    registry = CollectorRegistry()
    batch = BatchHistogram("dw_test_nan", "doc", ["k"], BUCKETS, registry=registry)
    batch.observe_many(("v",), np.asarray([math.nan, math.inf, -math.inf]))
    assert _samples(registry) == set()


def test_batch_histogram_rejects_missing_or_infinite_buckets() -> None:
    with pytest.raises(ValueError, match="dw_bad"):
        BatchHistogram("dw_bad", "doc", [], [], registry=None)
    with pytest.raises(ValueError, match="finite"):
        BatchHistogram("dw_bad", "doc", [], [1.0, math.inf], registry=None)


_dyadic = st.integers(min_value=-800, max_value=800).map(lambda i: i / 8) | st.sampled_from(
    [*ON_BOUNDS, math.nan]
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.lists(_dyadic, max_size=20)),
                max_size=5))
def test_batch_histogram_matches_stock_histogram_for_any_batches(
    batches: list[tuple[str, list[float]]],
) -> None:
    batch, stock, ours, theirs = _pair("dw_prop")
    for model, values in batches:
        _observe_both(batch, stock, (model, "r"), values)
    assert _samples(ours) == _samples(theirs)


# -- labels ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("gpt-4o", "gpt-4o"),
        ("  org/model:v1@eu+beta.2  ", "org/model:v1@eu+beta.2"),
        ('bad "name"\n{x}', "bad__name___x_"),
        ("caf\u00e9 \u2603", "caf___"),
        ("", UNKNOWN),
        ("   ", UNKNOWN),
        ("x" * 100, "x" * 64),
    ],
)
def test_sanitize_replaces_unsafe_characters_and_truncates(raw: str, expected: str) -> None:
    assert sanitize(raw) == expected
    assert len(sanitize(raw)) <= 64


def test_capped_label_keeps_the_first_n_distinct_values_then_folds_into_other() -> None:
    cap = CappedLabel(max_values=3)
    assert [cap(v) for v in ["a", "b", "a", "c"]] == ["a", "b", "a", "c"]
    assert [cap(v) for v in ["d", "e"]] == [OTHER, OTHER]
    assert cap.overflowed == 2
    # Already-kept values still map to themselves after the cap is reached.
    assert [cap(v) for v in ["c", "a", "b"]] == ["c", "a", "b"]
    assert cap.overflowed == 2


def test_capped_label_counts_spellings_that_sanitize_alike_once() -> None:
    cap = CappedLabel(max_values=2)
    assert cap("m 1") == "m_1"
    assert cap("m\t1") == "m_1"  # a new raw spelling, same label: no new slot
    assert cap("m2") == "m2"
    assert cap("m3") == OTHER
    assert cap.overflowed == 1


def test_capped_label_maps_none_to_unknown_without_using_a_slot() -> None:
    cap = CappedLabel(max_values=1)
    assert cap(None) == UNKNOWN
    assert cap("only") == "only"
    assert cap(None) == UNKNOWN
    assert cap("next") == OTHER


def test_segment_labeler_leaves_unconfigured_labels_empty() -> None:
    labeler = SegmentLabeler(["model", "route"], ("model", "model_version", "deployment", "route"),
                             max_values=2)
    assert labeler.key(("m1", "v1", "canary", "qa")) == ("m1", "", "", "qa")
    assert labeler.key((None, "v2", None, None)) == (UNKNOWN, "", "", UNKNOWN)
    assert labeler.key(("m2", None, None, "a b")) == ("m2", "", "", "a_b")
    assert labeler.key(("m3", None, None, "c")) == (OTHER, "", "", OTHER)


def test_segments_past_max_segments_are_the_all_other_segment(
        caplog: pytest.LogCaptureFixture) -> None:
    """Each label within its own cap, their combinations past `max_segments`: 3 models by 3
    versions would be 9 segments (each about a hundred series, and its own rule state)."""
    names = ("model", "model_version", "deployment", "route")
    labeler = SegmentLabeler(["model", "model_version"], names, max_values=50, max_segments=4)
    seen = [labeler.key((m, v, "stable", None)) for m in ("a", "b", "c") for v in ("1", "2", "3")]
    assert seen[:4] == [("a", "1", "", ""), ("a", "2", "", ""), ("a", "3", "", ""),
                        ("b", "1", "", "")]
    assert seen[4:] == [(OTHER, OTHER, "", "")] * 5
    assert labeler.segments == 5  # the four, and `other`
    # Known segments keep their labels after the cap; a new spelling of one is no new segment.
    assert labeler.key(("a", "2", None, "r")) == ("a", "2", "", "")
    assert labeler.key(("a ", "2", None, None)) == ("a", "2", "", "")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["metrics.max_segments=4 reached: segments first seen from now on "
                        "({'model': 'b', 'model_version': '2', 'deployment': '', 'route': ''}) "
                        "are reported as 'other'"]


def test_a_labeler_checkpointed_before_the_segment_cap_restores_with_it() -> None:
    """Its pickled state has no segments or cap: the segments it cached are its segments,
    and the stage that restores it applies the configured cap."""
    old = SegmentLabeler(["model"], ("model", "model_version", "deployment", "route"), 50)
    old.key(("a", None, None, None))
    old.key(("b", None, None, None))
    for name in ("_segments", "max_segments"):  # what the cap added to its state
        delattr(old, name)
    restored = pickle.loads(pickle.dumps(old))
    assert restored.segments == 2 and restored.other == (OTHER, "", "", "")
    stage = OperationalStage([], ["model"], 50, metrics=METRICS, max_segments=3)
    stage.restore({"segments": restored})
    assert [stage._segments.key((m, None, None, None)) for m in "abcde"] == [
        ("a", "", "", ""), ("b", "", "", ""), ("c", "", "", ""), (OTHER, "", "", ""),
        (OTHER, "", "", "")]


# -- pipeline ----------------------------------------------------------------------------------

SCORERS = ["latency", "tokens", "cost", "status", "length"]
OWN = CollectorRegistry()  # the pipeline tests' metrics: nothing else counts here
METRICS = Metrics(OWN)


def _value(name: str, **labels: str) -> float:
    return OWN.get_sample_value(name, labels) or 0.0


def _seg(model: str, deployment: str) -> dict[str, str]:
    return {"model": model, "model_version": "", "deployment": deployment, "route": ""}


def _batch(records: list[Record]) -> Batch:
    return Batch(records, [(Origin("traffic", 0, i),) for i in range(len(records))])


Reader = Callable[[], dict[str, float]]


def _delta(read: Reader, action: Callable[[], None]) -> dict[str, float]:
    before = read()
    action()
    after = read()
    return {k: after[k] - before[k] for k in after}


@pytest.fixture
def model() -> str:
    return f"m-{uuid.uuid4().hex[:12]}"


def test_pipeline_counts_records_tokens_cost_status_and_latency_per_segment(model: str) -> None:
    pipeline = assemble(SCORERS, ["model", "deployment"], max_label_values=5, metrics=METRICS)
    records = [
        Record(request_id="1", model=model, deployment="stable", latency_ms=250.0,
               prompt_tokens=10, completion_tokens=4, cost_usd=0.25, status="ok",
               prompt="abcd", response="xy", model_version="v9", route="qa"),
        Record(request_id="2", model=model, deployment="stable", latency_ms=30_000.0,
               prompt_tokens=6, status="error", error_type="timeout", prompt="ab",
               response=""),
        Record(request_id="3", model=model, deployment="canary", latency_ms=500.0,
               prompt_tokens=1, completion_tokens=2, cost_usd=0.5, status="ok"),
        Record(request_id="4", model=model, deployment="stable", prompt_tokens=None,
               status="error", error_type="timeout"),  # no latency: not observed
    ]
    stable, canary = _seg(model, "stable"), _seg(model, "canary")

    def read() -> dict[str, float]:
        return {
            "scored_stable": _value("driftwatch_records_total", outcome="scored", **stable),
            "scored_canary": _value("driftwatch_records_total", outcome="scored", **canary),
            "prompt_tokens": _value("driftwatch_tokens_total", kind="prompt", **stable),
            "completion_tokens": _value("driftwatch_tokens_total", kind="completion", **stable),
            "cost_stable": _value("driftwatch_cost_usd_total", **stable),
            "cost_canary": _value("driftwatch_cost_usd_total", **canary),
            "timeouts": _value("driftwatch_responses_total", status="error",
                               error_type="timeout", **stable),
            "ok_stable": _value("driftwatch_responses_total", status="ok", error_type="",
                                **stable),
            "latency_count": _value("driftwatch_request_latency_seconds_count", **stable),
            "latency_sum": _value("driftwatch_request_latency_seconds_sum", **stable),
            "latency_le_1": _value("driftwatch_request_latency_seconds_bucket", le="1.0",
                                   **stable),
            "prompt_chars": _value("driftwatch_text_length_characters_sum", field="prompt",
                                   **stable),
            "prompt_lengths": _value("driftwatch_text_length_characters_count", field="prompt",
                                     **stable),
        }

    delta = _delta(read, lambda: pipeline.process(_batch(records)))

    assert delta == {
        "scored_stable": 3.0,
        "scored_canary": 1.0,
        "prompt_tokens": 16.0,
        "completion_tokens": 4.0,
        "cost_stable": 0.25,
        "cost_canary": 0.5,
        "timeouts": 2.0,
        "ok_stable": 1.0,
        "latency_count": 2.0,
        "latency_sum": 30.25,
        "latency_le_1": 1.0,
        "prompt_chars": 6.0,
        "prompt_lengths": 2.0,
    }


def test_pipeline_sets_last_event_time_to_the_newest_record(model: str) -> None:
    pipeline = assemble(SCORERS, ["model"], max_label_values=5, metrics=METRICS)
    records = [Record(request_id="a", model=model, timestamp=1_700_000_002_000.0),
               Record(request_id="b", model=model, timestamp=1_700_000_001_000.0),
               Record(request_id="c", model=model)]
    pipeline.process(_batch(records))
    assert _value("driftwatch_last_event_timestamp_seconds") == 1_700_000_002.0


def test_pipeline_sets_last_processed_time_when_a_batch_is_counted(model: str) -> None:
    """The wall clock at the batch's end, not its records' event time (a day old here)."""
    pipeline = assemble(SCORERS, ["model"], max_label_values=5, metrics=METRICS)
    before = time.time()
    pipeline.process(_batch([Record(request_id="a", model=model,
                                    timestamp=(before - 86_400) * 1_000)]))
    after = time.time()
    assert before <= _value("driftwatch_last_processed_timestamp_seconds") <= after


def test_pipeline_folds_models_beyond_max_label_values_into_other() -> None:
    pipeline = assemble(["status"], ["model"], max_label_values=5, metrics=METRICS)
    models = [f"cap-{uuid.uuid4().hex[:10]}" for _ in range(7)]
    records = [Record(request_id=str(i), model=m) for i, m in enumerate(models)]
    other = {"model": OTHER, "model_version": "", "deployment": "", "route": ""}

    def read() -> dict[str, float]:
        kept = sum(
            _value("driftwatch_records_total", outcome="scored", model=m, model_version="",
                   deployment="", route="") for m in models[:5]
        )
        return {"kept": kept,
                "other": _value("driftwatch_records_total", outcome="scored", **other)}

    assert _delta(read, lambda: pipeline.process(_batch(records))) == {"kept": 5, "other": 2}


def test_pipeline_with_only_some_scorers_updates_only_their_metrics(model: str) -> None:
    pipeline = assemble(["cost"], ["model"], max_label_values=5, metrics=METRICS)
    seg = {"model": model, "model_version": "", "deployment": "", "route": ""}
    pipeline.process(_batch([Record(request_id="x", model=model, cost_usd=1.5, prompt_tokens=3,
                                    latency_ms=10.0)]))
    assert _value("driftwatch_cost_usd_total", **seg) == 1.5
    assert OWN.get_sample_value("driftwatch_tokens_total", {"kind": "prompt", **seg}) is None
    assert OWN.get_sample_value("driftwatch_request_latency_seconds_count", seg) is None
    assert _value("driftwatch_records_total", outcome="scored", **seg) == 1


def test_pipeline_writes_an_audit_line_per_record(model: str, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    pipeline = assemble(SCORERS, ["model"], max_label_values=5, audit_log=audit,
                        metrics=METRICS)
    batch = Batch([Record(request_id="a", model=model), Record(request_id="b", model=model)],
                  [(Origin("req", 0, 3), Origin("resp", 1, 8)), (Origin("req", 0, 4),)])
    pipeline.process(batch)
    pipeline.close()
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert lines == [
        {"request_id": "a", "positions": [["req", 0, 3], ["resp", 1, 8]]},
        {"request_id": "b", "positions": [["req", 0, 4]]},
    ]


def test_an_audit_line_cut_short_by_a_kill_is_ended_before_the_next_run_writes(
        model: str, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    audit.write_bytes(b'{"request_id": "a", "positions": []}\n{"request_id": "b", "posi')
    pipeline = assemble(SCORERS, ["model"], max_label_values=5, audit_log=audit,
                        metrics=METRICS)
    pipeline.process(Batch([Record(request_id="c", model=model)], [(Origin("req", 0, 5),)]))
    pipeline.close()
    assert audit.read_text().splitlines() == [
        '{"request_id": "a", "positions": []}', '{"request_id": "b", "posi',
        '{"request_id":"c","positions":[["req",0,5]]}']


def test_the_audit_log_follows_log_rotation(model: str, tmp_path: Path) -> None:
    """logrotate renames the file (or removes it) and a new one is created; `copytruncate`
    empties it in place. Lines go to whatever file the path names at each batch."""
    audit = tmp_path / "audit.jsonl"
    pipeline = assemble(SCORERS, ["model"], max_label_values=5, audit_log=audit,
                        metrics=METRICS)

    def batch(rid: str) -> Batch:
        return Batch([Record(request_id=rid, model=model)], [(Origin("req", 0, 1),)])

    def ids(path: Path) -> list[str]:
        return [json.loads(line)["request_id"] for line in path.read_text().splitlines()]

    pipeline.process(batch("a"))
    audit.rename(tmp_path / "audit.jsonl.1")  # logrotate's default (create)
    pipeline.process(batch("b"))
    audit.rename(tmp_path / "audit.jsonl.2")
    audit.touch()  # ... with the new file created by logrotate itself
    pipeline.process(batch("c"))
    audit.unlink()  # removed outright
    pipeline.process(batch("d"))
    audit.write_bytes(b"")  # copytruncate
    pipeline.process(batch("e"))
    pipeline.close()
    assert [ids(tmp_path / "audit.jsonl.1"), ids(tmp_path / "audit.jsonl.2")] == [["a"], ["b"]]
    assert ids(audit) == ["e"]


def test_an_audit_log_on_a_full_disk_holds_its_batch_until_the_disk_takes_it(
        model: str, tmp_path: Path) -> None:
    """The log is for reconciliation: a line is never dropped. The batch waits (the write
    tried again, counted) instead of raising, which ran it again through every stage."""
    audit = tmp_path / "audit.jsonl"
    audit.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
    pipeline = assemble(SCORERS, ["model"], max_label_values=5, audit_log=audit,
                        metrics=METRICS)
    failures = _value("driftwatch_audit_log_write_failures_total")
    scored = _value("driftwatch_records_total", outcome="scored", **_seg(model, ""))
    batch = Batch([Record(request_id="a", model=model), Record(request_id="b", model=model)],
                  [(Origin("req", 0, 3),), (Origin("req", 0, 4),)])
    worker = threading.Thread(target=pipeline.process, args=(batch,))
    worker.start()
    wait_for(lambda: _value("driftwatch_audit_log_write_failures_total") >= failures + 2, 60,
             "the write to be tried again")
    assert worker.is_alive()
    room = tmp_path / "room.jsonl"
    room.touch()
    (tmp_path / "link").symlink_to(room)
    (tmp_path / "link").replace(audit)  # the disk has room again
    worker.join(timeout=60)
    assert not worker.is_alive()
    pipeline.close()
    assert [json.loads(line)["request_id"] for line in room.read_text().splitlines()] == [
        "a", "b"]
    assert _value("driftwatch_records_total", outcome="scored", **_seg(model, "")) == scored + 2


def test_a_stop_while_the_audit_disk_is_full_leaves_the_batch_to_be_read_again(
        model: str, tmp_path: Path) -> None:
    cancel = threading.Event()
    pipeline = assemble(SCORERS, ["model"], max_label_values=5, audit_log=Path("/dev/full"),
                        metrics=METRICS, cancel=cancel)
    failures = _value("driftwatch_audit_log_write_failures_total")
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(Cancelled, match="read again"):
        pipeline.process(Batch([Record(request_id="a", model=model)], [(Origin("r", 0, 1),)]))
    assert _value("driftwatch_audit_log_write_failures_total") == failures + 1


def test_empty_batch_changes_nothing(model: str) -> None:
    pipeline = assemble(SCORERS, ["model"], max_label_values=5, metrics=METRICS)
    before = _value("driftwatch_batch_size_records_count")
    pipeline.process(Batch([], []))
    assert _value("driftwatch_batch_size_records_count") == before


def test_unknown_scorer_name_raises_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"unknown scorers \['vibes'\]") as info:
        assemble(["latency", "vibes"], ["model"], max_label_values=5, metrics=METRICS)
    assert "latency" in str(info.value)  # the available ones are listed too
