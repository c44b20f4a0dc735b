"""Unit and property tests for consumers.decode: bytes in, a Record or a dead-letter reason out,
never an exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.api_bodies import MAX_TOKENS
from consumers.decode import REASONS, Decoder, EventTimeBounds, Rejection
from consumers.wire import Record
from detectors.operational import status_class
from monitor.local import traffic

MAX_BYTES = 1_000
NUMERIC_FIELDS = ("latency_ms", "prompt_tokens", "completion_tokens", "cost_usd")
WIRE_FIELDS = (
    "request_id", "timestamp", "model", "deployment", "prompt", "response", "context",
    "latency_ms", "prompt_tokens", "completion_tokens", "cost_usd", "status",
)
PROPERTY = settings(max_examples=300, deadline=None)
# Real generated traffic (HaluEval text), the seeds of the mutation property.
_WIRE = [traffic.encode(r) for r in traffic.wire_records(50, seed=0,
                                                         start_ms=traffic.FIXED_START_MS)]


@pytest.fixture(scope="module")
def decoder() -> Decoder:
    return Decoder(max_message_bytes=MAX_BYTES)


def _record(result: Record | Rejection) -> Record:
    assert isinstance(result, Record), result
    return result


def _encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


# -- one test per reason -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"{" + b" " * MAX_BYTES + b"}", "oversized", id="oversized"),
        pytest.param(b'{"request_id":"r1","response":"caf\xe9"}', "not_utf8", id="not_utf8"),
        pytest.param(b'{"request_id":"r1","model":', "not_json", id="not_json"),
        pytest.param(b'[{"request_id":"r1"}]', "not_object", id="not_object"),
        pytest.param(b'{"model":"m"}', "missing_request_id", id="missing_request_id"),
        pytest.param(b'{"request_id":"r1","latency_ms":"fast"}', "invalid_field",
                     id="invalid_field"),
    ],
)
def test_each_bad_payload_is_rejected_with_its_reason_and_a_detail(
    decoder: Decoder, payload: bytes, reason: str
) -> None:
    result = decoder.decode(payload)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.detail.strip()
    assert reason in REASONS


def test_null_value_is_empty(decoder: Decoder) -> None:
    result = decoder.decode(None)
    assert isinstance(result, Rejection) and result.reason == "empty"


def test_oversized_detail_names_size_and_limit(decoder: Decoder) -> None:
    result = decoder.decode(b"x" * (MAX_BYTES + 1))
    assert isinstance(result, Rejection) and result.reason == "oversized"
    assert str(MAX_BYTES + 1) in result.detail and f"max_message_bytes={MAX_BYTES}" in result.detail


def test_message_of_exactly_max_bytes_is_not_oversized(decoder: Decoder) -> None:
    payload = b'{"request_id":"r1"' + b" " * (MAX_BYTES - 19) + b"}"
    assert len(payload) == MAX_BYTES
    assert _record(decoder.decode(payload)).request_id == "r1"


LABEL_FIELDS = ["request_id", "model", "model_version", "deployment", "route", "status",
                "error_type"]


@pytest.mark.parametrize("field", LABEL_FIELDS)
def test_ids_and_labels_past_the_limit_are_invalid_fields_that_name_it(field: str) -> None:
    """Counted in characters, not bytes: the limit holds a label in any script."""
    from consumers.wire import MAX_FIELD_CHARS

    decoder = Decoder(max_message_bytes=100_000)

    at_limit = {"request_id": "r1", field: "é" * MAX_FIELD_CHARS}
    assert getattr(_record(decoder.decode(_encode(at_limit))), field) == "é" * MAX_FIELD_CHARS
    result = decoder.decode(_encode({**at_limit, field: "é" * (MAX_FIELD_CHARS + 1)}))
    assert isinstance(result, Rejection)
    assert result.reason == "invalid_field"  # a request id too long is there, not missing
    assert result.detail == f"Expected `str` of length <= {MAX_FIELD_CHARS} - at `$.{field}`"


@pytest.mark.parametrize("field", LABEL_FIELDS)
@pytest.mark.parametrize("control", ["\n", "\r", "\x1b", "\x00", "\x7f", "\x9b"])
def test_a_control_character_in_an_id_or_label_is_an_invalid_field_that_names_it(
        field: str, control: str) -> None:
    """Logged and printed (decisions, `driftwatch events`), a line break in a model name forged
    log lines and an escape sequence (ESC or the C1 CSI, U+009B) rewrote the terminal."""
    decoder = Decoder(max_message_bytes=100_000)
    result = decoder.decode(_encode({"request_id": "r1", field: f"gpt{control}[2J"}))
    assert isinstance(result, Rejection) and result.reason == "invalid_field"
    assert result.detail == (f"control character {control!r} at character 3: ids and labels "
                             f"are printed in logs and events - at `$.{field}`")


def test_printable_ids_and_labels_in_any_script_and_with_any_space_are_kept() -> None:
    decoder = Decoder(max_message_bytes=100_000)
    labels = {"request_id": "r-\u00e9\u4e2d", "model": "llama\u00a03", "model_version": "v 2",
              "deployment": "blue", "route": "/chat\u3000ja", "status": "ok",
              "error_type": "rate\u2009limit"}
    record = _record(decoder.decode(_encode(labels)))
    assert {name: getattr(record, name) for name in labels} == labels


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"request_id":""}', "missing_request_id"),
        (b'{"request_id":null}', "missing_request_id"),
        (b'{"request_id":true}', "invalid_field"),  # there, of another type: not missing
        (b'{"request_id":4.5}', "invalid_field"),
        (b'{"request_id":123456789012345678901}', "invalid_field"),
        (b"42", "not_object"),
        (b'"r1"', "not_object"),
        (b"null", "not_object"),
        (b'{"request_id":"r1","deployment":["stable"]}', "invalid_field"),
        (b'{"request_id":"r1","completion_tokens":-3}', "invalid_field"),
        (b'{"request_id":"r1","prompt_tokens":1.5}', "invalid_field"),
        (b'{"request_id":"r1","context":[1, 2]}', "invalid_field"),
        (b'{"request_id":"r1","cost_usd":true}', "invalid_field"),
        (b'{"request_id":"r1","latency_ms":1e400}', "invalid_field"),
        (b'{"request_id":"r1","prompt":[{"content":"no role"}]}', "invalid_field"),
    ],
)
def test_field_level_problems_get_the_specific_reason(
    decoder: Decoder, payload: bytes, reason: str
) -> None:
    result = decoder.decode(payload)
    assert isinstance(result, Rejection)
    assert (result.reason, bool(result.detail)) == (reason, True)


def test_invalid_field_detail_names_the_field_path(decoder: Decoder) -> None:
    result = decoder.decode(b'{"request_id":"r1","latency_ms":"fast"}')
    assert isinstance(result, Rejection)
    assert "$.latency_ms" in result.detail


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_tokens_are_not_json(decoder: Decoder, token: bytes) -> None:
    result = decoder.decode(b'{"request_id":"r1","latency_ms":' + token + b"}")
    assert isinstance(result, Rejection)
    assert result.reason == "not_json"


def test_pathological_nesting_is_too_deep_not_a_crash() -> None:
    # Deeper than the decoder's limit, inside a field the decoder skips: its own reason.
    deep = b'{"request_id":"r1","x":' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    result = Decoder(max_message_bytes=20_000).decode(deep)
    assert isinstance(result, Rejection) and result.reason == "too_deep"
    assert "unknown fields are skipped" in result.detail


def test_nesting_within_the_limit_inside_an_unknown_field_is_ignored() -> None:
    nested = b'{"request_id":"r1","x":' + b"[" * 500 + b"]" * 500 + b"}"
    assert _record(Decoder(1 << 20).decode(nested)).request_id == "r1"


@pytest.mark.parametrize(("escape", "where"), [
    (rb"ab\ud800cd", r"\ud800"), (rb"ab\udc00cd", r"\udc00"), (rb"x\ud83dy", r"\ud83d")])
def test_an_unpaired_surrogate_escape_is_named_as_such(
        decoder: Decoder, escape: bytes, where: str) -> None:
    result = decoder.decode(b'{"request_id":"r1","prompt":"' + escape + b'"}')
    assert isinstance(result, Rejection) and result.reason == "not_json"
    assert f"unpaired UTF-16 surrogate escape {where}" in result.detail
    assert "truncated" not in result.detail


def test_a_surrogate_pair_escape_is_one_character(decoder: Decoder) -> None:
    record = _record(decoder.decode(rb'{"request_id":"r1","prompt":"a\ud83d\ude00b"}'))
    assert record.prompt == "a\U0001F600b"


@pytest.mark.parametrize("field", ["prompt_tokens", "completion_tokens"])
def test_integral_float_token_counts_are_whole_numbers(decoder: Decoder, field: str) -> None:
    record = _record(decoder.decode(_encode({"request_id": "t", field: 1000.0})))
    value = getattr(record, field)
    assert value == 1000 and type(value) is int


def test_a_token_count_past_any_context_is_invalid_wherever_it_is_written(
        decoder: Decoder) -> None:
    """1e308 became a 309-digit integer (and overflowed the backtest's token sums)."""
    for record, detail in (
            ({"prompt_tokens": 1e308}, "`float` <= 1000000000.0 - at `$.prompt_tokens`"),
            ({"response": {"choices": [{"text": "x"}], "usage": {
                "prompt_tokens": 10**12, "completion_tokens": 2}}},
             "`int` <= 1000000000 - at `$.response.usage.prompt_tokens`")):
        result = decoder.decode(_encode({"request_id": "t", **record}))
        assert isinstance(result, Rejection) and result.reason == "invalid_field", result
        assert result.detail == f"Expected {detail}", result
    assert _record(decoder.decode(_encode({"request_id": "t", "prompt_tokens": 10**9})))


def test_a_byte_order_mark_before_the_json_is_ignored(decoder: Decoder) -> None:
    """A file saved by a Windows editor starts with one: `not_json` at byte 0 before."""
    bom = "\ufeff".encode()
    record = _record(decoder.decode(bom + _encode({"request_id": "t", "prompt": "é"})))
    assert (record.request_id, record.prompt) == ("t", "é")
    refused = decoder.decode(bom + b"[1]")
    assert isinstance(refused, Rejection) and refused.reason == "not_object", refused
    assert isinstance(decoder.decode(b"{}" + bom), Rejection)  # only before the JSON


def test_fractional_token_counts_are_invalid_field(decoder: Decoder) -> None:
    result = decoder.decode(_encode({"request_id": "t", "prompt_tokens": 1000.5}))
    assert isinstance(result, Rejection) and result.reason == "invalid_field"
    assert "whole number" in result.detail and "$.prompt_tokens" in result.detail


@pytest.mark.parametrize("timestamp", [
    "9999-12-31T23:59:59.999999-12:00", "9999-12-31T23:59:59Z", 1e20, 253_402_300_800_000,
    "1999-12-31T23:59:59Z", 0, 946_684_799_000])
def test_event_times_outside_the_bounds_are_invalid_field(
        decoder: Decoder, timestamp: str | float) -> None:
    result = decoder.decode(_encode({"request_id": "t", "timestamp": timestamp}))
    assert isinstance(result, Rejection) and result.reason == "invalid_field"
    assert "$.timestamp" in result.detail and "event time" in result.detail


def test_event_time_bounds_follow_the_arrival_clock() -> None:
    now = 1_800_000_000.0
    decoder = Decoder(1 << 20, EventTimeBounds(max_future_seconds=60), clock=lambda: now)
    ok = decoder.decode(_encode({"request_id": "t", "timestamp": (now + 59) * 1000}))
    late = decoder.decode(_encode({"request_id": "t", "timestamp": (now + 61) * 1000}))
    assert _record(ok).event_time == now + 59
    assert isinstance(late, Rejection) and "max_future_seconds=60" in late.detail


@pytest.mark.parametrize(("number", "unit"), [
    (1_800_000_000, "seconds"), (1_800_000_000.25, "seconds"),
    (1_800_000_000_000_000, "microseconds"), (1_800_000_000_000_000_000, "nanoseconds")])
def test_an_event_time_in_another_unit_says_which_it_looks_like(number: float, unit: str) -> None:
    """Under `validation.epoch_unit: ms` every number is epoch milliseconds; `time.time()`
    seconds (and Go's or Java's micro- and nanoseconds) are refused, with the unit they look
    like."""
    now = 1_800_000_100.0
    decoder = Decoder(1 << 20, EventTimeBounds(epoch_unit="ms"), clock=lambda: now)
    result = decoder.decode(_encode({"request_id": "t", "timestamp": number}))
    assert isinstance(result, Rejection) and result.reason == "invalid_field"
    assert (f"a number is epoch milliseconds (validation.epoch_unit: ms), and {number:.0f} "
            f"looks like epoch {unit} (2027-01-15T08:00:00Z)") in result.detail
    assert result.detail.endswith("- at `$.timestamp`")


@pytest.mark.parametrize("number", [
    1_800_000_000, 1_800_000_000.25, "1800000000.25", 1_800_000_000_250,
    1_800_000_000_250_000, "1800000000250000000", 1_800_000_000_250_000_000])
def test_an_epoch_time_is_read_in_the_unit_its_size_says(number: float | str) -> None:
    """By default (`epoch_unit: auto`) seconds (`time.time()`, LiteLLM's startTime),
    milliseconds, microseconds and nanoseconds (OpenTelemetry's, in a string as protobuf's
    JSON writes int64) are each read as the same time: no event time since 1973 has a size
    two units share."""
    now = 1_800_000_100.0
    decoder = Decoder(1 << 20, clock=lambda: now)
    record = _record(decoder.decode(_encode({"request_id": "t", "timestamp": number})))
    exact = 1_800_000_000.25 if str(number).endswith(("25", "250", "250000", "250000000")) \
        else 1_800_000_000.0
    assert record.event_time == pytest.approx(exact, abs=1e-6)
    # One unit for all: a time in another is out of range, and refused.
    for unit in ("s", "ms", "us", "ns"):
        pinned = Decoder(1 << 20, EventTimeBounds(epoch_unit=unit), clock=lambda: now)
        result = pinned.decode(_encode({"request_id": "t", "timestamp": number}))
        size = float(number)
        right = {"s": size < 1e11, "ms": 1e11 <= size < 1e14, "us": 1e14 <= size < 1e17,
                 "ns": size >= 1e17}[unit]
        assert isinstance(result, Record) is right, (unit, result)


@pytest.mark.parametrize(("timestamp", "unit"), [
    (0, "seconds"), (1e20, "nanoseconds"), (50_000_000_000_000, "milliseconds")])
def test_an_epoch_time_out_of_range_says_the_unit_it_was_read_in(timestamp: float,
                                                                 unit: str) -> None:
    result = Decoder(1 << 20).decode(_encode({"request_id": "t", "timestamp": timestamp}))
    assert isinstance(result, Rejection) and result.reason == "invalid_field"
    assert result.detail.endswith(
        f"; {timestamp:.0f} was read as epoch {unit} by its size - at `$.timestamp`")


@pytest.mark.parametrize("timestamp", [0, 1e20, "1999-12-31T23:59:59Z"])
def test_an_event_time_in_no_unit_in_range_gets_no_hint(timestamp: str | float) -> None:
    result = Decoder(1 << 20).decode(_encode({"request_id": "t", "timestamp": timestamp}))
    assert isinstance(result, Rejection) and "looks like" not in result.detail


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b'{"request_id":"r1","prompt":["hello","world"]}', id="prompt-list-of-str"),
        pytest.param(b'{"request_id":"r1","messages":[1]}', id="messages-list-of-int"),
        pytest.param(b'{"request_id":"r1","messages":[{"role":"user","content":[5]}]}',
                     id="content-part-int"),
    ],
)
def test_non_object_inside_a_chat_field_is_invalid_field(
    decoder: Decoder, payload: bytes
) -> None:
    result = decoder.decode(payload)
    assert isinstance(result, Rejection)
    assert result.reason == "invalid_field"


