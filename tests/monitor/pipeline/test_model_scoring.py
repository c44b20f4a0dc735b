"""The model stage: overload sampling is uniform and counted; embeddings come back per record."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from consumers.wire import Record
from monitor.config import ScoringSettings
from monitor.pipeline.model_scoring import ModelScorers, Overload

# Loads a model, calibrates a detector or simulates at length: not in make test-fast.
pytestmark = pytest.mark.slow


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
    # 7 distinct prompts and 5 distinct responses among 200 texts (some cached from before);
    # embedding-linear toxicity reads the 100 responses' vectors again, from the cache.
    assert stats.embedded <= 12 and stats.embedded + stats.cache_hits == 300
    assert scores.response_embeddings is not None
    np.testing.assert_array_equal(scores.response_embeddings[0], scores.response_embeddings[5])


def test_slices_give_the_same_scores_as_one_call(models: ModelScorers) -> None:
    records = _records(200)  # > one 64-record slice on a CPU
    whole = models._score(records, np.ones(200, dtype=bool))
    sliced = models.score(records)
    assert models.slice_records == 64 and sliced.over_budget == 0
    np.testing.assert_array_equal(sliced.toxicity, whole.toxicity)
    assert sliced.flags.keys() == whole.flags.keys()
    for name in whole.flags:
        np.testing.assert_array_equal(sliced.flags[name], whole.flags[name])
    assert sliced.response_embeddings is not None and whole.response_embeddings is not None
    np.testing.assert_allclose(sliced.response_embeddings, whole.response_embeddings, atol=1e-6)


def test_a_spent_time_budget_leaves_the_rest_of_the_batch_unscored_and_counted() -> None:
    tight = ModelScorers(["sanity"], ScoringSettings(device="cpu"), time_budget_s=1e-6)
    records = [Record(request_id=f"r{i}", prompt=f"question {i}", response=f"answer {i}")
               for i in range(300)]
    scores = tight.score(records)
    # The first slice always runs; the budget is spent after it.
    assert scores.sampled[:64].all() and not scores.sampled[64:].any()
    assert scores.over_budget == 236
    assert scores.response_embeddings is not None
    assert scores.response_embeddings.shape == (64, 384)
    assert not scores.flags["refusal"][64:].any()


def test_a_stop_is_seen_between_slices(models: ModelScorers) -> None:
    from consumers.processor import Cancelled

    calls = iter([False, False, True])
    with pytest.raises(Cancelled, match="72 of 200 records not model-scored"):
        models.score(_records(200), cancelled=lambda: next(calls))


def test_profanity_check_alone_loads_no_embedding_model_and_embeds_nothing() -> None:
    # auto: embedding-linear only where responses are embedded anyway (drift, sanity).
    default = ModelScorers(["toxicity", "sanity"], ScoringSettings(device="cpu"),
                           embeddings=False)
    assert default.toxicity is not None and default.toxicity.name == "embedding-linear"
    asked = ScoringSettings.model_validate({"device": "cpu",
                                            "toxicity": {"model": "embedding-linear"}})
    linear = ModelScorers(["toxicity"], asked, embeddings=False)
    assert linear.embedding_users == ["toxicity"] and linear.embedder is not None
    profanity = ScoringSettings(device="cpu")
    alone = ModelScorers(["toxicity"], profanity, embeddings=False)
    assert alone.embedder is None and alone.embedding_users == []
    assert alone.toxicity is not None and alone.toxicity.name == "profanity-check"
    scores = alone.score(_records(10))
    assert scores.prompt_embeddings is None and scores.response_embeddings is None
    assert not np.isnan(scores.toxicity).any()
    explicit = ScoringSettings.model_validate({"device": "cpu",
                                               "toxicity": {"model": "profanity-check"}})
    with_drift = ModelScorers(["toxicity"], explicit, embeddings=True)
    assert with_drift.embedding_users == ["drift or canary embeddings"]


def test_sanity_without_drift_embeds_responses_only() -> None:
    sanity = ModelScorers(["sanity"], ScoringSettings(device="cpu"), embeddings=False)
    assert sanity.embedding_users == ["sanity"]
    sanity.embedder.stats.take()  # type: ignore[union-attr]
    scores = sanity.score([Record(request_id=f"r{i}", prompt=f"prompt {i}",
                                  response=f"response {i}") for i in range(10)])
    assert scores.prompt_embeddings is None and scores.response_embeddings is not None
    stats = sanity.embedder.stats.take()  # type: ignore[union-attr]
    assert stats.embedded + stats.cache_hits == 10  # the responses, not the prompts


def test_the_pipeline_counts_what_the_time_budget_left_unscored() -> None:
    from prometheus_client import REGISTRY

    from consumers.batcher import Batch
    from monitor.app.wiring import assemble

    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    tight = ModelScorers(["sanity"], ScoringSettings(device="cpu"), embeddings=False,
                         time_budget_s=1e-6)
    model = "budget-test"
    pipeline = assemble(["latency", "sanity"], ["model"], 50, models=tight)
    segment = {"model": model, "model_version": "", "deployment": "", "route": ""}
    before = (sample("driftwatch_model_skipped_records_total", {"reason": "time_budget"}),
              sample("driftwatch_model_scored_records_total", segment))
    records = [Record(request_id=f"b{i}", model=model, response=f"answer {i}")
               for i in range(300)]
    pipeline.process(Batch(records, [()] * 300))
    after = (sample("driftwatch_model_skipped_records_total", {"reason": "time_budget"}),
             sample("driftwatch_model_scored_records_total", segment))
    assert (after[0] - before[0], after[1] - before[1]) == (236, 64)
    assert sample("driftwatch_records_total", {"outcome": "scored", **segment}) == 300


def test_a_chats_prompt_is_scored_on_its_last_user_message_and_grounds_on_the_whole_chat(
) -> None:
    """Production chats carry a system prompt, the same on every request and often longer
    than the 256 tokens the embedder reads: scored on the joined chat, every prompt's vector
    and toxicity were the system prompt's, and a toxic user message went unseen."""
    settings = ScoringSettings(device="cpu", toxicity={"fields": ["response", "prompt"]})
    models = ModelScorers(["toxicity", "groundedness"], settings, seed=1)
    system = {"role": "system", "content": (
        "You are the support assistant of Acme Travel. The premium plan costs 42 dollars a "
        "month. Answer politely, cite the policy, and never discuss competitors. " * 12)}

    def chat(rid: str, asked: str, response: str) -> Record:
        return msgspec.convert({"request_id": rid, "response": response,
                                "context": ["Refunds are made within 14 days."], "messages": [
            system, {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi, how can I help?"},
            {"role": "user", "content": asked}]}, Record)

    toxic = "Shut up, you worthless fucking idiot, you are useless garbage."
    records = [chat("toxic", toxic, "I am sorry to hear that."),
               chat("kind", "What does the premium plan cost?", "It costs 42 dollars a month."),
               Record(request_id="alone", prompt=toxic, response="I am sorry to hear that.")]
    scores = models.score(records)
    assert scores.prompt_toxicity[0] > 0.9 and scores.prompt_toxicity[1] < 0.2
    assert scores.prompt_embeddings is not None
    np.testing.assert_allclose(scores.prompt_embeddings[0], scores.prompt_embeddings[2],
                               atol=1e-6)  # the user's message alone, not the system prompt
    assert scores.novel_numbers[1] == ()  # 42 is in the system prompt: not invented
