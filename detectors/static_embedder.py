"""A static embedding table distilled here from the configured sentence-transformer (Model2Vec):
every vocabulary token goes through the model once, the rows are reduced by PCA and
reweighted, and a text's embedding is the mean of its tokens' rows. Encoding needs no torch
and costs about a tenth of a millisecond per long text on one CPU core once its words have been
met (detectors/chunk_tokens.py).

The table is built once per source model and kept under a folder named by its fingerprint
(the source model's files, the model2vec version and the distillation settings), so a changed
source or setting builds a new table instead of reusing a stale one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectors.chunk_tokens import ChunkTokenizer, flatten, supports, unflatten
from detectors.embedder import (
    SETTING,
    EmbedderStats,
    ModelNotFound,
    embedding_model_name,
    resolve_model_path,
)
from detectors.vector_cache import VectorCache

log = logging.getLogger(__name__)

FORMAT = 1  # of the folder layout and fingerprint recipe; part of the fingerprint


@dataclass(frozen=True)
class DistillSettings:
    """What a table is distilled with: both enter its fingerprint."""

    pca_dims: int = 256
    sif_coefficient: float = 1e-4


def source_fingerprint(path: str | Path) -> str:
    """A digest of every file of a model folder (names, sizes, contents)."""
    root = Path(path)
    digest = hashlib.blake2b(digest_size=16)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue  # .gitattributes, .cache: not part of the model
        digest.update(f"{rel}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def table_fingerprint(source: str, settings: DistillSettings) -> str:
    """The fingerprint a table is stored and checked under."""
    from importlib.metadata import version

    recipe = {"format": FORMAT, "source": source, "model2vec": version("model2vec"),
              "pca_dims": settings.pca_dims, "sif_coefficient": settings.sif_coefficient}
    return hashlib.blake2b(json.dumps(recipe, sort_keys=True).encode(),
                           digest_size=8).hexdigest()


@dataclass(frozen=True)
class StaticTable:
    """Where a distilled table lies, and what it was built from."""

    path: Path
    fingerprint: str
    source: str  # the source model's name (as configured)
    built: bool  # distilled by this call (False: an existing table was reused)


def ensure_table(model: str | None, cache_dir: str | Path,
                 settings: DistillSettings = DistillSettings()) -> StaticTable:
    """The static table of `model` under `cache_dir`: reused while its fingerprint holds,
    distilled (minutes of CPU for a large vocabulary, no network) when it does not."""
    source_path = resolve_model_path(model)  # ModelNotFound: nothing to distill from
    name = embedding_model_name(model)
    fingerprint = table_fingerprint(source_fingerprint(source_path), settings)
    folder = Path(cache_dir).expanduser() / f"static-{fingerprint}"
    if (folder / "driftwatch.json").is_file():
        return StaticTable(folder, fingerprint, name, built=False)
    stale = sorted(p.name for p in folder.parent.glob("static-*") if p != folder) \
        if folder.parent.is_dir() else []
    log.info("distilling a static embedding table from %s (fingerprint %s%s); this runs once",
             name, fingerprint, f"; not reusing {', '.join(stale)}: other source or settings"
             if stale else "")
    started = time.process_time()
    try:
        from model2vec.distill import distill
    except ImportError as e:  # the distill extra pulls torch and transformers
        raise ModelNotFound(
            f"{SETTING}: the static backend distills its table with model2vec's distill extra, "
            f"which is not installed ({e}); pip install 'model2vec[distill]'"
        ) from e
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    static = distill(model_name=source_path, pca_dims=settings.pca_dims,
                     sif_coefficient=settings.sif_coefficient, device="cpu")
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed: a reader never sees half a table, two builders never clash.
    staging = Path(tempfile.mkdtemp(prefix=".static-", dir=folder.parent))
    static.save_pretrained(str(staging))
    meta = {"fingerprint": fingerprint, "source": name, "source_path": str(source_path),
            "pca_dims": settings.pca_dims, "sif_coefficient": settings.sif_coefficient,
            "cpu_seconds": round(time.process_time() - started, 1)}
    (staging / "driftwatch.json").write_text(json.dumps(meta, indent=2))
    try:
        staging.rename(folder)
    except OSError:  # another process built it first
        shutil.rmtree(staging, ignore_errors=True)
    log.info("static table %s built in %.0f s of CPU", fingerprint, meta["cpu_seconds"])
    return StaticTable(folder, fingerprint, name, built=True)


def vectors_name(model: str | None, backend: str, pca_dims: int = 256) -> str:
    """The name the vectors of a configured embedding go by, without loading or distilling
    anything (the decide stage, which receives vectors, checks its checkpoints against it)."""
    name = embedding_model_name(model)
    if backend not in ("static", "hybrid"):
        return name
    fingerprint = table_fingerprint(source_fingerprint(resolve_model_path(model)),
                                    DistillSettings(pca_dims))
    return _static_name(name, fingerprint)


def _static_name(source: str, fingerprint: str) -> str:
    return f"{source}+static:{fingerprint}"


@functools.cache
def _chunked_model_class() -> type:
    """model2vec's StaticModel whose tokenize reads the ids of a text's chunks from a cache
    (the same ids: see detectors/chunk_tokens.py) where its tokenizer allows, and whose
    means are one sparse product a batch (`pool`)."""
    from model2vec import StaticModel

    class ChunkedStaticModel(StaticModel):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.chunks = ChunkTokenizer(self.tokenizer) if supports(self.tokenizer) else None
            # model2vec keeps the distilled table in float16; the product reads it in float32
            # (30 MB for the default model's 30k x 256), where numpy's float16 is slow.
            self.table32 = np.asarray(self.embedding, dtype=np.float32)

        def _encode_batch(self, sentences: Sequence[str], normalize: bool) -> np.ndarray:
            flat, lengths = self.tokenize_flat(sentences)
            out = pool(flat, lengths, self.table32, self.token_mapping, self.weights)
            if normalize:  # as model2vec's
                out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-32
            return out

        def tokenize(self, sentences: Sequence[str]) -> list[list[int]]:
            return unflatten(*self.tokenize_flat(sentences))

        def tokenize_flat(self, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
            """`tokenize`'s rows one after another, and how many ids each has."""
            if self.chunks is None:
                return flatten(super().tokenize(sentences))
            flat, lengths = self.chunks.encode_flat(sentences)
            if self.unk_token_id is None:
                return flat, lengths
            unknown = flat == self.unk_token_id  # dropped, as model2vec drops them
            if not unknown.any():
                return flat, lengths
            text = np.repeat(np.arange(len(lengths)), lengths)
            return flat[~unknown], lengths - np.bincount(text[unknown], minlength=len(lengths))

    return ChunkedStaticModel


