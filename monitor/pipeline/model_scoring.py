"""The model scorers: embeddings, toxicity, groundedness and sanity flags for a batch (the
pipeline runs them in its model stage, `stages.ModelStage`).

Built once from the config (models load here, before the first batch) and run on the
worker thread, one batch at a time, so one thread owns the model and the GPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from consumers.processor import Cancelled
from consumers.wire import Record
from detectors import sanity
from detectors.embedder import Embedder, Embedding
from monitor.config import MODEL_SCORERS, DriftSettings, ScoringSettings
from monitor.config.acting import CanarySettings, ShadowSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchScores:
    """Per-record model outputs of one batch, aligned with its records; NaN = not scored."""

    sampled: np.ndarray  # bool: went through the models (all of them unless overloaded)
    toxicity: np.ndarray
    prompt_toxicity: np.ndarray
    groundedness: np.ndarray
    flags: dict[str, np.ndarray]  # flag name -> bool per record
    novel_numbers: list[tuple[str, ...]]
    novel_names: list[tuple[str, ...]]
    # Unit vectors of the sampled records' prompts and responses (rows follow `sampled`), for
    # the drift detectors; empty texts embed as "".
    prompt_embeddings: np.ndarray | None = None
    response_embeddings: np.ndarray | None = None
    over_budget: int = 0  # records left unscored because the batch ran out of model time


def _concat(parts: list[BatchScores]) -> BatchScores:
    """One BatchScores from those of consecutive slices of a batch."""
    if len(parts) == 1:
        return parts[0]
    names = {name for p in parts for name in p.flags}
    flags = {name: np.concatenate([p.flags.get(name, np.zeros(p.sampled.size, dtype=bool))
                                   for p in parts]) for name in sorted(names)}

    def rows(field: str) -> np.ndarray | None:
        blocks = [getattr(p, field) for p in parts if getattr(p, field) is not None]
        return np.concatenate(blocks) if blocks else None

    return BatchScores(
        np.concatenate([p.sampled for p in parts]), np.concatenate([p.toxicity for p in parts]),
        np.concatenate([p.prompt_toxicity for p in parts]),
        np.concatenate([p.groundedness for p in parts]), flags,
        [x for p in parts for x in p.novel_numbers], [x for p in parts for x in p.novel_names],
        rows("prompt_embeddings"), rows("response_embeddings"),
        sum(p.over_budget for p in parts))


def _spread(dense: BatchScores, idx: np.ndarray, n: int, over_budget: int = 0) -> BatchScores:
    """Scores of the records at `idx` (all scored) laid out over a batch of `n`."""
    def out(values: np.ndarray, fill: float | bool) -> np.ndarray:
        full = np.full(n, fill, dtype=values.dtype)
        full[idx] = values
        return full

    numbers: list[tuple[str, ...]] = [()] * n
    names: list[tuple[str, ...]] = [()] * n
    for j, i in enumerate(idx):
        numbers[i], names[i] = dense.novel_numbers[j], dense.novel_names[j]
    return BatchScores(out(dense.sampled, False), out(dense.toxicity, np.nan),
                       out(dense.prompt_toxicity, np.nan), out(dense.groundedness, np.nan),
                       {k: out(v, False) for k, v in dense.flags.items()}, numbers, names,
                       dense.prompt_embeddings, dense.response_embeddings, over_budget)


class ModelScorers:
    """The models a config asks for, loaded once, scoring each batch on the worker thread."""

    def __init__(self, scorers: Sequence[str], settings: ScoringSettings, seed: int = 0,
                 embeddings: bool = True, time_budget_s: float | None = None) -> None:
        """`embeddings`: every record's prompt and response vectors are wanted (drift, the
        canary's embedding gate). The embedding model loads only for what needs it.
        `time_budget_s`: model time per batch (the daemon's scoring.max_batch_seconds); None
        offline, where results must not depend on the machine's speed."""
        self.time_budget_s = time_budget_s
        self.enabled = set(scorers) & MODEL_SCORERS
        self.settings = settings
        self._rng = np.random.default_rng(seed)
        # What each model output is computed for: nothing is computed that nothing reads.
        self._embed_prompts = embeddings and bool(self.enabled)
        self._embed_responses = self._embed_prompts or "sanity" in self.enabled
        linear = "toxicity" in self.enabled and toxicity_is_linear(
            settings.toxicity.model, self._embed_responses)
        self.embedding_users = sorted(
            ({"drift or canary embeddings"} if embeddings and self.enabled else set())
            | (self.enabled & {"groundedness", "sanity"}) | ({"toxicity"} if linear else set()))
        # `embedder` makes the vectors drift, the canary and references compare (its name is
        # recorded with them); `transformer` scores refusals and groundedness. They are one
        # model except under the hybrid backend.
        self.embedder, self.transformer = _load_embedders(
            settings, vectors=bool(self.embedding_users),
            transformer=bool(self.enabled & {"groundedness", "sanity"}))
        self.hybrid = self.embedder is not None and self.embedder is not self.transformer
        self.toxicity = None
        if "toxicity" in self.enabled:
            if linear:
                from detectors.toxicity_linear import LinearToxicityScorer

                assert self.embedder is not None
                self.toxicity = LinearToxicityScorer(self.embedder, settings.models_dir)
            else:
                from detectors.toxicity import load_toxicity_scorer

                self.toxicity = load_toxicity_scorer(settings.toxicity.model, self.device)
        self.groundedness = None
        if "groundedness" in self.enabled:
            from detectors.groundedness import GroundednessScorer, NliSupport

            g = settings.groundedness
            assert self.transformer is not None
            nli = NliSupport(g.nli_model, self.transformer.device) if g.nli_model else None
            self.groundedness = GroundednessScorer(
                self.transformer.encode, support_threshold=g.support_threshold, nli=nli,
                nli_threshold=g.nli_threshold,
            )
        self._refusals = self._refusals_static = None
        if "sanity" in self.enabled:
            assert self.transformer is not None and self.embedder is not None
            self._refusals = self.transformer.encode(settings.sanity.refusals)
            if self.hybrid:
                self._refusals_static = self.embedder.encode(settings.sanity.refusals)

    def embedders(self) -> list[Embedding]:
        """Each loaded embedding model once: the vectors' embedder, then a separate
        transformer (hybrid)."""
        out = [self.embedder] if self.embedder is not None else []
        if self.transformer is not None and self.transformer is not self.embedder:
            out.append(self.transformer)
        return out

    def models(self) -> list[tuple[str, str, str, str, str]]:
        """(role, name, device, backend, precision) of each loaded model, for the info metric."""
        out = []
        for e in self.embedders():
            role = "embedding" if e is self.embedder else "embedding_scorers"
            out.append((role, e.name, e.device, e.backend, e.precision))
        if self.toxicity is not None:
            out.append(("toxicity", self.toxicity.name, self.device, "", ""))
        return out

    def score(self, records: Sequence[Record], fraction: float = 1.0,
              cancelled: Callable[[], bool] = lambda: False) -> BatchScores:
        """Model outputs for a uniform `fraction` of the records. The sampled records go
        through the models in slices of `slice_records`: a stop (`cancelled`) is seen between
        slices (raising Cancelled), and once `time_budget_s` is spent the
        remaining ones are left unscored (`over_budget`), so one batch can neither hold a
        shutdown nor stall progress."""
        n = len(records)
        sampled = np.ones(n, dtype=bool) if fraction >= 1.0 else self._rng.random(n) < fraction
        idx = np.flatnonzero(sampled)
        step = self.slice_records
        if idx.size <= step:
            return self._score(records, sampled)
        budget = self.time_budget_s
        started = time.monotonic()
        parts: list[BatchScores] = []
        for lo in range(0, idx.size, step):
            if cancelled():
                raise Cancelled(f"stopped with {idx.size - lo} of {n} records not model-scored")
            if budget is not None and parts and time.monotonic() - started > budget:
                return _spread(_concat(parts), idx[:lo], n, over_budget=idx.size - lo)
            picked = [records[i] for i in idx[lo:lo + step]]
            parts.append(self._score(picked, np.ones(len(picked), dtype=bool)))
        return _spread(_concat(parts), idx, n)

    @property
    def device(self) -> str:
        """Where the models run: the transformer's device (a static table is always on CPU)."""
        model = self.transformer or self.embedder
        return model.device if model is not None else "cpu"

    @property
    def slice_records(self) -> int:
        # Small slices on a CPU (about a second each); a GPU wants its large batches whole.
        return 64 if self.device == "cpu" else 1_024

    def _score(self, records: Sequence[Record], sampled: np.ndarray) -> BatchScores:
        n = len(records)
        idx = np.flatnonzero(sampled)
        picked = [records[i] for i in idx]
        responses = [r.response for r in picked]
        prompts = [r.prompt_text for r in picked]  # the whole chat: what grounds an answer
        asked = [r.user_prompt for r in picked]  # what the prompt's vector and toxicity read
        nan = np.full(n, np.nan)
        toxicity, prompt_toxicity, groundedness = nan.copy(), nan.copy(), nan.copy()
        flags: dict[str, np.ndarray] = {}
        novel_numbers: list[tuple[str, ...]] = [()] * n
        novel_names: list[tuple[str, ...]] = [()] * n

        def spread(values: np.ndarray, fill: float | bool = np.nan) -> np.ndarray:
            out = np.full(n, fill, dtype=values.dtype)
            out[idx] = values
            return out

        prompt_vectors = response_vectors = None
        if self.embedder is not None and picked and self._embed_prompts:
            # One call for both: shared cache, one sort by length, fewer padded tokens.
            both = self.embedder.encode([t or "" for t in asked] + [t or "" for t in responses])
            prompt_vectors, response_vectors = both[: len(picked)], both[len(picked):]
        elif self.embedder is not None and picked and self._embed_responses:
            response_vectors = self.embedder.encode([t or "" for t in responses])
        if self.toxicity is not None and picked:
            fields = self.settings.toxicity.fields
            if "response" in fields:
                has = ~sanity.empty(responses)
                scores = self.toxicity.score([t or "" for t in responses])
                toxicity = spread(np.where(has, scores, np.nan))
            if "prompt" in fields:
                has = ~sanity.empty(asked)
                scores = self.toxicity.score([t or "" for t in asked])
                prompt_toxicity = spread(np.where(has, scores, np.nan))
            limit = self.settings.toxicity.threshold
            flags["toxic"] = (np.nan_to_num(toxicity, nan=0) >= limit) | (
                np.nan_to_num(prompt_toxicity, nan=0) >= limit)
        if self.groundedness is not None and picked:
            result = self.groundedness.score(responses, [r.context for r in picked], prompts)
            groundedness = spread(result.groundedness)
            below = self.settings.groundedness.ungrounded_below
            flags["ungrounded"] = np.nan_to_num(groundedness, nan=1.0) < below
            for j, i in enumerate(idx):
                novel_numbers[i] = result.novel_numbers[j]
                novel_names[i] = result.novel_names[j]
            flags["novel_number"] = np.array([bool(x) for x in novel_numbers])
            flags["novel_name"] = np.array([bool(x) for x in novel_names])
        if "sanity" in self.enabled and picked:
            assert self._refusals is not None and response_vectors is not None
            present = ~sanity.empty(responses)
            s = self.settings.sanity
            flags["empty_response"] = spread(~present, False)
            flags["refusal"] = spread(self._refusal_flags(responses, response_vectors, present),
                                      False)
            tokens = np.array([r.completion_tokens for r in picked], dtype=np.float64)
            flags["truncated"] = spread(
                sanity.truncated([r.status for r in picked], tokens, s.max_completion_tokens),
                False)
            flags["charset_anomaly"] = spread(sanity.charset_anomalies(responses, prompts), False)
        return BatchScores(sampled, toxicity, prompt_toxicity, groundedness, flags,
                           novel_numbers, novel_names, prompt_vectors, response_vectors)

    def _refusal_flags(self, responses: list[str | None], vectors: np.ndarray,
                       present: np.ndarray) -> np.ndarray:
        """Refusals by the transformer's similarity. Under the hybrid backend `vectors` are the
        static table's: only responses it finds near a refusal go through the transformer."""
        s = self.settings.sanity
        assert self._refusals is not None
        if not self.hybrid:
            return sanity.refusals(vectors, self._refusals, present, s.refusal_threshold)
        assert self.transformer is not None and self._refusals_static is not None
        near = sanity.refusals(vectors, self._refusals_static, present, s.refusal_prefilter)
        out = np.zeros(len(responses), dtype=bool)
        idx = np.flatnonzero(near)
        if idx.size:
            checked = self.transformer.encode([responses[i] or "" for i in idx])
            out[idx] = sanity.refusals(checked, self._refusals, present[idx],
                                       s.refusal_threshold)
        return out


def _load_embedders(settings: ScoringSettings, vectors: bool, transformer: bool
                    ) -> tuple[Embedding | None, Embedding | None]:
    """(the vectors' embedder, the scorers' transformer) that the backend and users ask for."""
    emb = settings.embedding
    if emb.backend in ("static", "hybrid") and (vectors or transformer):
        from detectors.static_embedder import DistillSettings, StaticEmbedder

        static = StaticEmbedder(emb.model, settings.models_dir,
                                DistillSettings(emb.static_pca_dims), cache_size=emb.cache_size)
        if emb.backend == "static":
            return static, static
        scorer = None
        if transformer:  # the transformer's backend follows precision: int8 is ONNX
            scorer = Embedder(emb.model, settings.device, "auto", emb.precision,
                              emb.token_budget, emb.max_batch, emb.cache_size)
        return static, scorer
    if not (vectors or transformer):
        return None, None
    assert emb.backend in ("auto", "torch", "onnx")
    model = Embedder(emb.model, settings.device, emb.backend, emb.precision, emb.token_budget,
                     emb.max_batch, emb.cache_size)
    return model, model


def toxicity_is_linear(model: str | None, responses_embedded: bool) -> bool:
    """Whether the toxicity scorer is embedding-linear: asked for, or `auto` where every
    response is embedded anyway (drift, the canary's embedding gate, the sanity scorer)."""
    return model == "embedding-linear" or (model == "auto" and responses_embedded)


def wants_embeddings(drift: DriftSettings, canary: CanarySettings,
                     shadow: ShadowSettings | None = None) -> bool:
    """Whether every record's prompt and response embeddings are read: drift detection, the
    canary's embedding gate, or the shadow's answer cosine."""
    return drift.enabled or (canary.enabled and "embedding_drift" in (
        *canary.hard_gates, *canary.soft_gates)) or (shadow is not None and shadow.enabled)


class Overload:
    """Fraction of records to model-score, from the consumer lag: 1 until lag passes max_lag,
    then max_lag / lag (a uniform sample, so rates stay unbiased), never below min_fraction."""

    def __init__(self, max_lag: int, min_fraction: float) -> None:
        self.max_lag, self.min_fraction = max_lag, min_fraction
        self.lag = 0

    def fraction(self) -> float:
        if self.lag <= self.max_lag:
            return 1.0
        return max(self.min_fraction, self.max_lag / self.lag)