def test_any_deployment_label_is_valid_for_the_gates_to_name(decoder: Decoder) -> None:
    """The canary and shadow gates compare the arms their config names (canary.stable,
    canary.canary, shadow.shadow): a wire that took only stable, canary and shadow
    dead-lettered every record of a stack that says blue and green, or prod."""
    for label in ("blue", "green", "prod", "candidate", "`request_id`"):
        record = _record(decoder.decode(_encode({"request_id": "r1", "deployment": label})))
        assert record.deployment == label


# -- valid records -----------------------------------------------------------------------------

def test_chat_prompt_with_string_and_part_contents_joins_one_line_per_message(
    decoder: Decoder,
) -> None:
    payload = _encode({
        "request_id": "chat-1",
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is"},
                {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                {"type": "text", "text": "this?"},
            ]},
            {"role": "assistant", "content": None},
        ],
    })
    record = _record(decoder.decode(payload))
    assert record.prompt_text == "Be brief.\nWhat is\nthis?\n"
    assert record.messages is None


def test_messages_field_is_used_when_prompt_is_absent(decoder: Decoder) -> None:
    payload = _encode({
        "request_id": "chat-2",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
            {"role": "user", "content": "bye"},
        ],
    })
    record = _record(decoder.decode(payload))
    assert record.prompt is None
    assert record.prompt_text == "hi\nhello\nbye"


