"""embedding-linear: trained on some packaged sources, judged on others, cached by
fingerprint; out of source it must beat the floor stated in the README."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from detectors.embedder import Embedder
from detectors.toxicity import ProfanityCheckScorer
from detectors.toxicity_corpora import (
    HELD_OUT_BENIGN,
    SOURCES,
    combine,
    load_pyrit_hate,
    load_rtp_toxic,
)
from detectors.toxicity_eval import FOLDS, flag_rates_on_held_out_benign
from detectors.toxicity_linear import TRAIN_SOURCES, LinearToxicityScorer, features, train
from monitor.cli.driftwatch import main as driftwatch
from tests.detectors.tiny_model import tiny_sentence_transformer

pytestmark = pytest.mark.slow  # loads a model and embeds a few thousand texts


def test_packaged_sources_load_with_both_labels_where_they_have_them() -> None:
    rtp, pyrit = load_rtp_toxic(), load_pyrit_hate()
    assert len(rtp.texts) == len(set(rtp.texts)) > 1_000 and rtp.labels.all()
    assert 0 < pyrit.labels.sum() < len(pyrit.texts)  # hateful and declined answers
    sample = combine(("impermium-insults", "halueval-qa"), limit=50)
    assert len(sample.texts) == 100 and sample.labels[50:].sum() == 0
    assert combine(("impermium-insults",), limit=50).texts == sample.texts[:50]  # seeded


def test_out_of_source_auroc_beats_profanity_check_on_clean_text() -> None:
    embedder = Embedder(device="cpu", backend="torch")
    profanity = ProfanityCheckScorer()
    model = train(embedder, profanity, sources=FOLDS[0].train, limit=400)
    assert model.meta["texts"] == 400 * 3 + 271 and model.meta["embedder"] == embedder.name
    held_out = combine(FOLDS[0].held_out, limit=300)
    ours = roc_auc_score(held_out.labels,
                         model.probability(features(embedder, profanity, held_out.texts)))
    theirs = roc_auc_score(held_out.labels, profanity.score(list(held_out.texts)))
    # All texts: 0.965 against 0.914 (README); this 1,071-text fit holds a floor below that.
    assert ours >= 0.93 and ours > theirs + 0.02  # measured 0.954 against 0.910


def test_each_fold_leaves_its_held_out_sources_out_and_the_default_sees_them_all() -> None:
    for fold in FOLDS:
        assert not set(fold.held_out) & set(fold.train)
        assert set(fold.held_out) | set(fold.train) <= set(TRAIN_SOURCES)
    assert set(TRAIN_SOURCES) == set(SOURCES)
    held = [s for fold in FOLDS for s in fold.held_out if s not in ("halueval-dialogue",)]
    assert sorted(held) == ["impermium-insults", "pyrit-hate", "rtp-toxic"]  # each toxic set


def test_held_out_benign_sets_load_and_share_no_text_with_the_training_sources() -> None:
    """Their flag rates are false-positive rates on text no model here has seen."""
    training = set(combine(TRAIN_SOURCES).texts)
    for name, load in HELD_OUT_BENIGN.items():
        benign = load()
        assert benign.name == name and len(benign.texts) > 800, name
        assert not benign.labels.any() and len(set(benign.texts)) == len(benign.texts)
        assert not training & set(benign.texts), name
    assert max(len(t) for t in HELD_OUT_BENIGN["xsum-articles"]().texts) == 1_500


def test_the_default_model_flags_few_news_articles_it_never_saw() -> None:
    """News of crime and war is no insult: before HaluEval's news summaries were among its
    benign texts the default model flagged 3.3% of these BBC articles (README)."""
    scorer = LinearToxicityScorer(Embedder(device="cpu", backend="torch"), "state/models")
    (articles,) = flag_rates_on_held_out_benign([scorer], sets=("xsum-articles",))
    assert articles.dataset == "xsum-articles" and articles.n == 999
    assert articles.flagged[scorer.name] <= 0.025  # measured 1.9%


def test_trained_once_then_reused_per_embedder(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_sentence_transformer(tmp_path / "tiny", seed=0)
    tiny = Embedder(str(model), device="cpu")
    config = tmp_path / "dw.yaml"  # what `make install` does for the default config
    config.write_text(yaml.safe_dump({"scorers": ["toxicity", "sanity"], "scoring": {
        "device": "cpu", "models_dir": str(tmp_path / "models"),
        "embedding": {"model": str(model)}}}))  # auto: sanity embeds every response
    assert driftwatch(["models", "prepare", "--config", str(config)]) == 0
    assert "toxicity: embedding-linear" in capsys.readouterr().out
    first = LinearToxicityScorer(tiny, tmp_path / "models")
    saved = list((tmp_path / "models").glob("toxicity-embedding-linear-*.json"))
    assert len(saved) == 1
    assert json.loads(saved[0].read_text())["meta"]["sources"] == list(TRAIN_SOURCES)
    again = LinearToxicityScorer(tiny, tmp_path / "models")
    np.testing.assert_array_equal(again.model.coef, first.model.coef)
    scores = again.score(["you are a worthless idiot", "", "Paris is in France."])
    assert scores[1] == 0.0 and 0 < scores[0] < 1 and 0 < scores[2] < 1
    other = Embedder(str(tiny_sentence_transformer(tmp_path / "other", seed=1)), device="cpu")
    LinearToxicityScorer(other, tmp_path / "models")
    assert len(list((tmp_path / "models").glob("toxicity-*.json"))) == 2
