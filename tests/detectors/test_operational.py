"""Which statuses count as errors."""

from __future__ import annotations

import pytest

from detectors.operational import ERROR, OK, status_class


@pytest.mark.parametrize("status", [
    None, "ok", "OK", "200", "201", "204", "stop", "STOP", "end_turn", "stop_sequence",
    "tool_calls", "tool_use", "pause_turn", "eos_token", "completed",
    # Cut at the token limit: flagged truncated, not a failed request.
    "length", "max_tokens", "MAX_TOKENS",
])
def test_a_generation_that_ended_normally_is_no_error(status: str | None) -> None:
    """A finish reason logged as the status (Anthropic's end_turn, OpenAI's tool_calls)
    counted every such record as an error, and so did an HTTP 201."""
    assert status_class(status, None) == OK


@pytest.mark.parametrize("status", [
    "error", "500", "429", "404", "timeout", "content_filter", "SAFETY", "failed", "2000", "",
])
def test_a_failure_or_an_unknown_status_is_an_error(status: str) -> None:
    assert status_class(status, None) == ERROR


def test_an_error_type_is_an_error_whatever_the_status() -> None:
    assert status_class("ok", "RateLimitError") == ERROR
    assert status_class(None, "") == OK