def test_the_prompt_the_models_read_is_a_chats_last_user_message(decoder: Decoder) -> None:
    """A system prompt (the same on every request, and often past the 256 tokens the
    embedder reads) and the earlier turns would stand in for what the user asked."""
    system = {"role": "system", "content": "You are a helpful assistant. " * 20}
    payload = _encode({"request_id": "c", "messages": [
        system, {"role": "user", "content": "Who wrote Dune?"},
        {"role": "assistant", "content": "Frank Herbert."},
        {"role": "user", "content": [{"type": "text", "text": "When was it published?"}]},
        {"role": "tool", "content": "1965"}]})
    record = _record(decoder.decode(payload))
    assert record.user_prompt == "When was it published?"
    assert record.prompt_text is not None and record.prompt_text.startswith("You are")
    assert record.prompt_text.endswith("When was it published?\n1965")
    human = _encode({"request_id": "h", "prompt": [{"role": "human", "content": "hi"},
                                                  {"role": "ai", "content": "hello"}]})
    assert _record(decoder.decode(human)).user_prompt == "hi"  # LangChain's roles
    # No user turn: read whole; a string prompt as it is.
    alone = _encode({"request_id": "s", "messages": [system]})
    assert _record(decoder.decode(alone)).user_prompt == system["content"]
    assert _record(decoder.decode(_encode({"request_id": "p", "prompt": "plain"}))) \
        .user_prompt == "plain"
    assert _record(decoder.decode(b'{"request_id":"n"}')).user_prompt is None


def test_an_anthropic_tool_result_is_read_as_the_chats_text_and_not_as_what_the_user_asked(
    decoder: Decoder,
) -> None:
    """Anthropic sends what a tool returned in a `user` message's tool_result block: the facts
    an agent's answer rests on (groundedness reads the chat's text), but not the user's words
    (the prompt's embedding and toxicity read those)."""
    question = {"role": "user", "content": "How many apples are left?"}
    call = {"role": "assistant", "content": [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "t1", "name": "stock", "input": {"item": "apples"}},
        {"type": "web_search_tool_result", "tool_use_id": "w1",
         "content": {"type": "web_search_tool_result_error", "error_code": "unavailable"}}]}
    result = {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": "42 apples"},
        {"type": "tool_result", "tool_use_id": "t2",
         "content": [{"type": "text", "text": "7 pears"}], "is_error": False}]}
    record = _record(decoder.decode(_encode(
        {"request_id": "a", "messages": [question, call, result]})))
    assert record.prompt_text == "How many apples are left?\nLet me look.\n42 apples\n7 pears"
    assert record.prompt_chars == len(record.prompt_text)
    assert record.user_prompt == "How many apples are left?"
    # Words beside the results are the user's own.
    follow = {"role": "user", "content": [*result["content"],
                                          {"type": "text", "text": "And pears?"}]}
    record = _record(decoder.decode(_encode(
        {"request_id": "b", "messages": [question, call, follow]})))
    assert record.user_prompt == "And pears?"
    assert record.prompt_text is not None and record.prompt_text.endswith("7 pears\nAnd pears?")
    # Tool results alone: the chat is read whole.
    record = _record(decoder.decode(_encode({"request_id": "c", "messages": [result]})))
    assert record.user_prompt == record.prompt_text == "42 apples\n7 pears"


