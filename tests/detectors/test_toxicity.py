from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from detectors.insults_corpus import load_insults, unescape
from detectors.toxicity import (
    ModelNotFound,
    ProfanityCheckScorer,
    TransformersToxicityScorer,
    _sigmoid_folds,
    load_toxicity_scorer,
)
from detectors.toxicity_eval import evaluate_toxicity

# Loads a model, calibrates a detector or simulates at length: not in make test-fast.
pytestmark = pytest.mark.slow

DETOXIFY = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")
TOXIC = ["you are a fucking idiot", "shut up, you worthless piece of shit", "go to hell, moron"]
BENIGN = ["Thanks, the meeting is at 3pm.", "Could you send me the quarterly report?",
          "The weather in Lisbon is lovely this week."]
# Whole words only, so the tiny model sees different token ids (and gives different scores).
WORDS = ["thanks", "the", "meeting", "is", "at", "you", "are", "an", "idiot", "stupid", "report",
         "send", "me", "please", "weather", "lovely", "go", "away", "moron", "great", "work"]
TEXTS = ["thanks the meeting is at", "you are an idiot", "stupid", "send me the report please",
         "the weather is lovely", "go away moron", "great work", "you", "idiot idiot stupid moron"]


@pytest.fixture(scope="module")
def default() -> ProfanityCheckScorer:
    return ProfanityCheckScorer()


def test_default_scorer_ranks_insults_above_polite_text_and_empty_is_zero(
    default: ProfanityCheckScorer,
) -> None:
    scores = default.score([*TOXIC, *BENIGN, "", "   "])
    assert scores.dtype == np.float64 and scores.shape == (8,)
    assert scores[:3].min() > 0.9
    assert scores[3:6].max() < 0.2
    assert scores[6] == 0.0 and scores[7] == 0.0
    assert default.name == "profanity-check"
    assert default.score([]).shape == (0,)


def test_default_scorer_gives_sklearns_predict_proba_to_the_bit(
    default: ProfanityCheckScorer,
) -> None:
    # Real insults and ordinary text, in batches of several sizes (one text, odd, the daemon's).
    texts = [t for t in load_insults().texts[:1200] if t.strip()]
    sklearn = default._model.predict_proba(default._vectorizer.transform(texts))[:, 1]
    assert 0.05 < float(np.mean(sklearn > 0.5)) < 0.95  # both classes met
    for size in (1, 7, 50, 512):
        ours = np.concatenate([default.score(texts[i:i + size])
                               for i in range(0, len(texts), size)])
        assert np.array_equal(ours, sklearn), size
    # A model of another shape (here: an isotonic calibration) goes through sklearn itself.
    assert default._folds is not None
    other = ProfanityCheckScorer()
    other._model = copy.deepcopy(other._model)
    other._model.calibrated_classifiers_[0].method = "isotonic"
    assert _sigmoid_folds(other._model) is None


def test_offline_default_is_profanity_check_and_a_path_loads_a_transformer(
    tmp_path: Path,
) -> None:
    assert isinstance(load_toxicity_scorer(None, "cpu"), ProfanityCheckScorer)
    folder = _tiny_model(tmp_path / "tiny-tox", DETOXIFY, "multi_label_classification")
    scorer = load_toxicity_scorer(str(folder), "auto")
    assert isinstance(scorer, TransformersToxicityScorer)
    assert scorer.name == "tiny-tox"


def test_insults_corpus_is_read_from_the_installed_package_and_unescaped() -> None:
    corpus = load_insults()
    assert len(corpus.texts) == 6594 and int(corpus.labels.sum()) == 1742
    assert corpus.texts[0] == "You fuck your dad."
    assert not any("\\x" in t or "\\n" in t for t in corpus.texts)
    assert unescape('"a\\\\xc2\\\\xa0b\\\\nc"') == "a\xa0b\nc"  # escaped twice
    assert unescape('"it\\xe2\\x80\\x99s \\u2026"') == "it\u2019s \u2026"


def test_default_scorer_auroc_on_real_insults_beats_floor_and_length(
    default: ProfanityCheckScorer,
) -> None:
    result = evaluate_toxicity(default)
    # Measured 0.820 on all 6,594 comments (alt-profanity-check 1.9.1, scikit-learn 1.9.1); the
    # corpus is not in its training data (Davidson tweets + Wikipedia talk). Length alone: 0.445.
    assert result.n == 6594 and result.positives == 1742
    assert result.roc_auc > 0.78
    length_signal = max(result.length_only_roc_auc, 1 - result.length_only_roc_auc)
    assert result.roc_auc > length_signal + 0.2
    assert "0.820" in result.table() and "text length only" in result.table()


def test_evaluation_sample_is_seeded(default: ProfanityCheckScorer) -> None:
    a, b = evaluate_toxicity(default, limit=1000), evaluate_toxicity(default, limit=1000)
    assert a == b and a.n == 1000
    assert evaluate_toxicity(default, limit=1000, seed=1).roc_auc != a.roc_auc


