"""The embedders' cache: identical texts embedded once, a bounded number remembered, the least
recently used forgotten first, and a served vector equal to the one embedded."""

from __future__ import annotations

import numpy as np

from detectors.vector_cache import VectorCache


class _Counting:
    """An embedding function that records what it was asked to embed."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array([[len(t), ord(t[0]) if t else 0] for t in texts], dtype=np.float32)


def test_identical_texts_of_one_call_are_embedded_once() -> None:
    cache, embed = VectorCache(size=10, dim=2), _Counting()
    out, hits = cache.encode(["ab", "c", "ab", "ab"], embed)
    assert embed.calls == [["ab", "c"]] and hits == 2
    np.testing.assert_array_equal(out, [[2, 97], [1, 99], [2, 97], [2, 97]])


def test_a_text_met_again_is_served_without_embedding() -> None:
    cache, embed = VectorCache(size=10, dim=2), _Counting()
    first, _ = cache.encode(["ab", "c"], embed)
    again, hits = cache.encode(["c", "d", "ab"], embed)
    assert embed.calls == [["ab", "c"], ["d"]] and hits == 2
    np.testing.assert_array_equal(again[[0, 2]], first[[1, 0]])
    again[:] = -1  # the caller's copy: the remembered vectors are untouched
    np.testing.assert_array_equal(cache.encode(["ab"], embed)[0], [[2, 97]])


def test_the_least_recently_used_are_forgotten_past_the_size() -> None:
    cache, embed = VectorCache(size=2, dim=2), _Counting()
    cache.encode(["a", "b"], embed)
    cache.encode(["a"], embed)  # "a" used last: "b" goes first
    cache.encode(["c"], embed)
    assert len(cache) == 2
    cache.encode(["a", "b"], embed)
    assert embed.calls[-1] == ["b"]


def test_size_zero_remembers_nothing_but_still_embeds_duplicates_once() -> None:
    cache, embed = VectorCache(size=0, dim=2), _Counting()
    cache.encode(["a", "a"], embed)
    cache.encode(["a"], embed)
    assert embed.calls == [["a"], ["a"]] and len(cache) == 0