def test_responses_api_input_items_langchain_and_gemini_messages_are_read_as_a_chat(
    decoder: Decoder,
) -> None:
    """An OpenAI Responses API input mixes messages with items that have a `type` and no
    role (a tool's call and its output, a reasoning); LangChain's dumped messages carry their
    role as `type`. Both were refused for the missing role; Gemini's messages hold `parts`."""
    items = [
        {"role": "developer", "content": "Answer from the stock tool."},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "How many apples are left?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [],
         "content": [{"type": "reasoning_text", "text": "Maybe 12 apples."}]},
        {"type": "function_call", "call_id": "c1", "name": "stock", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": '{"apples": 42}'},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "7 pears"}]},
    ]
    record = _record(decoder.decode(_encode({"request_id": "r", "messages": items})))
    assert record.prompt_text == ('Answer from the stock tool.\nHow many apples are left?'
                                  '\n\n\n{"apples": 42}\n7 pears')
    assert record.prompt_chars == len(record.prompt_text)
    assert record.user_prompt == "How many apples are left?"
    langchain = [{"type": "system", "content": "Be brief.", "additional_kwargs": {}},
                 {"type": "human", "content": "Who wrote Dune?", "id": None},
                 {"type": "ai", "content": "", "tool_calls": [{"name": "search", "args": {}}]},
                 {"type": "tool", "content": "Frank Herbert", "tool_call_id": "t1"}]
    record = _record(decoder.decode(_encode({"request_id": "l", "prompt": langchain})))
    assert record.user_prompt == "Who wrote Dune?"
    assert record.prompt_text == "Be brief.\nWho wrote Dune?\n\nFrank Herbert"
    # Gemini's contents: parts, not content (read as empty before); thoughts left out.
    gemini = [{"role": "user", "parts": [{"text": "Who wrote Dune?"}]},
              {"role": "model", "parts": [{"text": "Recall the 1965 novel.", "thought": True},
                                          {"text": "Frank Herbert."}]},
              {"role": "user", "parts": [{"text": "When?"}, {"inlineData": {"data": "AA=="}}]}]
    record = _record(decoder.decode(_encode({"request_id": "g", "messages": gemini})))
    assert record.prompt_text == "Who wrote Dune?\nFrank Herbert.\nWhen?"
    assert record.user_prompt == "When?"
    # Neither a role nor a type: refused, saying which message.
    for field in ("prompt", "messages"):
        result = decoder.decode(_encode({"request_id": "n", field: [
            {"role": "user", "content": "hi"}, {"content": "no role"}]}))
        assert isinstance(result, Rejection) and result.reason == "invalid_field"
        assert "`role`" in result.detail
        assert result.detail.endswith(f"at `$.{field}[1]`")


_FACT, _ASKED = "Premium costs 42 dollars.", "What does premium cost?"
_BOTH = f"{_FACT}\n{_ASKED}"


@pytest.mark.parametrize(
    ("body", "text", "asked"),
    [
        pytest.param({"model": "gpt-4o", "temperature": 0.2, "messages": [
            {"role": "system", "content": _FACT}, {"role": "user", "content": _ASKED}]},
            _BOTH, _ASKED, id="openai-chat"),
        pytest.param({"model": "gpt-4o", "max_tokens": 1024,
                      "system": [{"type": "text", "text": _FACT}],
                      "messages": [{"role": "user", "content": [
                          {"type": "text", "text": _ASKED}]}]},
                     _BOTH, _ASKED, id="anthropic-messages"),
        pytest.param({"model": "gpt-4o", "instructions": _FACT, "input": _ASKED},
                     _BOTH, _ASKED, id="responses-api-string-input"),
        pytest.param({"model": "gpt-4o", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "What does it cost?"}]},
            {"type": "function_call", "call_id": "c1", "name": "price", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "42 dollars"}]},
            "What does it cost?\n\n42 dollars", "What does it cost?", id="responses-api-items"),
        pytest.param({"model": "gpt-4o",
                      "contents": [{"role": "user", "parts": [{"text": _ASKED}]}],
                      "systemInstruction": {"parts": [{"text": _FACT}]},
                      "generationConfig": {"temperature": 0}},
                     _BOTH, _ASKED, id="gemini-rest"),
        pytest.param({"model": "gpt-4o", "contents": _ASKED, "system_instruction": _FACT},
                     _BOTH, _ASKED, id="gemini-sdk"),
        pytest.param({"model": "gpt-4o", "system": [{"text": _FACT}],
                      "messages": [{"role": "user", "content": [{"text": _ASKED}]}],
                      "inferenceConfig": {"maxTokens": 512}},
                     _BOTH, _ASKED, id="bedrock-converse"),
        pytest.param({"model": "gpt-4o", "prompt": _ASKED, "max_tokens": 5},
                     _ASKED, _ASKED, id="completion"),
    ],
)
def test_a_prompt_logged_as_the_request_body_is_read_as_its_chat(
    decoder: Decoder, body: dict[str, Any], text: str, asked: str
) -> None:
    """Gateways log the request body the API was sent, as they log the response it returned;
    the response side took the API's objects, and every such prompt was dead-lettered."""
    record = _record(decoder.decode(_encode({"request_id": "b", "prompt": body})))
    assert (record.prompt_text, record.user_prompt) == (text, asked)
    assert record.prompt_chars == len(text)
    assert record.model == "gpt-4o"  # the body's, where the record names none


def test_a_request_body_without_a_prompt_is_refused_and_the_records_model_wins(
    decoder: Decoder,
) -> None:
    result = decoder.decode(_encode({"request_id": "b", "prompt": {"model": "m", "n": 1}}))
    assert isinstance(result, Rejection) and result.reason == "invalid_field"
    assert "`messages`, `input`, `contents`" in result.detail
    assert result.detail.endswith("at `$.prompt`")
    record = _record(decoder.decode(_encode(
        {"request_id": "b", "model": "mine", "prompt": {"model": "m", "prompt": "p"}})))
    assert (record.model, record.prompt_text) == ("mine", "p")
    # Its messages are checked as a chat's are.
    result = decoder.decode(_encode({"request_id": "b", "prompt": {"messages": [{"x": 1}]}}))
    assert isinstance(result, Rejection) and "`role`" in result.detail


def test_a_system_field_beside_messages_is_read_before_them_and_any_other_is_ignored(
    decoder: Decoder,
) -> None:
    """Anthropic's request body keeps the system prompt beside `messages`: groundedness reads
    the prompt's whole text, so a fact given only there would make an answer look invented."""
    chat = [{"role": "user", "content": "What does premium cost?"}]
    for system, text in (("Premium costs 42 dollars.", "Premium costs 42 dollars."),
                         ([{"type": "text", "text": "Premium costs"},
                           {"type": "text", "text": "42 dollars."}],
                          "Premium costs\n42 dollars.")):
        record = _record(decoder.decode(_encode(
            {"request_id": "a", "system": system, "messages": chat})))
        assert record.prompt_text == f"{text}\nWhat does premium cost?"
        assert record.prompt_chars == len(record.prompt_text)
        assert record.user_prompt == "What does premium cost?"
    # Another producer's `system` (a host, a number) is no reason to dead-letter a record.
    for other in ({"host": "gpu-01"}, 7, [1, 2]):
        record = _record(decoder.decode(_encode(
            {"request_id": "b", "system": other, "messages": chat})))
        assert record.prompt_text == "What does premium cost?"
        assert record.prompt_chars == len(record.prompt_text)
    # Beside a string prompt it is not the prompt's.
    plain = _record(decoder.decode(_encode({"request_id": "c", "system": "s", "prompt": "p"})))
    assert plain.prompt_text == "p" and plain.prompt_chars == 1


def test_string_prompt_is_its_own_text_and_prompt_wins_over_messages(decoder: Decoder) -> None:
    payload = _encode({"request_id": "p", "prompt": "plain",
                       "messages": [{"role": "user", "content": "ignored"}]})
    assert _record(decoder.decode(payload)).prompt_text == "plain"
    assert _record(decoder.decode(b'{"request_id":"p"}')).prompt_text is None


