"""`bench drift --embedders` times its embedding in rounds, each a part of every text set."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from monitor.local import bench_drift


class _Recording:
    """An embedder whose vector of a text is its length and first letter; it keeps its calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array([[len(t), ord(t[0])] for t in texts], dtype=np.float32)


def test_every_text_is_embedded_once_in_order_and_the_cost_is_a_median_and_range() -> None:
    sets = ([f"qa-{i}" for i in range(10)], [f"turn-{i}" for i in range(7)],
            ["right"] * 5)
    embedder = _Recording()
    vectors, cost = bench_drift._embedded(embedder, sets)  # type: ignore[arg-type]

    assert [v.tolist() for v in vectors] == [
        [[len(t), ord(t[0])] for t in texts] for texts in sets]
    # One untimed first call, then 3 rounds of one call per set, each a third of that set.
    timed = embedder.calls[1:]
    assert len(timed) == 3 * len(sets)
    assert [len(c) for c in timed[:3]] == [3, 2, 1]
    assert sorted(t for c in timed for t in c) == sorted(t for texts in sets for t in texts)
    assert not set(embedder.calls[0]) & {t for texts in sets for t in texts}
    median, low, high = map(float, re.fullmatch(r"([\d,.]+) \(([\d,.]+)-([\d,.]+)\)",
                                                cost.replace(",", "")).groups())
    assert low <= median <= high
