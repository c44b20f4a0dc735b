"""Settings of the drift detectors: reference, embedding MMD, feature drift."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from consumers.settings import SECTION


class DriftReferenceSettings(BaseModel):
    """Where the drift reference comes from: each segment's warm-up or a snapshot."""

    model_config = SECTION

    # warmup: each segment's first `warmup_records` model-scored records; snapshot: a snapshot
    # from `driftwatch reference build` (pinned `version`, or the newest).
    source: Literal["warmup", "snapshot"] = "warmup"
    warmup_records: int = Field(default=1_000, ge=50, le=1_000_000)
    store: Path = Path("state/references")
    name: str = "default"
    version: int | None = Field(default=None, ge=1)


class EmbeddingDriftSettings(BaseModel):
    """Settings of the online MMD test for embedding drift and its calibration."""

    model_config = SECTION

    # Expected records between false alarms (Cobb et al. 2022); n_bootstraps should be well
    # above it for the calibration to hold.
    ert: int = Field(default=1_000, ge=10, le=10_000_000)
    window_size: int = Field(default=100, ge=2, le=100_000)
    n_features: int = Field(default=256, ge=16, le=16_384)
    n_bootstraps: int = Field(default=5_000, ge=100, le=1_000_000)
    # Window lengths scanned, each up to window_size; unset: window_size, /4 and /10 (>= 5).
    scales: tuple[Annotated[int, Field(ge=2)], ...] | None = Field(default=None, min_length=1)
    seed: int = 0
    # Calibration takes seconds per detector (two per segment). The daemon calibrates in a
    # background thread so batches keep flowing; a segment's embedding detectors start when
    # it is done (records in between are counted and logged, not tested). `inline` blocks the
    # batch instead, as backtest always does.
    calibration: Literal["background", "inline"] = "background"

    @model_validator(mode="after")
    def _scales_fit(self) -> EmbeddingDriftSettings:
        if self.scales is not None and max(self.scales) > self.window_size:
            raise ValueError(f"scales: {list(self.scales)} has a window longer than "
                             f"window_size: {self.window_size}; allowed: 2 .. window_size")
        return self


class FeatureDriftSettings(BaseModel):
    """Settings of the windowed drift tests on scalar and categorical features."""

    model_config = SECTION

    window_size: int = Field(default=1_000, ge=20, le=10_000_000)
    fdr: float = Field(default=0.01, gt=0, lt=1)  # Benjamini-Hochberg level across features
    psi_threshold: float | None = Field(default=0.25, gt=0)


class NewErrorClassSettings(BaseModel):
    """A status or error type never seen in the segment's reference is news on its first
    occurrence: a `new_error_class` detection (rules: `detector: new_error_class`)."""

    model_config = SECTION

    enabled: bool = False
    # Classes announced per segment, after which new ones are only counted: a stream of made-up
    # statuses must not become a stream of pages.
    max_per_segment: int = Field(default=20, ge=1, le=1_000)
    example_ids: int = Field(default=5, ge=1, le=100)  # request ids of its first records


class DriftSettings(BaseModel):
    """The drift section: reference, embedding and feature tests, segments tracked."""

    model_config = SECTION

    # Needs a model scorer (embeddings); warm-up references are saved under reference.store.
    enabled: bool = True
    reference: DriftReferenceSettings = DriftReferenceSettings()
    embedding: EmbeddingDriftSettings = EmbeddingDriftSettings()
    features: FeatureDriftSettings = FeatureDriftSettings()
    new_error_classes: NewErrorClassSettings = NewErrorClassSettings()
    # Segments tracked (by the metrics labels); a new one beyond the cap is counted, not tracked.
    max_segments: int = Field(default=20, ge=1, le=10_000)