def test_numbers_written_as_strings_are_read_as_numbers_and_an_id_as_a_number_too() -> None:
    """protobuf's JSON writes every int64 as a string, and some log shippers every field:
    those records were dead-lettered for the quotes. A string that is no number, or one that
    is no finite number, is still refused."""
    decoder = Decoder(1 << 20, clock=lambda: 1_704_067_300.0)
    record = _record(decoder.decode(_encode({
        "request_id": "r", "timestamp": "1704067200000", "latency_ms": "812.5",
        "prompt_tokens": "412", "completion_tokens": "37.0", "cost_usd": "1e-3",
        "model": "123", "deployment": "null"})))
    assert record.event_time == 1_704_067_200.0
    assert (record.latency_ms, record.cost_usd) == (812.5, 0.001)
    assert (record.prompt_tokens, record.completion_tokens) == (412, 37)
    assert type(record.completion_tokens) is int
    assert (record.model, record.deployment) == ("123", "null")  # strings stay strings
    # An id given as a number is its decimal string: halves that write it as a number and
    # as a string join.
    for rid in (42, 1234567890123456789):
        assert _record(decoder.decode(_encode({"request_id": rid}))).request_id == str(rid)
    # Epoch seconds in a string: read as seconds, by their size.
    seconds = decoder.decode(_encode({"request_id": "r", "timestamp": "1704067200"}))
    assert _record(seconds).event_time == 1_704_067_200.0
    for field, value, detail in (
        ("timestamp", "yesterday", "Invalid RFC3339 encoded datetime - at `$.timestamp`"),
        ("timestamp", "nan", "event time is not a number - at `$.timestamp`"),
        ("timestamp", "inf", "event time is not a finite number - at `$.timestamp`"),
        ("timestamp", "-Infinity", "event time is not a finite number - at `$.timestamp`"),
        ("latency_ms", "12 ms", "Expected `float | null`, got `str` - at `$.latency_ms`"),
        ("latency_ms", "inf", "Expected a finite number, got inf - at `$.latency_ms`"),
        ("cost_usd", "Infinity", "Expected a finite number, got inf - at `$.cost_usd`"),
        ("latency_ms", "nan", "Expected `float` >= 0.0 - at `$.latency_ms`"),
        ("prompt_tokens", "12.5", "Expected a whole number, got 12.5 - at `$.prompt_tokens`"),
        ("prompt_tokens", "inf", "Expected `float` <= 1000000000.0 - at `$.prompt_tokens`"),
        ("prompt_tokens", "1e308", "Expected `float` <= 1000000000.0 - at `$.prompt_tokens`"),
        ("completion_tokens", str(10**400),
         "Expected `int` <= 1000000000 - at `$.completion_tokens`"),
        ("timestamp", "1e308", "event time 1e+299 (epoch s) is 1e+299s after arrival; "
         "max_future_seconds=86400; 1e+308 was read as epoch nanoseconds by its size - at "
         "`$.timestamp`"),
    ):
        result = decoder.decode(_encode({"request_id": "r", field: value}))
        assert isinstance(result, Rejection) and result.reason == "invalid_field", value
        assert result.detail == detail


@pytest.mark.parametrize(
    ("response", "text"),
    [
        pytest.param({"role": "assistant", "content": "Paris."}, "Paris.", id="openai-message"),
        pytest.param({"id": "msg_1", "type": "message", "role": "assistant", "content": [
            {"type": "text", "text": "It is"},
            {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x"}},
            {"type": "text", "text": "Paris."}]}, "It is\nParis.", id="anthropic-blocks"),
        pytest.param({"id": "chatcmpl-1", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Paris."},
             "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "Lyon."}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2}}, "Paris.",
            id="openai-completion-first-choice"),
        pytest.param({"choices": [{"index": 0, "text": "Paris."}]}, "Paris.",
                     id="legacy-completion"),
        pytest.param([{"type": "text", "text": "It is"}, {"type": "text", "text": "Paris."}],
                     "It is\nParis.", id="content-parts-alone"),
        pytest.param({"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "weather", "arguments": "{}"}}]}, "", id="tool-calls-alone"),
        pytest.param({"choices": [{"message": {"role": "assistant", "content": None,
                                               "refusal": "I can't help with that."}}]},
                     "I can't help with that.", id="openai-refusal"),
        pytest.param({"role": "assistant", "content": [
            {"type": "refusal", "refusal": "I can't help with that."}]},
            "I can't help with that.", id="openai-refusal-part"),
        pytest.param({"id": "resp_1", "object": "response", "status": "completed", "output": [
            {"type": "reasoning", "id": "rs_1", "summary": [
                {"type": "summary_text", "text": "The user asks for a capital."}],
             "content": [{"type": "reasoning_text", "text": "France: Paris."}]},
            {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Paris.", "annotations": []}]}],
            "usage": {"input_tokens": 9, "output_tokens": 2}}, "Paris.",
            id="openai-responses-api"),
        pytest.param({"object": "response", "output": [
            {"type": "message", "role": "assistant", "content": [
                {"type": "refusal", "refusal": "I can't help with that."}]}]},
            "I can't help with that.", id="openai-responses-api-refusal"),
        pytest.param({"object": "response", "status": "incomplete", "output": [
            {"type": "reasoning", "summary": []}]}, "", id="openai-responses-api-no-message"),
        pytest.param({"output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "Capital of France."}}},
            {"text": "Paris."}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 9, "outputTokens": 2}}, "Paris.", id="bedrock-converse"),
        pytest.param({"model": "llama3.2", "created_at": "2026-12-01T00:00:00Z", "message": {
            "role": "assistant", "content": "Paris."}, "done": True, "done_reason": "stop"},
            "Paris.", id="ollama-chat"),
        pytest.param({"id": "c1", "finish_reason": "COMPLETE", "message": {
            "role": "assistant", "content": [{"type": "text", "text": "Paris."}]}}, "Paris.",
            id="cohere-v2"),
        pytest.param({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "The user asks for a capital.", "thought": True}, {"text": "Paris."}]},
            "finishReason": "STOP"}, {"content": {"parts": [{"text": "Lyon."}]}}],
            "usageMetadata": {"promptTokenCount": 9}}, "Paris.", id="gemini-first-candidate"),
        pytest.param({"candidates": [{"finishReason": "SAFETY", "safetyRatings": []}]}, "",
                     id="gemini-blocked-candidate"),
        pytest.param({"generated_text": "Paris.", "details": {"finish_reason": "eos_token"}},
                     "Paris.", id="text-generation-inference"),
        pytest.param({"model": "llama3.2", "response": "Paris.", "done": True,
                      "done_reason": "stop", "eval_count": 2}, "Paris.", id="ollama-generate"),
        pytest.param({"status": 200, "choices": [{"text": "Paris."}]}, "Paris.",
                     id="http-status-beside"),
    ],
)
def test_a_response_logged_as_the_api_object_is_read_as_its_text(
    decoder: Decoder, response: dict[str, Any] | list[dict[str, str]], text: str
) -> None:
    """Gateways often log the object the API returned; the prompt side already took chat
    messages, and a response object was dead-lettered as invalid_field."""
    record = _record(decoder.decode(_encode({"request_id": "r1", "response": response})))
    assert record.response == text
    assert type(record.response) is str
    assert record.status is None or type(record.status) is str  # 200 is read as "200"


