"""`bench embed`: the embedder alone next to naive encode, on the same texts."""

from __future__ import annotations

import re

import pytest

from monitor.local.bench_embed import bench_embed

pytestmark = pytest.mark.slow  # loads the default model twice


def test_both_paths_give_rates_and_the_same_vectors(capsys) -> None:
    # 30 records: a third of HaluEval's prompts are past the model's limit, so some are cut.
    assert bench_embed(records=30, batch=7, rounds=2) == 0
    out = capsys.readouterr().out
    rates = {name: float(re.search(rf"{name}\S*\s+([\d,.]+) \(", out)[1].replace(",", ""))
             for name in ("naive SentenceTransformer.encode", "driftwatch Embedder.encode")}
    assert all(rate > 0 for rate in rates.values()), out
    assert "60 new HaluEval texts a round" in out and "calls of 7 texts" in out
    assert float(re.search(r"cosine .*: min ([\d.]+)", out)[1]) >= 0.9999, out