def pool(flat: np.ndarray, lengths: np.ndarray, table: np.ndarray,
         token_mapping: np.ndarray | None = None,
         weights: np.ndarray | None = None) -> np.ndarray:
    """Each text's mean of its tokens' rows (weighted and remapped as model2vec's
    `_encode_batch` does; a text without tokens: a zero row), its ids given one after another
    in `flat`, `lengths[i]` of them for text i, as one sparse (texts x vocabulary) by dense
    product. model2vec's own loop groups texts by length and averages a gathered float16 block
    per group: five times the time of this on HaluEval texts (about 100 tokens each) in
    batches of 40, the cache's misses per pipeline batch."""
    from scipy import sparse

    rows = flat if token_mapping is None else np.asarray(token_mapping)[flat]
    counts = np.ones(len(flat), np.float32) if weights is None else \
        np.asarray(weights, dtype=np.float32)[flat]
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    # Repeated tokens are repeated entries of a row: the product sums them, as the mean does.
    tokens = sparse.csr_matrix((counts, rows, indptr), shape=(len(lengths), len(table)))
    return np.asarray(tokens @ table, dtype=np.float32) \
        / np.maximum(lengths, 1).astype(np.float32)[:, None]


class StaticEmbedder:
    """Unit-norm float32 vectors from a distilled static table: the Embedder's interface
    (encode, name, dim, device, stats) without a transformer."""

    backend = "static"
    precision = "fp32"
    device = "cpu"

    def __init__(self, model: str | None = None, cache_dir: str | Path = "state/models",
                 settings: DistillSettings = DistillSettings(), max_length: int = 512,
                 cache_size: int = 50_000) -> None:
        self.table = ensure_table(model, cache_dir, settings)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self._model = _chunked_model_class().from_pretrained(self.table.path,
                                                             force_download=False)
        self.max_length = max_length
        # The fingerprint is in the name: references and checkpoints record it, so vectors of
        # one table are never compared with another's (or with the transformer's).
        self.name = _static_name(self.table.source, self.table.fingerprint)
        self.dim = int(self._model.dim)
        self._lock = threading.Lock()
        # Tokenizing is most of a static embedding's cost: a text met again is not redone.
        self._cache = VectorCache(cache_size, self.dim)
        self.stats = EmbedderStats()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 rows, one per text (an empty text: a zero row); identical
        texts are embedded once."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        with self._lock:
            out, hits = self._cache.encode(texts, self._embed)
            self.stats.cache_hits += hits
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        started = time.perf_counter()
        vectors = self._model.encode(texts, max_length=self.max_length,
                                     use_multiprocessing=False, normalize=False)
        out = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, 1e-12)
        self.stats.embedded += len(texts)
        self.stats.batches.append(len(texts))
        self.stats.seconds += time.perf_counter() - started
        return out