@pytest.mark.parametrize(
    ("response", "facts"),
    [
        pytest.param({"object": "chat.completion", "model": "gpt-4o-2024-08-06", "choices": [
            {"message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}},
            ("gpt-4o-2024-08-06", 9, 2, None, "stop"), id="openai-completion"),
        pytest.param({"type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                      "content": [{"type": "text", "text": "Paris."}],
                      "usage": {"input_tokens": 9, "cache_read_input_tokens": 1000,
                                "cache_creation_input_tokens": 20, "output_tokens": 2},
                      "stop_reason": "max_tokens"},
                     ("claude-sonnet-4-5", 1029, 2, None, "max_tokens"),
                     id="anthropic-cache-counted"),
        pytest.param({"object": "response", "model": "gpt-5", "status": "incomplete",
                      "incomplete_details": {"reason": "max_output_tokens"}, "output": [
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "Paris."}]}],
            "usage": {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 4},
                      "output_tokens": 50, "output_tokens_details": {"reasoning_tokens": 48}}},
            ("gpt-5", 9, 50, None, "max_output_tokens"), id="responses-api"),
        pytest.param({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "Paris."}]}, "finishReason": "STOP"}],
            "modelVersion": "gemini-2.5-flash", "usageMetadata": {
            "promptTokenCount": 9, "candidatesTokenCount": 2, "thoughtsTokenCount": 40,
            "totalTokenCount": 51}}, ("gemini-2.5-flash", 9, 42, None, "STOP"), id="gemini"),
        pytest.param({"output": {"message": {"role": "assistant", "content": [
            {"text": "Paris."}]}}, "usage": {"inputTokens": 9, "outputTokens": 2,
                                             "totalTokens": 11}, "metrics": {"latencyMs": 412},
                      "stopReason": "end_turn"},
                     (None, 9, 2, 412.0, "end_turn"), id="bedrock-converse"),
        pytest.param({"model": "llama3.2", "message": {"role": "assistant", "content": "Paris."},
                      "done": True, "total_duration": 812_500_000, "prompt_eval_count": 9,
                      "eval_count": 2, "done_reason": "stop"},
                     ("llama3.2", 9, 2, 812.5, "stop"), id="ollama"),
        pytest.param({"message": {"role": "assistant", "content": [
            {"type": "text", "text": "Paris."}]}, "usage": {
            "billed_units": {"input_tokens": 9}, "tokens": {"input_tokens": 9,
                                                            "output_tokens": 2}},
            "finish_reason": "COMPLETE"}, (None, 9, 2, None, "COMPLETE"), id="cohere"),
    ],
)
def test_what_a_response_object_says_of_itself_fills_what_the_record_does_not_say(
    decoder: Decoder, response: dict[str, Any],
    facts: tuple[str | None, int, int, float | None, str],
) -> None:
    """A gateway that logs the bodies logs the token counts inside them: without them the
    token check, the token drift and the token panels saw nothing of its traffic."""
    record = _record(decoder.decode(_encode({"request_id": "r", "response": response})))
    assert record.response == "Paris."
    assert (record.model, record.prompt_tokens, record.completion_tokens,
            record.latency_ms, record.status) == facts
    assert status_class(record.status, None) == "ok"  # a normal end, or cut at the limit
    # The record's own fields win.
    own = _record(decoder.decode(_encode({
        "request_id": "r", "response": response, "model": "mine", "prompt_tokens": 1,
        "completion_tokens": 1, "latency_ms": 1.0, "status": "200"})))
    assert (own.model, own.prompt_tokens, own.completion_tokens, own.latency_ms,
            own.status) == ("mine", 1, 1, 1.0, "200")


@pytest.mark.parametrize(
    ("response", "error_type"),
    [
        pytest.param({"error": {"message": "You exceeded your current quota.",
                                "type": "insufficient_quota", "param": None,
                                "code": "insufficient_quota"}},
                     "insufficient_quota", id="openai"),
        pytest.param({"type": "error", "error": {"type": "overloaded_error",
                                                 "message": "Overloaded"}},
                     "overloaded_error", id="anthropic"),
        pytest.param({"error": {"code": 429, "message": "Quota exceeded.",
                                "status": "RESOURCE_EXHAUSTED"}},
                     "RESOURCE_EXHAUSTED", id="gemini"),
        pytest.param({"error": {"code": 503, "message": "Unavailable."}}, "503",
                     id="code-alone"),
        pytest.param({"error": "model 'llama9' not found"}, "api_error", id="ollama"),
    ],
)
def test_a_failed_requests_error_body_is_an_error_of_its_type(
    decoder: Decoder, response: dict[str, Any], error_type: str
) -> None:
    """A gateway logs a failed request's error body where the answer would be: those were
    dead-lettered, and the error rate never saw the failures they were."""
    record = _record(decoder.decode(_encode({"request_id": "e", "response": response})))
    assert (record.response, record.status, record.error_type) == ("", "error", error_type)
    assert status_class(record.status, record.error_type) == "error"


@pytest.mark.parametrize(
    "response",
    [
        pytest.param({"answer": "Paris."}, id="neither-shape"),
        pytest.param({"choices": []}, id="no-choice"),
        pytest.param({"choices": [{"delta": {"content": "Pa"}}]}, id="stream-chunk"),
        pytest.param({"message": {"role": "assistant", "content": "Pa"}, "done": False},
                     id="ollama-stream-chunk"),
        pytest.param({"response": "Pa", "done": False}, id="ollama-generate-chunk"),
        pytest.param({"candidates": []}, id="no-candidate"),
    ],
)
def test_a_response_object_without_its_text_is_invalid_field_saying_where_text_goes(
    decoder: Decoder, response: dict[str, Any]
) -> None:
    result = decoder.decode(_encode({"request_id": "r1", "response": response}))
    assert isinstance(result, Rejection) and result.reason == "invalid_field"
    assert "`content`" in result.detail and "`choices`" in result.detail
    assert result.detail.endswith("at `$.response`")


def test_passages_logged_as_objects_are_read_as_their_text(decoder: Decoder) -> None:
    """RAG pipelines log what they retrieved as their framework's objects, with metadata and
    scores; every such record was dead-lettered, and groundedness never ran on them."""
    context = [
        "A plain string.",
        {"page_content": "LangChain's Document.", "metadata": {"source": "a.md"},
         "type": "Document"},
        {"node": {"id_": "n1", "text": "LlamaIndex's node.", "metadata": {}}, "score": 0.8},
        {"id": "d1", "content": "Haystack's Document.", "score": 0.5},
        {"file_id": "f1", "score": 0.9, "content": [{"type": "text", "text": "OpenAI's."}]},
        {"text": "Cohere's document.", "title": "t"},
    ]
    record = _record(decoder.decode(_encode({"request_id": "c", "context": context})))
    assert record.context == ["A plain string.", "LangChain's Document.", "LlamaIndex's node.",
                              "Haystack's Document.", "OpenAI's.", "Cohere's document."]
    assert all(type(p) is str for p in record.context)
    result = decoder.decode(_encode({"request_id": "c", "context": ["ok", {"url": "x"}]}))
    assert isinstance(result, Rejection) and result.reason == "invalid_field"
    assert "`page_content`" in result.detail and result.detail.endswith("at `$.context[1]`")
    # A list of strings is what it was; one string is one passage.
    plain = _record(decoder.decode(_encode({"request_id": "p", "context": ["a", "b"]})))
    assert plain.context == ["a", "b"]
    one = _record(decoder.decode(_encode({"request_id": "o", "context": "a\nb"})))
    assert one.context == ["a\nb"]


