"""`driftwatch evaluate`: the scorers on labelled data that ships in packages, next to a
length-only baseline, so a length effect is never mistaken for a scorer."""

from __future__ import annotations

from monitor.config import OfflineConfig


def run_evaluate(which: str, limit: int, config: OfflineConfig) -> int:
    from detectors.embedder import Embedder

    scoring = config.scoring
    if which in ("toxicity", "all"):
        from detectors.toxicity import load_toxicity_scorer
        from detectors.toxicity_eval import evaluate_toxicity

        scorer = load_toxicity_scorer(scoring.toxicity.model, scoring.device)
        print(evaluate_toxicity(scorer, limit=None if limit <= 0 else limit).table())
        print()
    if which in ("groundedness", "all"):
        from detectors.groundedness import GroundednessScorer, NliSupport
        from detectors.groundedness_eval import TASKS, evaluate_groundedness

        e = scoring.embedding
        embedder = Embedder(e.model, scoring.device, e.backend, e.precision, e.token_budget,
                            e.max_batch, e.cache_size)
        g = scoring.groundedness
        nli = NliSupport(g.nli_model, embedder.device) if g.nli_model else None
        scorer = GroundednessScorer(embedder.encode, support_threshold=g.support_threshold,
                                    nli=nli, nli_threshold=g.nli_threshold)
        for task in TASKS:
            print(evaluate_groundedness(scorer, task, limit=limit if limit > 0 else 1000).table())
            print()
    return 0
