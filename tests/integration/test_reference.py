"""Reference snapshots: versioned, atomic, survive restart, clear errors; built from traffic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitor.app.reference_build import build_reference
from monitor.config import OfflineConfig
from monitor.local import traffic
from monitor.pipeline.reference import ReferenceStore, ReferenceStoreError


def _save(store: ReferenceStore, name: str = "prod", n: int = 5, source: str = "test") -> None:
    rng = np.random.default_rng(n)
    store.save(name, rng.normal(size=(n, 4)).astype(np.float32),
               rng.normal(size=(n, 4)).astype(np.float32),
               {"latency_seconds": rng.random(n)}, {"outcome": ["ok"] * n}, source, "tiny")


def test_round_trip_versions_and_pinning(tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path)
    _save(store, n=5)
    _save(store, n=7)
    assert store.versions("prod") == [1, 2]
    latest = ReferenceStore(tmp_path).load("prod")  # a new store object: as after a restart
    assert latest.meta.version == 2 and latest.meta.records == 7
    assert latest.prompt_embeddings.shape == (7, 4) and latest.prompt_embeddings.dtype == np.float32
    assert latest.categorical["outcome"].tolist() == ["ok"] * 7
    pinned = store.load("prod", version=1)
    rng = np.random.default_rng(5)
    np.testing.assert_array_equal(pinned.prompt_embeddings,
                                  rng.normal(size=(5, 4)).astype(np.float32))
    np.testing.assert_array_equal(pinned.response_embeddings,
                                  rng.normal(size=(5, 4)).astype(np.float32))
    np.testing.assert_array_equal(pinned.numeric["latency_seconds"], rng.random(5))


def test_leftovers_of_a_crashed_save_are_not_versions(tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path)
    _save(store)
    (tmp_path / "prod" / ".staging-abc123").mkdir()
    assert store.versions("prod") == [1]
    _save(store)
    assert store.versions("prod") == [1, 2]


def test_missing_damaged_and_badly_named_references_are_clear_errors(tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path)
    with pytest.raises(ReferenceStoreError, match="driftwatch reference build --name prod"):
        store.load("prod")
    _save(store)
    with pytest.raises(ReferenceStoreError, match=r"no version 9; available: \[1\]"):
        store.load("prod", version=9)
    (tmp_path / "prod" / "v0001" / "manifest.json").write_text("{not json")
    with pytest.raises(ReferenceStoreError, match="unreadable"):
        store.load("prod")
    with pytest.raises(ValueError, match=r"reference name '\.\./etc'"):
        store.versions("../etc")


def test_list_prints_each_version_or_says_it_found_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.app.reference_build import run_reference

    assert run_reference("list", "prod", tmp_path, None, None, OfflineConfig()) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == (
        f"driftwatch: no snapshot named 'prod' in {tmp_path} (build one with `driftwatch "
        "reference build`; --store and --name say where to look)\n")
    _save(ReferenceStore(tmp_path), n=5, source="file:a.jsonl")
    _save(ReferenceStore(tmp_path), n=7, source="file:b.jsonl")
    assert run_reference("list", "prod", tmp_path, None, None, OfflineConfig()) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == "" and len(lines) == 2
    assert lines[0].startswith("prod v1: 5 records from file:a.jsonl, tiny (4d), ")
    assert lines[1].startswith("prod v2: 7 records from file:b.jsonl, tiny (4d), ")


def test_built_from_recorded_traffic_with_the_daemons_scorers(tmp_path: Path) -> None:
    records = list(traffic.wire_records(120, seed=31, start_ms=traffic.FIXED_START_MS))
    lines = [traffic.encode(r) + b"\n" for r in records] + [b"{broken\n"]
    store = ReferenceStore(tmp_path)
    meta = build_reference(lines, OfflineConfig(), store, "prod", "file:test.jsonl")
    assert meta.records == 120 and meta.dim == 384
    assert meta.embedding_model == "sentence-transformers/all-MiniLM-L6-v2"
    ref = store.load("prod")
    np.testing.assert_allclose(np.linalg.norm(ref.prompt_embeddings, axis=1), 1.0, atol=1e-5)
    latency = [r.get("latency_ms") for r in records]
    np.testing.assert_allclose(ref.numeric["latency_seconds"],
                               np.array(latency, dtype=float) / 1000.0)
    errors = {f"error:{r['error_type']}" for r in records if r.get("error_type")}
    assert set(ref.categorical["outcome"].tolist()) == {"ok"} | errors
    has_context_and_answer = [bool(r.get("context")) and bool(str(r.get("response") or "").strip())
                              for r in records]
    assert (~np.isnan(ref.numeric["groundedness"])).tolist() == has_context_and_answer


@pytest.mark.broker
def test_built_from_a_topic_offset_range_without_moving_any_group(broker, names,
                                                                  tmp_path: Path) -> None:
    from tests.support import produce

    topic = names("traffic")
    broker.create_topics([(topic, 2)])
    records = list(traffic.wire_records(160, seed=33, start_ms=traffic.FIXED_START_MS))
    produce(broker.bootstrap, topic, ((i % 2, traffic.encode(r), None)
                                      for i, r in enumerate(records)))
    from monitor.app.reference_build import run_reference

    store_dir = tmp_path / "refs"
    # The brokers come from the config's kafka section when --bootstrap is not given.
    config = OfflineConfig(kafka={"bootstrap_servers": [broker.bootstrap], "topic": "other"})
    assert run_reference("build", "prod", store_dir, None, None, config, topic, None,
                         (10, 60)) == 0
    meta = ReferenceStore(store_dir).load("prod").meta
    assert meta.records == 2 * 50  # offsets 10..59 of both partitions
    assert meta.source == f"topic:{topic} offsets 10..60"

    # A topic whose producer names the fields otherwise is read under its `wire.topics` map:
    # the same records, the same reference.
    renamed = names("renamed")
    broker.create_topics([(renamed, 2)])
    produce(broker.bootstrap, renamed, (
        (i % 2, traffic.encode({"id": r["request_id"], "data": {"question": r["prompt"]},
                                **{k: v for k, v in r.items()
                                   if k not in ("request_id", "prompt")}}), None)
        for i, r in enumerate(records)))
    mapped = OfflineConfig(kafka={"bootstrap_servers": [broker.bootstrap]},
                           wire={"topics": {renamed: {"fields": {
                               "request_id": "id", "prompt": "data.question"}}}})
    assert run_reference("build", "renamed", store_dir, None, None, mapped, renamed, None,
                         (10, 60)) == 0
    ours, theirs = ReferenceStore(store_dir).load("prod"), ReferenceStore(store_dir).load(
        "renamed")
    assert theirs.meta.records == 100
    assert np.array_equal(ours.prompt_embeddings, theirs.prompt_embeddings)
    assert ours.numeric.keys() == theirs.numeric.keys() and ours.numeric
    for name, column in ours.numeric.items():
        assert np.array_equal(column, theirs.numeric[name], equal_nan=True), name
