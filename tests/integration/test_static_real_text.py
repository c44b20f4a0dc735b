"""The hybrid embedder on real text, with the real table distilled from the shipped MiniLM:
it flags the refusals the transformer flags (and nothing else), and the table's vectors find
a topic shift about as soon as MiniLM's do. Real text nobody here wrote: LLM answers that
declined hateful requests (pyrit's human-scored set), HaluEval answers, questions and turns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from consumers.wire import Record
from detectors.static_embedder import StaticEmbedder, ensure_table
from detectors.toxicity_corpora import load_halueval_benign, load_pyrit_hate
from monitor.config import ScoringSettings
from monitor.local.bench_drift import _online_mmd, _texts
from monitor.pipeline.model_scoring import ModelScorers

# Distils all-MiniLM-L6-v2 (30k tokens through the model: about a minute of CPU) once, in one
# test: xdist would give two tests of a module-scoped fixture a distillation each.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_the_hybrid_keeps_the_transformers_refusals_and_the_tables_drift_power(
        tmp_path: Path) -> None:
    ensure_table(None, tmp_path)
    scorers = {backend: ModelScorers(["sanity"], ScoringSettings.model_validate({
        "device": "cpu", "models_dir": str(tmp_path), "embedding": {"backend": backend}}))
        for backend in ("hybrid", "torch")}
    _refusals_equal_the_transformers(scorers)
    _topic_shift_found_about_as_soon_as_with_minilm(scorers)


def _refusals_equal_the_transformers(scorers: dict[str, ModelScorers]) -> None:
    pyrit = load_pyrit_hate()
    declined = [t for t, toxic in zip(pyrit.texts, pyrit.labels, strict=True) if not toxic]
    answers = list(load_halueval_benign("qa", 400).texts) + list(
        load_halueval_benign("dialogue", 400).texts)
    texts = declined + answers
    records = [Record(request_id=str(i), model="m", prompt="q", response=t)
               for i, t in enumerate(texts)]
    hybrid, torch_only = scorers["hybrid"], scorers["torch"]
    assert hybrid.transformer is not None
    hybrid.transformer.stats.take()
    ours = hybrid.score(records).flags["refusal"]
    asked = hybrid.transformer.stats.take()
    theirs = torch_only.score(records).flags["refusal"]
    # The transformer's accuracy, kept: the same flags on every text.
    np.testing.assert_array_equal(ours, theirs)
    caught, false = int(theirs[:len(declined)].sum()), int(theirs[len(declined):].sum())
    # Most of pyrit's not-hateful answers are essays; measured: 8 of its 122 are refusals
    # the transformer flags, and none of 2,000 HaluEval answers.
    assert caught >= 5 and false <= len(answers) // 200
    # ... for a fraction of the transformer's work (measured: 32% of answers pass at 0.4).
    assert asked.embedded + asked.cache_hits < 0.6 * len(texts)


def _topic_shift_found_about_as_soon_as_with_minilm(scorers: dict[str, ModelScorers]) -> None:
    qa, turns = _texts(1_500)  # 1,500 QA questions (1,000 of them the reference), 1,000 turns
    hybrid = scorers["hybrid"]
    assert isinstance(hybrid.embedder, StaticEmbedder)  # drift takes the table's vectors
    assert hybrid.transformer is not None
    delays = {}
    for name, embedder in (("static", hybrid.embedder), ("torch", hybrid.transformer)):
        clean, shifted = embedder.encode(qa), embedder.encode(turns)
        clean = clean[np.random.default_rng(0).permutation(len(clean))]  # as bench drift does
        figures = _online_mmd(name, clean[:1_000], clean[1_000:], shifted, window=30,
                              ert=1_000, runs=3, clean_records=300)
        # Of 9 (3 runs for each of 3 detector seeds); a run with an alarm in the 200 clean
        # records before the shift counts as missed (bench drift: 47-48 of 60 for both).
        assert figures.detected >= 5, figures
        delays[name] = figures.mean_delay
    # The goal: within 1.25x of MiniLM's delay (bench drift --embedders: 0.67x).
    assert delays["static"] <= 1.25 * delays["torch"], delays
