"""Input sanity flags: empty responses, refusals, truncation at the token limit, charset and
script anomalies. Each flag is one boolean per record; monitor counts them."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

# The "I can't help with that" family; matched by embedding similarity, so paraphrases count.
DEFAULT_REFUSALS: tuple[str, ...] = (
    "I'm sorry, but I can't help with that.",
    "I cannot assist with that request.",
    "As an AI language model, I am not able to do that.",
    "I'm unable to provide that information.",
    "Sorry, I won't be able to help with this request.",
    "I can't comply with that.",
)
# Finish reasons serving stacks report when generation hit the token limit.
TRUNCATION_STATUSES = frozenset({"length", "max_tokens", "truncated", "max_length",
                                 "max_output_tokens"})
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")
_MOJIBAKE = re.compile(r"[ÃÂ][\x80-\xbf]|â€")
_SAMPLE_CHARS = 400


def empty(texts: Sequence[str | None]) -> np.ndarray:
    return np.array([t is None or not t.strip() for t in texts], dtype=bool)


def refusals(
    responses: np.ndarray, refusal_set: np.ndarray, present: np.ndarray, threshold: float
) -> np.ndarray:
    """Rows of `responses` (unit vectors) whose nearest refusal is at least `threshold` cosine."""
    if responses.size == 0:
        return np.zeros(len(responses), dtype=bool)
    return ((responses @ refusal_set.T).max(axis=1) >= threshold) & present


def truncated(
    statuses: Sequence[str | None], completion_tokens: np.ndarray, limit: int | None
) -> np.ndarray:
    by_status = np.array(
        [s is not None and s.strip().lower() in TRUNCATION_STATUSES for s in statuses], dtype=bool
    )
    if limit is None:
        return by_status
    return by_status | (np.nan_to_num(completion_tokens, nan=-1) >= limit)


_ASCII_LETTER = re.compile(r"[A-Za-z]")
_ASCII_LETTERS = bytes(range(ord("A"), ord("Z") + 1)) + bytes(range(ord("a"), ord("z") + 1))
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


@functools.lru_cache(maxsize=4_096)
def _letter_script(ch: str) -> str:
    """A letter's script: the first word of its Unicode name (LATIN, CJK, CYRILLIC, ...)."""
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


def _script(text: str) -> str | None:
    """The dominant Unicode script of the letters in a text's head (LATIN, CJK, CYRILLIC, ...);
    between scripts of equal count, the one whose first letter comes first."""
    sample = text[:_SAMPLE_CHARS]
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    # ASCII letters are all LATIN: counted in C (the ASCII bytes less those left when the
    # letters are deleted), so only other letters are looked up one by one (most of a Latin
    # text's 400 characters used to be, at 80 us a record).
    if (m := _ASCII_LETTER.search(sample)) is not None:
        ascii_bytes = sample.encode("ascii", "ignore")
        counts["LATIN"] = len(ascii_bytes) - len(ascii_bytes.translate(None, _ASCII_LETTERS))
        first["LATIN"] = m.start()
    for m in _NON_ASCII.finditer(sample):
        if (ch := m.group()).isalpha():
            script = _letter_script(ch)
            counts[script] = counts.get(script, 0) + 1
            first.setdefault(script, m.start())
    return min(counts, key=lambda s: (-counts[s], first[s])) if counts else None


def charset_anomalies(
    responses: Sequence[str | None], prompts: Sequence[str | None]
) -> np.ndarray:
    """Control characters, U+FFFD or mojibake in the response, or a response whose script
    differs from its prompt's (a Latin question answered in CJK, say)."""
    flags = np.zeros(len(responses), dtype=bool)
    for i, (response, prompt) in enumerate(zip(responses, prompts, strict=True)):
        if not response:
            continue
        head = response[:_SAMPLE_CHARS]
        if _CONTROL.search(head) or _MOJIBAKE.search(head):
            flags[i] = True
        elif prompt:
            theirs, ours = _script(prompt[-_SAMPLE_CHARS:]), _script(head)
            flags[i] = theirs is not None and ours is not None and theirs != ours
    return flags