def _tiny_model(folder: Path, labels: tuple[str, ...], problem_type: str) -> Path:
    """A 2-layer, 32-wide BERT with random weights and a word-level vocab, saved to disk."""
    folder.mkdir(parents=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    # from_pretrained reads vocab.txt in transformers 4 and 5 alike; in 5 the constructor's
    # `vocab_file=` keyword is silently ignored and every word becomes [UNK].
    tokenizer = BertTokenizerFast.from_pretrained(folder)
    assert tokenizer("you idiot")["input_ids"] == [2, 10, 13, 3]
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=37, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
        problem_type=problem_type, initializer_range=0.2,  # wide weights: scores that differ
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _reference(folder: Path, texts: list[str]) -> torch.Tensor:
    """Logits straight from the saved model, one text at a time (no padding, no sorting)."""
    tokenizer = BertTokenizerFast.from_pretrained(folder)
    model = BertForSequenceClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        return torch.cat([model(**tokenizer(t, return_tensors="pt")).logits for t in texts])


def test_multi_label_head_is_max_sigmoid_in_input_order(tmp_path: Path) -> None:
    folder = _tiny_model(tmp_path / "detox", DETOXIFY, "multi_label_classification")
    scorer = TransformersToxicityScorer(folder, batch_size=4)
    scores = scorer.score(TEXTS)
    labels = scorer.labels
    expected = torch.sigmoid(_reference(folder, TEXTS)).numpy()

    assert scores.dtype == np.float64 and scores.shape == (len(TEXTS),)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert np.ptp(scores) > 1e-4  # the texts really score differently, so order is tested
    assert set(labels) == set(DETOXIFY)
    np.testing.assert_allclose(np.stack([labels[n] for n in DETOXIFY], 1), expected, atol=1e-5)
    np.testing.assert_allclose(scores, expected.max(axis=1), atol=1e-5)
    np.testing.assert_allclose(scorer.score(TEXTS[::-1]), scores[::-1], atol=1e-6)


def test_identity_mentions_of_an_unbiased_head_do_not_count_as_toxicity(
    tmp_path: Path,
) -> None:
    names = (*DETOXIFY, "male", "female", "muslim")
    folder = _tiny_model(tmp_path / "unbiased", names, "multi_label_classification")
    scorer = TransformersToxicityScorer(folder)
    scores = scorer.score(TEXTS)
    sigmoids = torch.sigmoid(_reference(folder, TEXTS)).numpy()
    np.testing.assert_allclose(scores, sigmoids[:, : len(DETOXIFY)].max(axis=1), atol=1e-5)
    assert (sigmoids.max(axis=1) > scores + 0.01).any()  # identity columns were left out
    assert set(scorer.labels) == set(names)


@pytest.mark.parametrize("labels, toxic", [(("non-toxic", "toxic"), 1),
                                           (("toxic", "not toxic"), 0),
                                           (("LABEL_0", "LABEL_1"), 1)])
def test_single_label_head_is_softmax_of_the_toxic_class(
    tmp_path: Path, labels: tuple[str, str], toxic: int
) -> None:
    folder = _tiny_model(tmp_path / "binary", labels, "single_label_classification")
    scorer = TransformersToxicityScorer(folder, batch_size=2)
    scores = scorer.score(["", *TEXTS])
    expected = torch.softmax(_reference(folder, TEXTS), dim=1).numpy()

    assert scores[0] == 0.0  # empty text: no model call, score 0
    np.testing.assert_allclose(scores[1:], expected[:, toxic], atol=1e-5)
    assert set(scorer.labels) == set(labels)
    np.testing.assert_allclose(scorer.labels[labels[1 - toxic]][1:], expected[:, 1 - toxic],
                               atol=1e-5)
    np.testing.assert_allclose(scorer.score(TEXTS[::-1]), scores[1:][::-1], atol=1e-6)


def test_a_model_that_is_not_on_disk_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"scoring\.toxicity\.model=.*never downloads"):
        TransformersToxicityScorer(tmp_path / "missing")
    with pytest.raises(ModelNotFound, match=r"scoring\.toxicity\.model="):
        load_toxicity_scorer("unitary/toxic-bert", "cpu")  # a hub name is never fetched
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match=r"not a complete sequence-classification model"):
        TransformersToxicityScorer(tmp_path / "empty")


def test_the_classifier_attends_without_cudnn_attention(tmp_path: Path, monkeypatch) -> None:
    from tests.detectors.tiny_model import attention_spy

    scorer = TransformersToxicityScorer(
        _tiny_model(tmp_path / "m", DETOXIFY, "multi_label_classification"), device="cpu")
    allowed = attention_spy(monkeypatch)
    scorer.score(TEXTS)
    assert allowed and not any(allowed)


def test_a_half_precision_checkpoint_is_scored_in_fp32_on_a_cpu(tmp_path: Path) -> None:
    from tests.detectors.tiny_model import halve_checkpoint

    folder = _tiny_model(tmp_path / "half", DETOXIFY, "multi_label_classification")
    expected = torch.sigmoid(_reference(folder, TEXTS)).numpy().max(axis=1)
    halve_checkpoint(folder)
    scorer = TransformersToxicityScorer(folder, device="cpu")
    assert {p.dtype for p in scorer.model.parameters()} == {torch.float32}
    # The same scores up to the weights' rounding to fp16.
    np.testing.assert_allclose(scorer.score(TEXTS), expected, atol=2e-3)
