"""Hostile messages, one kind for each way a single message once stopped the monitor, each
with what must become of it: a dead-letter reason, or scored (valid after all)."""

from __future__ import annotations

import json
from dataclasses import dataclass

SCORED = "scored"


@dataclass(frozen=True)
class Hostile:
    """A hostile message and what must become of it: a dead-letter reason, or scored."""

    kind: str
    payload: bytes
    outcome: str  # the dead-letter reason it must get, or SCORED
    request_id: str | None = None  # of a record that is scored


def _record(rid: str, **fields: object) -> bytes:
    return json.dumps({"request_id": rid, "model": "chat", "deployment": "stable",
                       "prompt": "What is the capital of France?", "response": "Paris.",
                       "latency_ms": 120, "status": "ok", **fields}).encode()


def hostile_messages(copies: int = 2, seed: int = 0) -> list[Hostile]:
    """`copies` of each small kind, one of each large one (1-1.5 MB)."""
    out = [
        Hostile("over max_message_bytes (1.5 MB)", b"{" + b" " * 1_500_000 + b"}", "oversized"),
        Hostile("1,048,402-byte non-JSON (dead letter over 1 MiB)", b"x" * 1_048_402,
                "not_json"),
    ]
    for i in range(copies):
        rid = f"hostile-{seed}-{i}"
        out += [
            Hostile("timestamp 9999-12-31T23:59:59.999999-12:00",
                    _record(f"{rid}-y10k", timestamp="9999-12-31T23:59:59.999999-12:00"),
                    "invalid_field"),
            Hostile("timestamp 9999-12-31T23:59:59Z",
                    _record(f"{rid}-y9999", timestamp="9999-12-31T23:59:59Z"), "invalid_field"),
            Hostile("epoch timestamp 0 (1970)", _record(f"{rid}-epoch", timestamp=0),
                    "invalid_field"),
            Hostile("lone surrogate escape", _record(f"{rid}-surrogate").replace(
                b"Paris.", b"Par\\ud800is."), "not_json"),
            Hostile("10,000-deep nesting in an unknown field",
                    _record(f"{rid}-deep", extra=0).replace(
                        b'"extra": 0', b'"extra": ' + b"[" * 10_000 + b"]" * 10_000), "too_deep"),
            Hostile("fractional token count", _record(f"{rid}-frac", prompt_tokens=1000.5),
                    "invalid_field"),
            Hostile("integral float token count (valid)",
                    _record(f"{rid}-float", prompt_tokens=1000.0, completion_tokens=3.0),
                    SCORED, f"{rid}-float"),
        ]
    return out