def test_a_response_of_another_type_is_invalid_field(decoder: Decoder) -> None:
    for value in (5, ["Paris."], True, [{"type": "text", "text": 5}]):
        result = decoder.decode(_encode({"request_id": "r1", "response": value}))
        assert isinstance(result, Rejection) and result.reason == "invalid_field", value
        assert "at `$.response" in result.detail


@pytest.mark.parametrize(
    "timestamp",
    ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00+01:00", "2023-12-31T19:00:00.000-05:00",
     1_704_067_200_000, 1_704_067_200_000.0],
)
def test_rfc3339_and_epoch_ms_timestamps_give_the_same_event_time(
    decoder: Decoder, timestamp: str | float
) -> None:
    record = _record(decoder.decode(_encode({"request_id": "t", "timestamp": timestamp})))
    assert record.event_time == datetime(2024, 1, 1, tzinfo=UTC).timestamp()


def test_missing_timestamp_has_no_event_time(decoder: Decoder) -> None:
    assert _record(decoder.decode(b'{"request_id":"t"}')).event_time is None


@pytest.mark.parametrize("timestamp", ["2024-01-01T00:00:00", "2024-01-01 00:00", "yesterday"])
def test_timestamp_without_offset_or_unparseable_is_invalid_field(
    decoder: Decoder, timestamp: str
) -> None:
    result = decoder.decode(_encode({"request_id": "t", "timestamp": timestamp}))
    assert isinstance(result, Rejection)
    assert result.reason == "invalid_field"
    assert "$.timestamp" in result.detail


@pytest.mark.parametrize("timestamp", ["2024-01-01T10:00:00", "2024-01-01T10:00:00.123456",
                                       "2024-01-01 10:00:00"])
def test_a_time_without_offset_says_how_to_fix_it_or_is_read_as_utc(timestamp: str) -> None:
    """`datetime.utcnow().isoformat()` writes no offset: every record of such a producer was
    refused as "Expected `datetime` with a timezone component". Now the detail says what to
    write, and `validation.naive_timestamps: utc` reads it as UTC, never the host's zone."""
    message = _encode({"request_id": "t", "timestamp": timestamp})
    refused = Decoder(1 << 20).decode(message)
    assert isinstance(refused, Rejection) and refused.reason == "invalid_field"
    assert refused.detail == (
        "a time without an offset is ambiguous (RFC 3339 requires one): write Z or +00:00 "
        "(Python: datetime.now(timezone.utc).isoformat()), or set validation.naive_timestamps: "
        "utc to read such times as UTC - at `$.timestamp`")
    record = _record(Decoder(1 << 20, EventTimeBounds(naive_utc=True)).decode(message))
    expected = datetime.fromisoformat(timestamp).replace(tzinfo=UTC)
    assert record.timestamp == expected and record.timestamp.tzinfo is UTC
    assert record.event_time == expected.timestamp()
    # An offset given is kept as given, whatever the setting.
    offset = _encode({"request_id": "t", "timestamp": timestamp + "+02:00"})
    kept = _record(Decoder(1 << 20, EventTimeBounds(naive_utc=True)).decode(offset))
    assert kept.event_time == expected.timestamp() - 7_200
    # Read as UTC, a time is still bounded.
    late = Decoder(1 << 20, EventTimeBounds(naive_utc=True)).decode(
        _encode({"request_id": "t", "timestamp": "2999-01-01T00:00:00"}))
    assert isinstance(late, Rejection) and "max_future_seconds" in late.detail


def test_unknown_fields_are_ignored(decoder: Decoder) -> None:
    payload = _encode({
        "request_id": "u", "tenant": "acme", "extra": {"nested": [1, {"deep": None}]},
        "model": "m", "x-trace": 3.5,
    })
    record = _record(decoder.decode(payload))
    assert (record.request_id, record.model) == ("u", "m")
    assert not hasattr(record, "tenant")


def test_full_record_round_trips_every_field(decoder: Decoder) -> None:
    payload = _encode({
        "request_id": "full", "timestamp": 1_704_067_200_000, "model": "m", "model_version": "v2",
        "deployment": "canary", "route": "qa", "prompt": "q", "response": "a",
        "context": ["c1", "c2"], "latency_ms": 12.5, "prompt_tokens": 3, "completion_tokens": 0,
        "cost_usd": 0.0, "status": "error", "error_type": "timeout",
    })
    record = _record(decoder.decode(payload))
    assert record == Record(
        request_id="full", timestamp=1_704_067_200_000.0, model="m", model_version="v2",
        deployment="canary", route="qa", prompt="q", response="a", context=["c1", "c2"],
        latency_ms=12.5, prompt_tokens=3, completion_tokens=0, cost_usd=0.0, status="error",
        error_type="timeout",
    )
    assert record.event_time == 1_704_067_200.0


def test_generated_malformed_payloads_decode_to_their_paired_reason() -> None:
    decoder = Decoder(max_message_bytes=1 << 20)
    payloads = traffic.malformed_payloads(24, seed=0)
    got = []
    for payload, _ in payloads:
        result = decoder.decode(payload)
        got.append(result.reason if isinstance(result, Rejection) else None)
    assert got == [reason for _, reason in payloads]


def test_generated_wire_records_all_decode() -> None:
    decoder = Decoder(max_message_bytes=1 << 20)
    records = [_record(decoder.decode(p)) for p in _WIRE]
    assert [r.request_id for r in records] == [f"req-0-{i:08d}" for i in range(len(_WIRE))]
    assert all(r.prompt_text for r in records)


# -- properties --------------------------------------------------------------------------------

def _assert_well_formed(result: Record | Rejection) -> None:
    if isinstance(result, Rejection):
        assert result.reason in REASONS
        assert isinstance(result.detail, str) and result.detail
        return
    assert isinstance(result, Record)
    assert isinstance(result.request_id, str) and result.request_id
    for name in NUMERIC_FIELDS:
        value = getattr(result, name)
        assert value is None or value >= 0, (name, value)
    assert result.prompt_text is None or isinstance(result.prompt_text, str)
    assert result.response is None or type(result.response) is str  # an object: its text
    assert result.event_time is None or isinstance(result.event_time, float)


@PROPERTY
@given(st.binary(max_size=2_000))
def test_any_bytes_decode_without_raising(payload: bytes) -> None:
    _assert_well_formed(Decoder(max_message_bytes=MAX_BYTES).decode(payload))


_json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
# Field junk may also be NaN/Infinity (json.dumps writes them as bare tokens).
_junk = _json_values | st.floats()

