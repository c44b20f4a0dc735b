"""Per-record operational features as arrays: latency, tokens, cost, lengths, error class.

Inputs are plain rows (detectors know nothing of Kafka or the wire format); a missing
number becomes NaN (numpy maps None to NaN) so the metrics skip it, never count it as zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detectors.sanity import TRUNCATION_STATUSES

OK = "ok"
ERROR = "error"
# A status may be a word, an HTTP code or the API's finish reason: a generation that ended
# normally (OpenAI's stop, tool_calls; Anthropic's and Converse's end_turn, stop_sequence,
# tool_use, pause_turn; Cohere's complete; a text-generation server's eos_token) or at its
# token limit (length, max_tokens: flagged `truncated`, not failed) is no error. Anything
# else counts as one.
_OK_STATUSES = frozenset({
    "ok", "success", "succeeded", "completed", "complete", "stop", "end_turn",
    "stop_sequence", "tool_calls", "tool_use", "tool_call", "function_call", "pause_turn",
    "eos", "eos_token",
}) | TRUNCATION_STATUSES


def status_class(status: str | None, error_type: str | None) -> str:
    """ok or error: a record is an error when its status says so or it names an error type."""
    if error_type:
        return ERROR
    if status is None:
        return OK
    word = status.strip().lower()
    if word in _OK_STATUSES or (len(word) == 3 and word[0] == "2" and word.isdigit()):
        return OK
    return ERROR


# One row a record: latency_ms, prompt_tokens, completion_tokens, cost_usd, prompt and
# response length in characters; None where the record does not say.
Row = tuple[float | None, int | None, int | None, float | None, int | None, int | None]


@dataclass(frozen=True)
class OperationalFeatures:
    """A batch's latency, tokens, cost and lengths as arrays, NaN where missing."""

    latency_seconds: np.ndarray
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    cost_usd: np.ndarray
    prompt_chars: np.ndarray
    response_chars: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[Row]) -> OperationalFeatures:
        """Columns from per-record rows in one numpy conversion (the batch hot path)."""
        table = np.array(rows, dtype=np.float64).reshape(len(rows), 6)
        return cls(
            latency_seconds=table[:, 0] / 1000.0,
            prompt_tokens=table[:, 1],
            completion_tokens=table[:, 2],
            cost_usd=table[:, 3],
            prompt_chars=table[:, 4],
            response_chars=table[:, 5],
        )
