"""The model stage: overload sampling is uniform and counted; embeddings come back per record."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.wire import Record
from monitor.config import ScoringSettings
from monitor.model_scoring import ModelScorers, Overload


def test_overload_fraction_follows_lag_down_to_its_floor() -> None:
    overload = Overload(max_lag=1_000, min_fraction=0.05)
    assert overload.fraction() == 1.0
    overload.lag = 1_000
    assert overload.fraction() == 1.0
    overload.lag = 4_000
    assert overload.fraction() == pytest.approx(0.25)
    overload.lag = 10_000_000
    assert overload.fraction() == 0.05


@pytest.fixture(scope="module")
def models() -> ModelScorers:
    return ModelScorers(["sanity", "toxicity"], ScoringSettings(device="cpu"), seed=1)


def _records(n: int) -> list[Record]:
    return [Record(request_id=f"r{i}", prompt=f"question {i % 7}", response=f"answer {i % 5}")
            for i in range(n)]


def test_a_sampled_batch_scores_a_uniform_share_and_leaves_the_rest_unscored(
    models: ModelScorers,
) -> None:
    scores = models.score(_records(2_000), fraction=0.25)
    share = scores.sampled.mean()
    assert 0.2 < share < 0.3
    assert np.isnan(scores.toxicity[~scores.sampled]).all()
    assert not np.isnan(scores.toxicity[scores.sampled]).any()
    assert not scores.flags["empty_response"][~scores.sampled].any()
    assert scores.prompt_embeddings is not None
    assert scores.prompt_embeddings.shape == (int(scores.sampled.sum()), 384)


def test_full_fraction_scores_everything_and_repeated_texts_hit_the_cache(
    models: ModelScorers,
) -> None:
    models.embedder.stats.take()  # type: ignore[union-attr]
    scores = models.score(_records(100))
    assert scores.sampled.all()
    stats = models.embedder.stats.take()  # type: ignore[union-attr]
    # 7 distinct prompts and 5 distinct responses among 200 texts (some cached from before).
    assert stats.embedded <= 12 and stats.embedded + stats.cache_hits == 200
    assert scores.response_embeddings is not None
    np.testing.assert_array_equal(scores.response_embeddings[0], scores.response_embeddings[5])