_offsets = st.integers(min_value=-23 * 60, max_value=23 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
_aware_times = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2025, 1, 1), timezones=_offsets
).map(lambda d: d.isoformat())
_parts = st.lists(
    st.fixed_dictionaries({}, optional={"type": st.text(max_size=6),
                                        "text": st.none() | st.text(max_size=10)}),
    max_size=3,
)
_chat = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"])},
        optional={"content": st.none() | st.text(max_size=20) | _parts},
    ),
    max_size=4,
)
_content = st.none() | st.text(max_size=20) | _parts
_message = st.fixed_dictionaries({"content": _content},
                                 optional={"role": st.just("assistant")})
# A response as its text, or as the API's object: a message, a completion's choices, a
# Responses API output, a Gemini response's candidates, a text-generation server's text.
_response = (
    st.text(max_size=30) | _parts | _message | st.fixed_dictionaries({"choices": st.lists(
        st.fixed_dictionaries({"message": st.fixed_dictionaries(
            {"role": st.just("assistant"), "content": _content})}) | st.fixed_dictionaries(
            {"text": st.text(max_size=20)}), min_size=1, max_size=2)})
    | st.fixed_dictionaries({"output": st.lists(st.fixed_dictionaries(
        {"type": st.sampled_from(["message", "reasoning", "function_call"])},
        optional={"role": st.just("assistant"), "content": _content}), max_size=3)})
    | st.fixed_dictionaries({"candidates": st.lists(st.fixed_dictionaries({}, optional={
        "content": st.fixed_dictionaries({"parts": st.lists(st.fixed_dictionaries(
            {}, optional={"text": st.text(max_size=10), "thought": st.booleans()}),
            max_size=3)})}), min_size=1, max_size=2)})
    | st.fixed_dictionaries({"generated_text": st.text(max_size=20)})
)
# A request body the API was sent: its prompt under one of the keys, a model, instructions.
_request_body = st.one_of(
    st.fixed_dictionaries({"messages": _chat}), st.fixed_dictionaries({"input": _chat}),
    st.fixed_dictionaries({"input": st.text(max_size=20)}),
    st.fixed_dictionaries({"contents": st.text(max_size=20)}),
    st.fixed_dictionaries({"prompt": st.text(max_size=20)}),
).flatmap(lambda body: st.fixed_dictionaries(
    {k: st.just(v) for k, v in body.items()},
    optional={"model": st.text(_label, max_size=8), "instructions": st.text(max_size=9)}))
# A passage as its text, or as a framework's object around it.
_passage = st.text(max_size=10) | st.sampled_from(["page_content", "text", "content"]).flatmap(
    lambda key: st.fixed_dictionaries({key: st.text(max_size=10)},
                                      optional={"score": st.floats(allow_nan=False)}))
_non_negative = st.integers(min_value=0, max_value=10**12) | st.floats(
    min_value=0, max_value=1e12, allow_nan=False
)
# Ids and labels: any character but a control one (Unicode category Cc) or a lone
# surrogate (Cs: not Unicode text, so not valid JSON; refused as not_json, tested above).
_label = st.characters(exclude_categories=("Cc", "Cs"))
_VALID: dict[str, st.SearchStrategy[Any]] = {
    "request_id": st.text(_label, min_size=1, max_size=20),
    "timestamp": st.integers(min_value=946_771_200_000, max_value=1_735_689_600_000)
    | _aware_times,
    "model": st.text(_label, max_size=12),
    "deployment": st.sampled_from(["stable", "canary", "shadow"]) | st.text(_label, max_size=8),
    "prompt": st.text(max_size=30) | _chat | _request_body,
    "response": _response,
    "context": st.lists(_passage, max_size=3) | st.text(max_size=10),
    "latency_ms": _non_negative,
    "prompt_tokens": st.integers(min_value=0, max_value=MAX_TOKENS),
    "completion_tokens": st.integers(min_value=0, max_value=MAX_TOKENS),
    "cost_usd": _non_negative,
    "status": st.text(_label, max_size=8),
}
assert set(_VALID) == set(WIRE_FIELDS)
_RECORD_FIELDS = frozenset(Record.__struct_fields__)


@st.composite
def _wire_objects(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """A JSON object over the wire fields, and whether every field drawn is valid."""
    obj: dict[str, Any] = {}
    all_valid = True
    for name in WIRE_FIELDS:
        presence = draw(st.sampled_from(["absent", "valid", "valid", "valid", "junk"]))
        if presence == "valid":
            obj[name] = draw(_VALID[name])
        elif presence == "junk":
            obj[name] = draw(_junk)
            all_valid = False
    if "request_id" not in obj:
        all_valid = False
    extras = draw(st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in _RECORD_FIELDS), _json_values, max_size=3
    ))
    obj.update(extras)
    return obj, all_valid


@pytest.mark.slow  # starts a process or runs many examples
@PROPERTY
@given(_wire_objects())
def test_json_objects_over_the_wire_fields_decode_without_raising(
    drawn: tuple[dict[str, Any], bool],
) -> None:
    obj, all_valid = drawn
    payload = json.dumps(obj).encode()
    result = Decoder(max_message_bytes=1 << 20).decode(payload)
    _assert_well_formed(result)
    if all_valid:
        record = _record(result)
        assert record.request_id == obj["request_id"]
        for name in NUMERIC_FIELDS:
            assert getattr(record, name) == obj.get(name)
        body = obj.get("prompt")
        assert record.model == (obj["model"] if obj.get("model") is not None else
                                body.get("model") if isinstance(body, dict) else None)
        assert record.deployment == obj.get("deployment")
        context = obj.get("context")
        # A passage object is read as its text (the one key beside its score); one string
        # is one passage.
        assert record.context == (None if context is None else [context]
                                  if isinstance(context, str) else [
            p if isinstance(p, str) else next(v for k, v in p.items() if k != "score")
            for p in context])
        # A request body is read into the prompt, a string or a chat.
        assert record.prompt is None or type(record.prompt) in (str, list)
        # Every shape the strategy draws is one the decoder reads as its text.
        assert (record.response is None) == (obj.get("response") is None)
        assert record.response is None or type(record.response) is str
    if isinstance(result, Record):
        # A whole number (1 or 1.0) is an id written as its decimal string.
        rid = obj["request_id"]
        assert result.request_id == (rid if isinstance(rid, str) else str(int(rid)))



_mutation = st.one_of(
    st.tuples(st.just("truncate"), st.integers(min_value=0), st.just(b"")),
    st.tuples(st.just("flip"), st.integers(min_value=0), st.binary(min_size=1, max_size=1)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.binary(max_size=0)),
)


def _mutate(data: bytes, mutations: list[tuple[str, int, bytes]]) -> bytes:
    for kind, position, extra in mutations:
        at = position % (len(data) + 1)
        if kind == "truncate":
            data = data[:at]
        elif kind == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ (extra[0] or 0x80)]) + data[at + 1:]
        elif kind == "insert":
            data = data[:at] + extra + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + 1:]
    return data


@pytest.mark.slow  # starts a process or runs many examples
@PROPERTY
@given(st.sampled_from(range(len(_WIRE))), st.lists(_mutation, max_size=6))
def test_mutated_real_records_decode_without_raising(
    index: int, mutations: list[tuple[str, int, bytes]]
) -> None:
    original = _WIRE[index]
    payload = _mutate(original, mutations)
    result = Decoder(max_message_bytes=1 << 20).decode(payload)
    _assert_well_formed(result)
    if payload == original:
        assert _record(result).request_id == f"req-0-{index:08d}"
