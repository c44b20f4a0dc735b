"""How well a toxicity scorer separates human-labelled insults from other comments (ROC AUC),
next to text length alone as the score, so a length effect is not mistaken for a scorer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectors.insults_corpus import NAME as INSULTS
from detectors.insults_corpus import load_insults
from detectors.toxicity import ToxicityScorer
from detectors.toxicity_corpora import combine


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


# Judged out of source: no text of these sources is in embedding-linear's training data.
HELD_OUT = (("rtp-toxic", "halueval-dialogue"), ("pyrit-hate",))


@dataclass(frozen=True)
class SourceEval:
    """ROC AUC of several scorers on one held-out set, next to text length alone."""

    dataset: str
    n: int
    positives: int
    roc_auc: dict[str, float]  # scorer name -> ROC AUC
    length_only_roc_auc: float


def evaluate_out_of_source(scorers: list[ToxicityScorer], limit: int | None = None,
                           held_out: tuple[tuple[str, ...], ...] = HELD_OUT
                           ) -> list[SourceEval]:
    """Each scorer on each held-out set (a seeded sample of `limit` texts per source)."""
    from sklearn.metrics import roc_auc_score

    out = []
    for names in held_out:
        data = combine(names, limit)
        texts = list(data.texts)
        lengths = np.fromiter((len(t) for t in texts), dtype=np.float64, count=len(texts))
        out.append(SourceEval(
            " vs ".join(names), len(texts), int(data.labels.sum()),
            {s.name: float(roc_auc_score(data.labels, s.score(texts))) for s in scorers},
            float(roc_auc_score(data.labels, lengths))))
    return out


def source_table(results: list[SourceEval]) -> str:
    names = list(results[0].roc_auc) if results else []
    header = f"{'held-out set (ROC AUC)':<40}{'texts':>8}" + "".join(
        f"{n:>20}" for n in [*names, "length only"])
    lines = [header]
    for r in results:
        cells = [r.roc_auc[n] for n in names] + [r.length_only_roc_auc]
        lines.append(f"{r.dataset:<40}{r.n:>8,}" + "".join(f"{c:>20.3f}" for c in cells))
    return "\n".join(lines)
