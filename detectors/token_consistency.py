"""Tokenization consistency: do the token counts a serving stack reports still match its text?

A changed chat template or tokenizer shows as reported counts that no longer follow the text.
A local tokenizer counts each record's prompt and response; per segment and stream a robust
line `reported = a + b * counted` is learnt on the first `reference_records` pairs (Theil-Sen,
from scipy: the offset absorbs a chat template's fixed tokens, the slope the difference
between the two tokenizers). Two tokenizers disagree more on a longer text, about as a count
does (the variance grows with the length), so each residual is divided by the square root of
the predicted count; a record whose scaled residual lies more than `threshold` robust standard
deviations (1.4826 x MAD over the reference, at least 0.1) from 0 is a mismatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats


class TokenCounter:
    """Token counts from a local Hugging Face tokenizer (a fast one where the model has it)."""

    def __init__(self, path: str) -> None:
        from transformers import AutoTokenizer

        self.path = path
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)

    def count(self, texts: Sequence[str | None]) -> np.ndarray:
        """Tokens of each text without special tokens; NaN where there is no text."""
        out = np.full(len(texts), np.nan)
        present = [i for i, t in enumerate(texts) if t is not None]
        if present:
            ids = self._tokenizer([texts[i] for i in present], add_special_tokens=False,
                                  verbose=False)["input_ids"]
            out[present] = [len(x) for x in ids]
        return out


@dataclass
class TokenLine:
    """One segment's and stream's reported-against-counted line: learnt, then checked.

    >>> line = TokenLine(reference_records=50)
    >>> counted = np.arange(10.0, 60.0)
    >>> flags, _ = line.update(counted, 12 + 1.2 * counted)  # a 12-token template
    >>> bool(np.isnan(flags).all()), round(line.offset), round(line.slope, 2)  # learnt
    (True, 12, 1.2)
    >>> flags, _ = line.update(np.array([30.0, 30.0]), np.array([48.0, 80.0]))
    >>> flags.tolist()  # 12 + 1.2 x 30 = 48; 80 is a template 32 tokens longer
    [0.0, 1.0]
    """

    reference_records: int = 200
    threshold: float = 5.0
    counted: list[np.ndarray] = field(default_factory=list)
    reported: list[np.ndarray] = field(default_factory=list)
    collected: int = 0
    offset: float = float("nan")
    slope: float = float("nan")
    scale: float = float("nan")  # robust standard deviation of the scaled residuals

    @property
    def ready(self) -> bool:
        return self.scale == self.scale

    def update(self, counted: np.ndarray, reported: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per record: mismatch (1, 0, or NaN while learning or without both counts) and the
        ratio reported / counted (NaN without both)."""
        both = ~(np.isnan(counted) | np.isnan(reported)) & (counted > 0)
        ratio = np.full(counted.shape, np.nan)
        ratio[both] = reported[both] / counted[both]
        flags = np.full(counted.shape, np.nan)
        if not self.ready:
            need = self.reference_records - self.collected
            learn = np.flatnonzero(both)[:need]
            self.counted.append(counted[learn])
            self.reported.append(reported[learn])
            self.collected += learn.size
            if self.collected < self.reference_records:
                return flags, ratio
            self._fit()
            both[learn] = False  # the reference's own records are not judged against it
        flags[both] = np.abs(self._scaled(counted[both], reported[both])) \
            > self.threshold * self.scale
        return flags, ratio

    def _scaled(self, counted: np.ndarray, reported: np.ndarray) -> np.ndarray:
        expected = np.maximum(self.offset + self.slope * counted, 1.0)
        return (reported - expected) / np.sqrt(expected)

    def _fit(self) -> None:
        x, y = np.concatenate(self.counted), np.concatenate(self.reported)
        fit = stats.theilslopes(y, x)
        self.slope, self.offset = float(fit.slope), float(fit.intercept)
        mad = float(stats.median_abs_deviation(self._scaled(x, y), scale="normal"))
        self.scale = max(mad, 0.1)
        self.counted, self.reported = [], []
