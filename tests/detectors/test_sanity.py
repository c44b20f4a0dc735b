"""Sanity flags on known inputs."""

from __future__ import annotations

import numpy as np
import pytest

from detectors import sanity
from detectors.embedder import Embedder


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(device="cpu", backend="torch")


def test_refusals_are_found_by_similarity_not_by_exact_text(embedder: Embedder) -> None:
    refusal_set = embedder.encode(list(sanity.DEFAULT_REFUSALS))
    responses = [
        "I'm sorry, but I cannot help with that request.",
        "Unfortunately I am not able to assist with this.",
        "The capital of France is Paris.",
        "Robert Downey Jr. starred in Zodiac in 2007.",
        "I can help with that! Here is the answer.",
    ]
    vectors = embedder.encode(responses)
    # The config default (0.6); measured maxima: 0.89, 0.64 | 0.07, 0.10, 0.51.
    flags = sanity.refusals(vectors, refusal_set, np.ones(5, dtype=bool), threshold=0.6)
    assert flags.tolist() == [True, True, False, False, False]


def test_empty_truncated_and_charset_flags() -> None:
    assert sanity.empty(["", "   \n", None, "ok"]).tolist() == [True, True, True, False]
    tokens = np.array([12.0, 4096.0, np.nan, 10.0])
    flags = sanity.truncated(["ok", "ok", "length", None], tokens, limit=4096)
    assert flags.tolist() == [False, True, True, False]
    assert sanity.truncated(["ok", "LENGTH"], np.array([1.0, 1.0]), None).tolist() == [
        False, True]
    anomalies = sanity.charset_anomalies(
        ["Paris is the capital.", "Париж — столица Франции.", "bad \ufffd byte", "CafÃ© au lait",
         "tab\tand newline\nare fine", None],
        ["What is the capital of France?", "What is the capital of France?", "x", "y", "z", "q"],
    )
    assert anomalies.tolist() == [False, True, True, True, False, False]


@pytest.mark.parametrize(("text", "script"), [
    # Accents and curly quotes: still Latin.
    ("The caf\u00e9\u2019s cr\u00e8me br\u00fbl\u00e9e \u201cfun\u201d", "LATIN"),
    ("東京は日本の首都です (Tokyo)", "CJK"),  # 6 ideographs, 5 Latin, 4 hiragana
    ("日本 is", "CJK"),  # 2 against 2: the script seen first
    ("is 日本", "LATIN"),
    ("Москва is big", "CYRILLIC"),  # 6 against 5
    ("12 345 ½ Ⅻ ٣ — !?", None),  # numbers and punctuation, no letters
    ("", None),
])
def test_a_texts_script_is_its_most_frequent_letters(text: str, script: str | None) -> None:
    assert sanity._script(text) == script



def test_a_script_wins_by_one_letter_counted_as_the_regex_counts_them() -> None:
    """Latin letters (ASCII, counted from bytes) against as many Cyrillic ones, one fewer or
    one more, among digits, marks, accents, emoji and lone surrogates: a count off by one
    flips the answer."""
    import re

    rng = np.random.default_rng(4)
    noise = [*"09 .,\t_@[`{~", "\u00bd", "\u0301", "\ud800", "\U0001f600", "\u2019"]
    for _ in range(2_000):
        latin = int(rng.integers(1, 40))
        cyrillic = latin + int(rng.integers(-1, 2))
        pieces = [*rng.choice(list("aZmQxy"), size=latin), *("\u0416" * cyrillic),
                  *rng.choice(noise, size=int(rng.integers(0, 60)))]
        text = "".join(rng.permutation(np.array(pieces, dtype=object)))
        counts = {"LATIN": len(re.findall(r"[A-Za-z]", text)), "CYRILLIC": text.count("\u0416")}
        first = {"LATIN": re.search(r"[A-Za-z]", text).start(), "CYRILLIC": text.find("\u0416")}
        if counts["CYRILLIC"] == 0:
            del counts["CYRILLIC"]
        want = min(counts, key=lambda k: (-counts[k], first[k]))
        assert sanity._script(text) == want, text
