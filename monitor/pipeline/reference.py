"""Versioned reference snapshots on disk: what drift is measured against.

Each save writes a new version directory atomically (write aside, then rename), so a
crash never leaves a half snapshot and a reference is never replaced silently: loading
takes the newest version unless one is pinned.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from monitor.config.names import NAME

FORMAT = 1
_NAME = re.compile(NAME)
_VERSION = re.compile(r"^v(\d{4,})$")


class ReferenceStoreError(RuntimeError):
    """A snapshot that cannot be used; the message says which and what to do."""


@dataclass(frozen=True)
class ReferenceMeta:
    """The manifest of one reference snapshot version: origin, size, model and format."""

    name: str
    version: int
    created_at: str
    source: str  # e.g. "file:traffic.jsonl", "warmup:first 1000 records"
    records: int
    embedding_model: str
    dim: int
    format: int = FORMAT


@dataclass(frozen=True)
class Reference:
    """A reference snapshot: its embeddings and feature columns, with its manifest."""

    meta: ReferenceMeta
    prompt_embeddings: np.ndarray  # (records, dim) float32, unit rows
    response_embeddings: np.ndarray
    numeric: dict[str, np.ndarray]  # feature -> float64 per record (NaN = missing)
    categorical: dict[str, np.ndarray]  # feature -> str per record


class ReferenceStore:
    """A folder of versioned reference snapshots, each saved atomically and never replaced."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def versions(self, name: str) -> list[int]:
        folder = self.root / checked_name(name)
        if not folder.is_dir():
            return []
        found = (_VERSION.match(p.name) for p in folder.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def save(
        self,
        name: str,
        prompt_embeddings: np.ndarray,
        response_embeddings: np.ndarray,
        numeric: Mapping[str, np.ndarray],
        categorical: Mapping[str, Sequence[str]],
        source: str,
        embedding_model: str,
    ) -> ReferenceMeta:
        n = len(prompt_embeddings)
        lengths = {len(response_embeddings), *(len(v) for v in numeric.values()),
                   *(len(v) for v in categorical.values())}
        if lengths - {n}:
            raise ValueError(f"reference columns differ in length: {sorted(lengths | {n})}")
        folder = self.root / checked_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        version = (self.versions(name) or [0])[-1] + 1
        meta = ReferenceMeta(name, version, datetime.now(UTC).isoformat(timespec="seconds"),
                             source, n, embedding_model, int(prompt_embeddings.shape[1]))
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
        try:
            arrays = {
                "prompt_embeddings": np.asarray(prompt_embeddings, dtype=np.float32),
                "response_embeddings": np.asarray(response_embeddings, dtype=np.float32),
                **{f"numeric.{k}": np.asarray(v, dtype=np.float64) for k, v in numeric.items()},
                **{f"categorical.{k}": np.asarray(list(v), dtype=str)
                   for k, v in categorical.items()},
            }
            with open(staging / "arrays.npz", "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            (staging / "manifest.json").write_text(json.dumps(asdict(meta), indent=2))
            staging.chmod(0o755)  # mkdtemp makes it private; a snapshot is for other readers too
            os.rename(staging, folder / f"v{version:04d}")  # atomic: all or nothing
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return meta

    def load(self, name: str, version: int | None = None,
             embedding_model: str = "") -> Reference:
        """The pinned version, or the newest; a missing or damaged one is a ReferenceStoreError,
        and so is one embedded by another model than `embedding_model` (when given): vectors
        of two embedders are never compared."""
        versions = self.versions(name)
        if not versions:
            raise ReferenceStoreError(
                f"no reference snapshot named {name!r} under {self.root}; build one with "
                f"`driftwatch reference build --name {name} --input traffic.jsonl`"
            )
        chosen = versions[-1] if version is None else version
        if chosen not in versions:
            raise ReferenceStoreError(f"reference {name!r} has no version {chosen}; "
                                 f"available: {versions}")
        folder = self.root / name / f"v{chosen:04d}"
        try:
            meta = ReferenceMeta(**json.loads((folder / "manifest.json").read_text()))
            with np.load(folder / "arrays.npz", allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ReferenceStoreError(f"reference snapshot {folder} is unreadable ({exc}); pin "
                                 f"another version or build a new one") from exc
        if meta.format != FORMAT:
            raise ReferenceStoreError(f"reference snapshot {folder} has format {meta.format}, this "
                                 f"driftwatch reads format {FORMAT}; rebuild it")
        if embedding_model and meta.embedding_model != embedding_model:
            raise ReferenceStoreError(
                f"reference snapshot {folder} was embedded by {meta.embedding_model!r}, and "
                f"this daemon embeds with {embedding_model!r} (scoring.embedding); its vectors "
                f"cannot be compared: rebuild the reference with this embedder "
                f"(`driftwatch reference build`) or configure the one it was built with")
        return Reference(
            meta,
            arrays.pop("prompt_embeddings"),
            arrays.pop("response_embeddings"),
            {k.removeprefix("numeric."): v for k, v in arrays.items()
             if k.startswith("numeric.")},
            {k.removeprefix("categorical."): v for k, v in arrays.items()
             if k.startswith("categorical.")},
        )


def checked_name(name: str) -> str:
    """`name` when it is a reference name (one folder of the store), else a ValueError."""
    if not _NAME.match(name):
        raise ValueError(f"reference name {name!r}: use letters, digits, '_', '.', '-' "
                         "(at most 64, not starting with a dot)")
    return name
