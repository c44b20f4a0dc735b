"""The static embedder: distilled for real (from a tiny model), reused while its fingerprint
holds, rebuilt when the source changes, refused clearly without a model; vectors of one
embedder are never compared with another's."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from consumers.wire import Record
from detectors.embedder import ModelNotFound
from detectors.static_embedder import StaticEmbedder, ensure_table, vectors_name
from monitor.cli.driftwatch import main as driftwatch
from monitor.config import ScoringSettings
from monitor.pipeline.model_scoring import ModelScorers
from monitor.pipeline.reference import ReferenceStore, ReferenceStoreError
from tests.detectors.tiny_model import tiny_sentence_transformer

pytestmark = pytest.mark.slow  # builds models and distils them

TEXTS = ["The capital of France is Paris.", "I'm sorry, but I can't help with that.", "",
         "Robert Downey Jr. starred in Zodiac in 2007."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sentence_transformer(tmp_path_factory.mktemp("tiny"), seed=0)


def test_table_is_distilled_once_and_reused(tiny: Path, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "detectors.static_embedder")
    first = StaticEmbedder(str(tiny), tmp_path)
    assert first.table.built and first.dim == 32  # PCA keeps at most the model's width
    assert "distilling a static embedding table" in caplog.text
    vectors = first.encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (4, 32)
    norms = np.linalg.norm(vectors, axis=1)
    assert np.allclose(norms[[0, 1, 3]], 1.0, atol=1e-5) and norms[2] == 0.0  # "" has no tokens
    assert not np.allclose(vectors[0], vectors[1])
    caplog.clear()
    again = StaticEmbedder(str(tiny), tmp_path)
    assert not again.table.built and again.table.path == first.table.path
    assert "distilling" not in caplog.text
    np.testing.assert_array_equal(again.encode(TEXTS), vectors)
    assert again.name == first.name == vectors_name(str(tiny), "hybrid")
    assert again.name.startswith(f"{tiny}+static:{first.table.fingerprint}")
    assert vectors_name(str(tiny), "torch") == str(tiny)  # the transformer's own name


def test_a_changed_source_or_setting_builds_a_new_table(tiny: Path, tmp_path: Path) -> None:
    before = ensure_table(str(tiny), tmp_path)
    changed = tiny_sentence_transformer(tmp_path / "retrained", seed=1)
    after = ensure_table(str(changed), tmp_path)
    assert after.built and after.fingerprint != before.fingerprint
    from detectors.static_embedder import DistillSettings

    fewer = ensure_table(str(tiny), tmp_path, DistillSettings(pca_dims=16))
    assert fewer.built and fewer.fingerprint not in (before.fingerprint, after.fingerprint)
    assert StaticEmbedder(str(tiny), tmp_path, DistillSettings(pca_dims=16)).dim == 16
    tables = sorted(p.name for p in tmp_path.glob("static-*"))
    assert len(tables) == 3  # nothing half-written is left beside them
    assert not list(tmp_path.glob(".static-*"))


def test_no_model_on_disk_is_a_clear_error(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ModelNotFound, match=r"scoring.embedding.model='/no/such/model' is not "
                                            r"on disk: driftwatch never downloads"):
        StaticEmbedder("/no/such/model", tmp_path)
    assert not list(tmp_path.iterdir())
    assert driftwatch(["models", "distill", "--model", "/no/such/model",
                       "--dir", str(tmp_path)]) == 2
    assert "never downloads" in capsys.readouterr().err


def test_models_distill_command_builds_then_reuses(tiny: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    args = ["models", "distill", "--model", str(tiny), "--dir", str(tmp_path)]
    assert driftwatch(args) == 0
    assert capsys.readouterr().out.startswith("built ")
    assert driftwatch(args) == 0
    assert capsys.readouterr().out.startswith("reused ")


def test_a_reference_of_one_embedder_is_refused_by_another(tiny: Path, tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path / "refs")
    static = StaticEmbedder(str(tiny), tmp_path / "tables")
    vectors = static.encode(TEXTS)
    store.save("base", vectors, vectors, {}, {}, "test", static.name)
    assert store.load("base", embedding_model=static.name).meta.embedding_model == static.name
    with pytest.raises(ReferenceStoreError, match=r"embedded by .*\+static:.* this daemon "
                                                  r"embeds with 'sentence-transformers/all"):
        store.load("base", embedding_model="sentence-transformers/all-MiniLM-L6-v2")


def test_hybrid_uses_the_table_for_vectors_and_the_transformer_for_refusals(
        tiny: Path, tmp_path: Path) -> None:
    settings = ScoringSettings.model_validate({
        "device": "cpu",
        "models_dir": str(tmp_path),
        "embedding": {"model": str(tiny), "backend": "hybrid"},
        # Every response passes the prefilter: refusals are then the transformer's alone.
        "sanity": {"refusal_prefilter": -1.0, "refusal_threshold": 0.0}})
    hybrid = ModelScorers(["sanity"], settings)
    assert hybrid.embedder is not None and hybrid.embedder.backend == "static"
    assert hybrid.transformer is not None and hybrid.transformer.backend == "torch"
    assert [role for role, *_ in hybrid.models()] == ["embedding", "embedding_scorers"]
    plain = ModelScorers(["sanity"], settings.model_copy(update={
        "embedding": settings.embedding.model_copy(update={"backend": "torch"})}))
    assert plain.embedder is plain.transformer

    from consumers.wire import Record

    records = [Record(request_id=str(i), model="m", prompt="q", response=text or None)
               for i, text in enumerate(TEXTS)]
    ours, theirs = hybrid.score(records), plain.score(records)
    np.testing.assert_array_equal(ours.flags["refusal"], theirs.flags["refusal"])
    assert ours.response_embeddings is not None and theirs.response_embeddings is not None
    assert ours.response_embeddings.shape[1] == 32
    # The drift vectors are the table's, not the transformer's.
    np.testing.assert_allclose(ours.response_embeddings[0], hybrid.embedder.encode(TEXTS[:1])[0],
                               atol=1e-6)
    # A prefilter of 1.0 passes only a refusal phrase itself (TEXTS[1] is the first default):
    # the transformer sees that one response and nothing else.
    strict = ModelScorers(["sanity"], settings.model_copy(update={
        "sanity": settings.sanity.model_copy(update={"refusal_prefilter": 0.999})}))
    assert strict.transformer is not None
    strict.transformer.stats.take()
    assert strict.score(records).flags["refusal"].tolist() == [False, True, False, False]
    asked = strict.transformer.stats.take()
    assert asked.embedded + asked.cache_hits == 1


def test_static_backend_refuses_a_precision_it_cannot_use() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="does not apply to backend static"):
        ScoringSettings.model_validate({"embedding": {"backend": "static", "precision": "int8"}})


def test_a_text_met_again_is_not_tokenized_again_and_gets_the_same_vector(
        tiny: Path, tmp_path: Path) -> None:
    static = StaticEmbedder(str(tiny), tmp_path)
    first = static.encode(TEXTS + TEXTS[:2])
    stats = static.stats.take()
    assert stats.embedded == 4 and stats.cache_hits == 2
    again = static.encode(TEXTS[::-1])
    stats = static.stats.take()
    assert stats.embedded == 0 and stats.cache_hits == 4
    np.testing.assert_array_equal(again, first[3::-1])
    # A static vector does not depend on the batch it was embedded in.
    alone = StaticEmbedder(str(tiny), tmp_path, cache_size=0)
    np.testing.assert_array_equal(np.vstack([alone.encode([t]) for t in TEXTS]), first[:4])


def test_chunked_tokenizing_and_pooling_give_model2vecs_own_vectors(
        tiny: Path, tmp_path: Path) -> None:
    """The same token ids to the bit; the same means (encode's truncation at 64 tokens
    included), but for model2vec's rounding of each mean to float16 (its table's type; ours
    are float32)."""
    from model2vec import StaticModel

    from monitor.local.traffic import load_examples

    static = StaticEmbedder(str(tiny), tmp_path, cache_size=0, max_length=64)
    assert static._model.chunks is not None
    texts = [t for e in load_examples(100) for t in (*e.context, e.right)] + TEXTS + [
        "a [UNK] b", "naïve café\u037e 中文 \x0bx\x00y", "x" * 500]
    plain = StaticModel.from_pretrained(static.table.path, force_download=False)
    theirs = plain.encode(texts, max_length=64, use_multiprocessing=False, normalize=False)
    ours = static._model.encode(texts, max_length=64, use_multiprocessing=False, normalize=False)
    assert static._model.tokenize(texts) == plain.tokenize(texts)
    # Unknown tokens are dropped, as model2vec drops them: in texts read by chunks and in one
    # tokenized whole ("a [UNK] b").
    flat, lengths = static._model.chunks.encode_flat(texts)
    unknown = set(np.repeat(np.arange(len(texts)), lengths)[flat == static._model.unk_token_id]
                  .tolist())
    assert texts.index("a [UNK] b") in unknown and len(unknown) > 10
    assert len(static._model.chunks._index) > 500
    assert theirs.dtype == np.float16 and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=2**-10, atol=2**-24)
    assert not ours[TEXTS.index("") - len(TEXTS) - 3].any()  # no tokens: a zero row


def test_pool_weights_and_remaps_tokens_as_model2vec_does() -> None:
    from detectors.chunk_tokens import flatten
    from detectors.static_embedder import pool

    rng = np.random.default_rng(0)
    table = rng.standard_normal((50, 8)).astype(np.float32)
    weights, mapping = rng.random(50).astype(np.float32), rng.integers(0, 50, 50)
    ids = [[1, 2, 2, 3], [], [49, 0], [7]]
    want = np.vstack([(table[mapping[x]] * weights[x][:, None]).mean(axis=0) if x
                      else np.zeros(8) for x in ids])  # model2vec's _encode_helper, then mean
    np.testing.assert_allclose(pool(*flatten(ids), table, mapping, weights), want,
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(pool(*flatten(ids), table), np.vstack(
        [table[x].mean(axis=0) if x else np.zeros(8) for x in ids]), rtol=1e-6, atol=1e-7)
    assert pool(*flatten([]), table).shape == (0, 8)


def test_linear_toxicity_reads_the_static_response_vectors_from_the_cache(
        tiny: Path, tmp_path: Path) -> None:
    settings = ScoringSettings.model_validate({
        "device": "cpu", "models_dir": str(tmp_path),
        "embedding": {"model": str(tiny), "backend": "static"},
        "toxicity": {"model": "embedding-linear"}})
    models = ModelScorers(["toxicity", "sanity"], settings)
    assert models.toxicity is not None and models.toxicity.name == "embedding-linear"
    assert models.embedder is not None
    records = [Record(request_id=f"r{i}", prompt=f"question number {i}",
                      response=f"answer number {i}") for i in range(50)]
    models.embedder.stats.take()
    scores = models.score(records)
    stats = models.embedder.stats.take()
    # 50 prompts and 50 responses embedded; toxicity's 50 responses come from the cache.
    assert stats.embedded == 100 and stats.cache_hits == 50
    assert not np.isnan(scores.toxicity).any()
