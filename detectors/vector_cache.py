"""The embedders' memory of texts they embedded lately, so a text met again is neither
tokenized nor embedded again: a retry, a shared system prompt, or a response that the
toxicity scorer reads after drift embedded it in the same batch.

Keyed by a 16-byte digest of the text, so the memory is bounded by the entry count whatever
the texts' length; least recently used entries go first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np


class VectorCache:
    """Vectors of up to `size` distinct texts; identical texts of one call are embedded once."""

    def __init__(self, size: int, dim: int) -> None:
        self.size = size
        self.dim = dim
        self._vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def encode(self, texts: Sequence[str], embed: Callable[[list[str]], np.ndarray]
               ) -> tuple[np.ndarray, int]:
        """One float32 row per text, `embed` called once on the texts not remembered;
        and how many texts were served without embedding them."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        hits = 0
        todo: dict[bytes, list[int]] = {}
        for i, text in enumerate(texts):
            key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            hit = self._vectors.get(key)
            if hit is not None:
                self._vectors.move_to_end(key)
                out[i] = hit
                hits += 1
            else:
                todo.setdefault(key, []).append(i)
        if todo:
            keys = list(todo)
            vectors = embed([texts[todo[k][0]] for k in keys])
            for key, vector in zip(keys, vectors, strict=True):
                out[todo[key]] = vector
                self._vectors[key] = vector
            hits += sum(len(v) - 1 for v in todo.values())
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)
        return out, hits

    def __len__(self) -> int:
        return len(self._vectors)
