"""`driftwatch evaluate`: the scorers on labelled data that ships in packages, next to a
length-only baseline, so a length effect is never mistaken for a scorer."""

from __future__ import annotations

from monitor.config import OfflineConfig


def run_evaluate(which: str, limit: int, config: OfflineConfig) -> int:
    scoring = config.scoring
    if which in ("toxicity", "all"):
        from detectors.toxicity import load_toxicity_scorer
        from detectors.toxicity_eval import evaluate_toxicity

        scorer = load_toxicity_scorer(scoring.toxicity.model, scoring.device)
        print(evaluate_toxicity(scorer, limit=None if limit <= 0 else limit).table())
        print()
    if which in ("groundedness", "all"):
        from detectors.groundedness_eval import TASKS, evaluate_groundedness
        from monitor.pipeline.model_scoring import ModelScorers

        # The daemon's own construction, so the figures are those of the configured scorer.
        scorer = ModelScorers(["groundedness"], scoring).groundedness
        assert scorer is not None
        for task in TASKS:
            print(evaluate_groundedness(scorer, task, limit=limit if limit > 0 else 1000).table())
            print()
    return 0
