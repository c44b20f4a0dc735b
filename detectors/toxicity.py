"""Toxicity in [0, 1] for a batch of texts: alt-profanity-check offline by default, or a local
Hugging Face sequence classifier (Detoxify-style multi-label, or a toxic/non-toxic head)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy.sparse import issparse
from scipy.special import expit

from detectors.embedder import ModelNotFound, first_line
from detectors.inference import inference
from detectors.load_report import quiet_model_loading

__all__ = [
    "ModelNotFound",
    "ProfanityCheckScorer",
    "ToxicityScorer",
    "TransformersToxicityScorer",
    "load_toxicity_scorer",
]

SETTING = "scoring.toxicity.model"
# Detoxify / Jigsaw label names. Detoxify's "unbiased" head also predicts identity mentions
# (male, muslim, ...): those are not toxicity, so they never enter the max.
TOXIC_LABELS = frozenset({
    "toxic", "toxicity", "severe_toxic", "severe_toxicity", "obscene", "threat", "insult",
    "identity_attack", "identity_hate", "sexual_explicit",
})
_TOXIC_WORDS = ("toxic", "hate", "offens", "abus", "insult", "profan")
_BENIGN_WORDS = ("non", "not", "neutral", "normal", "safe", "clean", "neither")


class ToxicityScorer(Protocol):
    """What a toxicity scorer provides: a name, per-label probabilities and batch scores."""

    name: str  # for the *_info metric: "profanity-check" or the model folder's name
    labels: dict[str, np.ndarray]  # per-label probabilities of the last call; may be empty

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """float64 in [0, 1], one per text; an empty or blank text scores 0.0."""
        ...


def _present(texts: Sequence[str]) -> np.ndarray:
    return np.fromiter((bool(t and not t.isspace()) for t in texts), dtype=bool, count=len(texts))


class ProfanityCheckScorer:
    """alt-profanity-check (TF-IDF and a calibrated linear SVM): tens of µs a text on CPU."""

    name = "profanity-check"

    def __init__(self) -> None:
        # Importing the module unpickles its vectorizer and model (once per process).
        from profanity_check import profanity_check

        self._vectorizer = profanity_check.vectorizer
        self._model = profanity_check.model
        self._folds = _sigmoid_folds(self._model)
        self.labels: dict[str, np.ndarray] = {}  # one score only: no per-label breakdown

    def score(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(texts), dtype=np.float64)
        idx = np.flatnonzero(_present(texts))
        if idx.size:
            # predict_prob() in the package loops over rows in Python; this is one batch call.
            features = self._vectorizer.transform([texts[i] for i in idx])
            out[idx] = self._probability(features)
        return out

    def _probability(self, features: Any) -> np.ndarray:
        """The calibrated model's probability of the toxic class: sklearn's predict_proba,
        computed as it does (the same operations in the same order, so the same bits) without
        its per-call input checks, which cost more than the arithmetic (a 7 ms floor per
        call: about 140 µs a record in batches of 50)."""
        if self._folds is None:
            return self._model.predict_proba(features)[:, 1]
        weights, intercepts, slopes, offsets = self._folds
        decisions = features @ weights + intercepts  # one column per fold's LinearSVC
        probability = np.zeros(decisions.shape[0])
        for k in range(decisions.shape[1]):
            probability += expit(-(slopes[k] * decisions[:, k] + offsets[k]))
        probability /= decisions.shape[1]
        return probability


def _sigmoid_folds(model: Any) -> tuple[np.ndarray, np.ndarray, list[Any], list[Any]] | None:
    """A CalibratedClassifierCV of linear models with sigmoid calibration over two classes
    (alt-profanity-check's LinearSVC, 5 folds) as arrays: each fold's weights (a column),
    intercept, and the slope and offset of its sigmoid. None for any other model, which then
    goes through sklearn's predict_proba."""
    folds = getattr(model, "calibrated_classifiers_", None)
    if not folds or list(getattr(model, "classes_", ())) != [0, 1]:
        return None
    for fold in folds:
        estimator = fold.estimator
        coef = getattr(estimator, "coef_", None)
        if (fold.method != "sigmoid" or len(fold.calibrators) != 1
                or list(fold.classes) != [0, 1] or list(estimator.classes_) != [0, 1]
                or coef is None or coef.ndim != 2 or coef.shape[0] != 1
                or issparse(coef)):
            return None
    weights = np.column_stack([fold.estimator.coef_[0] for fold in folds])
    intercepts = np.array([np.ravel(fold.estimator.intercept_)[0] for fold in folds])
    # The calibrators' a_ and b_ as they are (numpy or Python floats): the same arithmetic.
    return (weights, intercepts, [fold.calibrators[0].a_ for fold in folds],
            [fold.calibrators[0].b_ for fold in folds])


def _normalise(label: str) -> str:
    return label.strip().lower().replace("-", "_").replace(" ", "_")


def _is_benign(label: str) -> bool:
    """non-toxic, NOT_HATE, neutral, neither ...: the classes that mean "fine"."""
    norm = _normalise(label)
    return any(norm.startswith(word) or word in norm.split("_") for word in _BENIGN_WORDS)


class TransformersToxicityScorer:
    """A local AutoModelForSequenceClassification directory (save_pretrained); never downloaded.

    Multi-label heads: sigmoid per label, toxicity = max over the toxic labels. Single-label
    heads: softmax, toxicity = probability of the toxic class (of all toxic classes together,
    for a hate / offensive / neither head).

    >>> scorer = TransformersToxicityScorer("/models/toxic-bert")  # doctest: +SKIP
    >>> scores = scorer.score(["Thanks, see you at 3pm.", "you are an idiot"])  # doctest: +SKIP
    >>> insult = scorer.labels["insult"]  # that call's per-label probabilities  # doctest: +SKIP
    """

    def __init__(
        self, path: str | Path, device: str = "cpu", batch_size: int = 64, max_length: int = 256
    ) -> None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ModelNotFound(
                f"{SETTING}={str(path)!r} is not a directory on disk and driftwatch never "
                f"downloads models; point it to a local copy (save_pretrained) or leave it "
                f"unset for the offline default (alt-profanity-check)"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        quiet_model_loading()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(
                folder, local_files_only=True
            )
        except (OSError, ValueError) as e:  # no config, weights or tokenizer files there
            raise ModelNotFound(
                f"{SETTING}={str(path)!r} is not a complete sequence-classification model "
                f"({first_line(e)}); save one there with model.save_pretrained and "
                f"tokenizer.save_pretrained, or leave it unset for the offline default"
            ) from e
        self.device = device
        # fp16 on a GPU, fp32 otherwise, whatever dtype the checkpoint was saved in
        # (transformers 5 loads it in that dtype when its config names none).
        model = model.half() if device.startswith("cuda") else model.float()
        self.model = model.to(device).eval()
        self.name = folder.name
        self.batch_size = batch_size
        config = model.config
        limits = [max_length, getattr(self.tokenizer, "model_max_length", max_length),
                  getattr(config, "max_position_embeddings", max_length)]
        self.max_length = int(min(limits))
        self.label_names = tuple(str(config.id2label[i]) for i in range(config.num_labels))
        self.multi_label, self._toxic = _toxic_columns(config.problem_type, self.label_names)
        self.labels: dict[str, np.ndarray] = {}
        self._torch = torch

    def score(self, texts: Sequence[str]) -> np.ndarray:
        n = len(texts)
        probs = np.zeros((n, len(self.label_names)), dtype=np.float64)
        idx = np.flatnonzero(_present(texts))
        if idx.size:
            probs[idx] = self._probabilities([texts[i] for i in idx])
        self.labels = {name: probs[:, j] for j, name in enumerate(self.label_names)}
        toxic = probs[:, self._toxic]
        # Independent sigmoids: the worst label; exclusive classes: P(any toxic class).
        out = toxic.max(axis=1) if self.multi_label else toxic.sum(axis=1)
        return np.clip(out, 0.0, 1.0)

    def _probabilities(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        lengths = np.fromiter((len(ids) for ids in enc["input_ids"]), dtype=np.int64,
                              count=len(texts))
        order = np.argsort(lengths, kind="stable")  # similar lengths together: less padding
        result = np.empty((len(texts), len(self.label_names)), dtype=np.float64)
        torch = self._torch
        with inference():
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                features: dict[str, Any] = {k: [enc[k][i] for i in rows] for k in enc}
                batch = self.tokenizer.pad(features, return_tensors="pt")
                logits = self.model(**{k: v.to(self.device) for k, v in batch.items()}).logits
                logits = logits.float()
                if self.multi_label or logits.shape[1] == 1:
                    p = torch.sigmoid(logits)
                else:
                    p = torch.softmax(logits, dim=1)
                result[rows] = p.cpu().numpy()
        return result


def _toxic_columns(problem_type: str | None, names: tuple[str, ...]) -> tuple[bool, list[int]]:
    """(multi-label?, the columns that make the toxicity score)."""
    normal = [_normalise(n) for n in names]
    detoxify = [i for i, n in enumerate(normal) if n in TOXIC_LABELS]
    multi = problem_type == "multi_label_classification" or (
        problem_type != "single_label_classification" and len(detoxify) >= 2
    )
    if len(names) == 1:
        return True, [0]  # one logit: sigmoid of it
    if multi:
        if detoxify:
            return True, detoxify
        flagged = [i for i, n in enumerate(names) if not _is_benign(n)]
        return True, flagged or list(range(len(names)))
    toxic = [i for i, n in enumerate(names)
             if any(w in n.lower() for w in _TOXIC_WORDS) and not _is_benign(n)]
    # Unnamed classes (LABEL_0 / LABEL_1): class 1 is the positive one by convention.
    return False, toxic or [1]


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_toxicity_scorer(model: str | None, device: str = "cpu") -> ToxicityScorer:
    """The configured scorer: None or "auto" (where no embedding is at hand) is
    alt-profanity-check, anything else a local directory."""
    if model is None or model in (ProfanityCheckScorer.name, "auto"):
        return ProfanityCheckScorer()
    return TransformersToxicityScorer(model, _resolve_device(device))
