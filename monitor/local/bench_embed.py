"""`driftwatch bench embed`: the shared embedder alone (`Embedder.encode`: tokenizing by cached
chunks, batches cut by a padded-token budget, fp16 and attention without cuDNN's per-shape
plans on a GPU) next to naive `SentenceTransformer.encode` of the same texts, on this
machine's device, in the same run.

Each round embeds texts no earlier round met (the bench's records never repeat a text, so no
cache serves them), in calls of `batch` texts, as the daemon's pipeline batches call it; the
two paths take turns, the order reversed every other round, so a host whose speed drifts
slows both alike. Both models load before the clock and warm up on texts of their own.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from monitor.local import traffic
from monitor.local.bench import naive_model, texts_of
from monitor.local.figures import summary


def bench_embed(records: int, batch: int, rounds: int, model: str | None = None) -> int:
    """Texts/s of driftwatch's embedder and of naive encode, median (min-max) of `rounds`."""
    from detectors.embedder import Embedder, pick_device

    device = pick_device("auto")
    ours = Embedder(model, device=device)
    naive = naive_model(device, model)
    pool = [traffic.unrepeated(r, i) for i, r in enumerate(traffic.wire_records(
        records * (rounds + 1), seed=31, start_ms=traffic.FIXED_START_MS))]
    rounds_texts = [texts_of(pool[i * records:(i + 1) * records]) for i in range(rounds + 1)]
    warm = rounds_texts.pop()  # a round's worth each, untimed: CUDA's and the kernels' set-up
    paths: dict[str, Callable[[list[str]], np.ndarray]] = {
        "naive": lambda texts: naive.encode(texts, normalize_embeddings=True),
        "driftwatch": lambda texts: np.concatenate(
            [ours.encode(texts[at:at + batch]) for at in range(0, len(texts), batch)]),
    }
    for embed in paths.values():
        embed(warm)
    rates: dict[str, list[float]] = {name: [] for name in paths}
    vectors: dict[str, np.ndarray] = {}
    for i, texts in enumerate(rounds_texts):
        for name in (list(paths) if i % 2 else list(paths)[::-1]):
            started = time.perf_counter()
            vectors[name] = np.asarray(paths[name](texts), dtype=np.float32)
            rates[name].append(len(texts) / (time.perf_counter() - started))
    # The same vectors: a faster embedder that embedded something else would be no result.
    cosine = (vectors["naive"] * vectors["driftwatch"]).sum(axis=1)
    print(f"bench embed: {2 * records:,} new HaluEval texts a round (prompts and responses), "
          f"{rounds} rounds, on {device}; driftwatch in calls of {batch:,} texts "
          f"({ours.backend} {ours.precision}); median (min-max)")
    print(f"{'path':<52}{'texts/s':>26}")
    print(f"{'naive SentenceTransformer.encode':<52}{summary(rates['naive']):>26}")
    print(f"{'driftwatch Embedder.encode':<52}{summary(rates['driftwatch']):>26}")
    pairs = [d / n for d, n in zip(rates["driftwatch"], rates["naive"], strict=True)]
    print(f"ratio driftwatch / naive: "
          f"{statistics.median(rates['driftwatch']) / statistics.median(rates['naive']):.2f}; "
          f"per pair of rounds {summary(pairs, 2)}")
    print(f"cosine of the two paths' vectors (last round): min {cosine.min():.5f}, "
          f"median {np.median(cosine):.5f}")
    return 0
