"""Settings of state checkpoints: where, and how often."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from consumers.settings import SECTION


class CheckpointSettings(BaseModel):
    """Whether state checkpoints are written, where, and how often."""

    model_config = SECTION

    enabled: bool = True
    path: Path = Path("state/checkpoint.bin")
    interval_seconds: float = Field(default=30.0, gt=0, le=86_400)
