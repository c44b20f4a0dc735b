"""Bytes from Kafka to a validated Record, or a dead-letter reason; never an exception.

Every rejection names one of REASONS, which becomes the `reason` header on the
dead-letter topic and the `reason` label of driftwatch_dead_letter_total.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from consumers.wire import Record

REASONS: tuple[str, ...] = (
    "empty",
    "oversized",
    "not_utf8",
    "not_json",
    "not_object",
    "missing_request_id",
    "invalid_field",
    "unmatched_request",
    "unmatched_response",
    "processing_error",
)
_DETAIL_LIMIT = 300


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str


class Decoder:
    """Decodes one message value at a time with a reusable msgspec decoder (the hot path)."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._json = msgspec.json.Decoder(Record)

    def decode(self, value: bytes | None) -> Record | Rejection:
        if not value or value.isspace():
            return Rejection("empty", "message value is empty, whitespace or null")
        if len(value) > self.max_message_bytes:
            return Rejection(
                "oversized", f"{len(value)} bytes > max_message_bytes={self.max_message_bytes}"
            )
        # msgspec only checks UTF-8 inside fields it reads; unknown fields must be valid too.
        # ASCII is valid UTF-8 and checking it is ~10x cheaper than decoding a copy.
        if not value.isascii():
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as exc:
                return Rejection("not_utf8", str(exc)[:_DETAIL_LIMIT])
        try:
            return self._json.decode(value)
        except msgspec.ValidationError as exc:
            return _classify(str(exc))
        except msgspec.DecodeError as exc:
            return Rejection("not_json", str(exc)[:_DETAIL_LIMIT])
        except (RecursionError, ValueError) as exc:  # pathological nesting and the like
            return Rejection("not_json", f"{type(exc).__name__}: {exc}"[:_DETAIL_LIMIT])


def _classify(message: str) -> Rejection:
    detail = message[:_DETAIL_LIMIT]
    # msgspec names the path of a nested error ("- at `$.prompt[0]`"); a top-level one has none.
    top_level = " - at `$" not in message
    if top_level and message.startswith("Expected `object`"):
        return Rejection("not_object", detail)
    if message == "Object missing required field `request_id`" or message.endswith(
        " - at `$.request_id`"
    ):
        return Rejection("missing_request_id", detail)
    return Rejection("invalid_field", detail)
