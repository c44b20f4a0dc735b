"""How well a toxicity scorer separates human-labelled insults from other comments (ROC AUC),
next to text length alone as the score, so a length effect is not mistaken for a scorer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectors.embedder import Embedding
from detectors.insults_corpus import NAME as INSULTS
from detectors.insults_corpus import load_insults
from detectors.toxicity import ProfanityCheckScorer, ToxicityScorer
from detectors.toxicity_corpora import HELD_OUT_BENIGN, combine
from detectors.toxicity_linear import NAME as LINEAR
from detectors.toxicity_linear import features, fit


@dataclass(frozen=True)
class ToxicityEval:
    """ROC AUC of a toxicity scorer on labelled texts, next to text length alone."""

    dataset: str
    scorer: str
    n: int
    positives: int
    roc_auc: float
    length_only_roc_auc: float  # text length in characters as the score; 0.5 = no signal
    sample: str  # "all" or how the rows were drawn

    def table(self) -> str:
        rows = [
            ("data set", f"{self.dataset} ({self.sample})"),
            ("texts", f"{self.n:,} ({self.positives:,} toxic)"),
            (f"ROC AUC, {self.scorer}", f"{self.roc_auc:.3f}"),
            ("ROC AUC, text length only", f"{self.length_only_roc_auc:.3f}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def evaluate_toxicity(
    scorer: ToxicityScorer, limit: int | None = None, seed: int = 0
) -> ToxicityEval:
    """ROC AUC on the Impermium insults corpus: all 6,594 comments, or a seeded sample of
    `limit` of them (the same rows for the same limit and seed)."""
    from sklearn.metrics import roc_auc_score

    corpus = combine((INSULTS,), limit, seed)
    sampled = limit is not None and limit < len(load_insults().texts)
    sample = f"{limit:,} drawn with seed {seed}" if sampled else "all"
    texts, labels = list(corpus.texts), corpus.labels
    scores = scorer.score(texts)
    lengths = np.fromiter((len(t) for t in texts), dtype=np.float64, count=len(texts))
    return ToxicityEval(
        dataset=corpus.name,
        scorer=scorer.name,
        n=len(texts),
        positives=int(labels.sum()),
        roc_auc=float(roc_auc_score(labels, scores)),
        length_only_roc_auc=float(roc_auc_score(labels, lengths)),
        sample=sample,
    )


if __name__ == "__main__":
    from detectors.toxicity import ProfanityCheckScorer

    print(evaluate_toxicity(ProfanityCheckScorer()).table())


@dataclass(frozen=True)
class Fold:
    """Sources judged together, and the sources embedding-linear is trained on for them."""

    held_out: tuple[str, ...]
    train: tuple[str, ...]


# Leave one source out: embedding-linear is trained on the other sources and never sees a text
# of the one it is judged on (halueval-dialogue's ordinary answers are the negatives for the
# toxic-only RealToxicityPrompts fragments).
_SUMMARIES = "halueval-summarization"
FOLDS = (
    Fold(("rtp-toxic", "halueval-dialogue"),
         ("impermium-insults", "pyrit-hate", "halueval-qa", _SUMMARIES)),
    Fold(("pyrit-hate",),
         ("impermium-insults", "rtp-toxic", "halueval-qa", "halueval-dialogue", _SUMMARIES)),
    Fold(("impermium-insults",),
         ("rtp-toxic", "pyrit-hate", "halueval-qa", "halueval-dialogue", _SUMMARIES)),
)


@dataclass(frozen=True)
class SourceEval:
    """ROC AUC of several scorers on one held-out set, next to text length alone."""

    dataset: str
    n: int
    positives: int
    roc_auc: dict[str, float]  # scorer name -> ROC AUC
    length_only_roc_auc: float


def evaluate_out_of_source(embedder: Embedding, limit: int | None = None,
                           folds: tuple[Fold, ...] = FOLDS) -> list[SourceEval]:
    """alt-profanity-check and embedding-linear (on `embedder`, trained per fold on the other
    sources) on each held-out set; `limit`: a seeded sample of that many texts per source."""
    from sklearn.metrics import roc_auc_score

    profanity = ProfanityCheckScorer()
    names = sorted({n for f in folds for n in (*f.held_out, *f.train)})
    parts = {n: combine((n,), limit) for n in names}
    # Each source embedded once; its last column is profanity-check's logit (same ranking).
    x = {n: features(embedder, profanity, parts[n].texts) for n in names}
    out = []
    for fold in folds:
        model = fit(np.vstack([x[n] for n in fold.train]),
                    np.concatenate([parts[n].labels for n in fold.train]))
        held = np.vstack([x[n] for n in fold.held_out])
        labels = np.concatenate([parts[n].labels for n in fold.held_out])
        lengths = np.fromiter((len(t) for n in fold.held_out for t in parts[n].texts),
                              dtype=np.float64, count=labels.size)
        out.append(SourceEval(
            " vs ".join(fold.held_out), labels.size, int(labels.sum()),
            {profanity.name: float(roc_auc_score(labels, held[:, -1])),
             LINEAR: float(roc_auc_score(labels, model.probability(held)))},
            float(roc_auc_score(labels, lengths))))
    return out


def mean_auroc(results: list[SourceEval]) -> dict[str, float]:
    """Each scorer's ROC AUC averaged over the held-out sets (each set weighs the same)."""
    return {name: float(np.mean([r.roc_auc[name] for r in results]))
            for name in results[0].roc_auc} if results else {}


def source_table(results: list[SourceEval]) -> str:
    names = list(results[0].roc_auc) if results else []
    header = f"{'held-out set (ROC AUC)':<40}{'texts':>8}" + "".join(
        f"{n:>20}" for n in [*names, "length only"])
    lines = [header]
    for r in results:
        cells = [r.roc_auc[n] for n in names] + [r.length_only_roc_auc]
        lines.append(f"{r.dataset:<40}{r.n:>8,}" + "".join(f"{c:>20.3f}" for c in cells))
    means = mean_auroc(results)
    lines.append(f"{'mean of the held-out sets':<48}" + "".join(f"{means[n]:>20.3f}"
                                                                for n in names))
    return "\n".join(lines)


@dataclass(frozen=True)
class BenignEval:
    """How much of a benign set, from a source no model here is trained on, each scorer flags."""

    dataset: str
    n: int
    flagged: dict[str, float]  # scorer name -> share of texts at or above the threshold


def flag_rates_on_held_out_benign(scorers: list[ToxicityScorer], threshold: float = 0.5,
                                  limit: int | None = None, seed: int = 0,
                                  sets: tuple[str, ...] = tuple(HELD_OUT_BENIGN)
                                  ) -> list[BenignEval]:
    """Each scorer's false-positive rate on each held-out benign set (news, legal summaries);
    `limit`: a seeded sample of at most that many texts per set."""
    out = []
    for name in sets:
        texts = list(combine((name,), limit, seed, HELD_OUT_BENIGN).texts)
        out.append(BenignEval(name, len(texts), {
            s.name: float(np.mean(s.score(texts) >= threshold)) for s in scorers}))
    return out


def benign_table(results: list[BenignEval], threshold: float = 0.5) -> str:
    names = list(results[0].flagged) if results else []
    lines = [f"{f'held-out benign set (flagged at {threshold:g})':<40}{'texts':>8}"
             + "".join(f"{n:>20}" for n in names)]
    for r in results:
        lines.append(f"{r.dataset:<40}{r.n:>8,}"
                     + "".join(f"{r.flagged[n]:>19.1%} " for n in names))
    return "\n".join(lines)
