"""Per-record operational features as arrays: latency, tokens, cost, lengths, error class.

Inputs are plain columns (detectors know nothing of Kafka or the wire format);
a missing number is NaN so it is skipped by the metrics, never counted as zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

OK = "ok"
ERROR = "error"
_OK_STATUSES = frozenset({"ok", "success", "succeeded", "200", "stop", "completed"})


def as_array(values: Sequence[float | int | None]) -> np.ndarray:
    """Float64 array with NaN where a value is missing."""
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def text_lengths(texts: Sequence[str | None]) -> np.ndarray:
    return np.array([np.nan if t is None else len(t) for t in texts], dtype=np.float64)


def status_class(status: str | None, error_type: str | None) -> str:
    """ok or error: a record is an error when its status says so or it names an error type."""
    if error_type:
        return ERROR
    if status is None:
        return OK
    return OK if status.strip().lower() in _OK_STATUSES else ERROR


@dataclass(frozen=True)
class OperationalFeatures:
    latency_seconds: np.ndarray
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    cost_usd: np.ndarray
    prompt_chars: np.ndarray
    response_chars: np.ndarray
    status: list[str]

    @classmethod
    def from_columns(
        cls,
        latency_ms: Sequence[float | None],
        prompt_tokens: Sequence[int | None],
        completion_tokens: Sequence[int | None],
        cost_usd: Sequence[float | None],
        prompts: Sequence[str | None],
        responses: Sequence[str | None],
        statuses: Sequence[str | None],
        error_types: Sequence[str | None],
    ) -> OperationalFeatures:
        return cls(
            latency_seconds=as_array(latency_ms) / 1000.0,
            prompt_tokens=as_array(prompt_tokens),
            completion_tokens=as_array(completion_tokens),
            cost_usd=as_array(cost_usd),
            prompt_chars=text_lengths(prompts),
            response_chars=text_lengths(responses),
            status=[status_class(s, e) for s, e in zip(statuses, error_types, strict=True)],
        )
