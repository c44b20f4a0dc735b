"""`wire.format: otlp_json`: the model calls among an OpenTelemetry Collector's traces (its
Kafka exporter's otlp_json encoding), each a record, as the GenAI conventions, OpenLLMetry
and OpenInference write them; everything else in the message is not a record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from consumers.decode import REASONS, Decoder, Rejection
from consumers.settings import TopicWire, WireSettings
from consumers.wire import Record
from monitor.local.bench_consume import as_proto
from tests.consumers.test_decode import PROPERTY

NOW = 1_800_000_100.0
START_NS = 1_800_000_000_250_000_000  # 2027-01-15T08:00:00.25Z


def value(v: Any) -> dict[str, Any]:
    """A plain value as OTLP's JSON writes an AnyValue (int64 as a string)."""
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list):
        return {"arrayValue": {"values": [value(x) for x in v]}}
    if isinstance(v, dict):
        return {"kvlistValue": {"values": [{"key": k, "value": value(x)} for k, x in v.items()]}}
    return {"stringValue": v}


def span(span_id: str, attributes: dict[str, Any], took_ms: float = 1_500.0,
         error: bool = False, **extra: Any) -> dict[str, Any]:
    return {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": span_id,
            "name": "chat gpt-4o", "kind": 3,
            "startTimeUnixNano": str(START_NS),
            "endTimeUnixNano": str(START_NS + int(took_ms * 1e6)),
            "attributes": [{"key": k, "value": value(v)} for k, v in attributes.items()],
            "status": {"code": 2, "message": "rate limited"} if error else {}, **extra}


def traces(*spans: dict[str, Any], resource: dict[str, Any] | None = None) -> bytes:
    """An ExportTraceServiceRequest as the Collector's Kafka exporter writes it."""
    return json.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": k, "value": value(v)}
                                    for k, v in (resource or {}).items()]},
        "scopeSpans": [{"scope": {"name": "opentelemetry.instrumentation.openai"},
                        "spans": list(spans)}]}]}).encode()


# The GenAI conventions (1.37 on): messages as JSON strings of parts.
SEMCONV = span("00f067aa0ba902b7", {
    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.response.id": "chatcmpl-123", "gen_ai.usage.input_tokens": 31,
    "gen_ai.usage.output_tokens": 7, "app.route": "support",
    "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
    "gen_ai.input.messages": json.dumps([
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1",
                                         "name": "weather", "arguments": {"q": "Paris"}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1",
                                    "response": "rainy, 57F"}]},
        {"role": "user", "parts": [{"type": "text", "content": "And tomorrow?"}]}]),
    "gen_ai.output.messages": json.dumps([{"role": "assistant", "finish_reason": "stop",
                                           "parts": [{"type": "text",
                                                      "content": "Sunny tomorrow."}]}]),
})
# OpenLLMetry (Traceloop): indexed prompt and completion attributes.
OPENLLMETRY = span("a1b2c3d4e5f60718", {
    "gen_ai.system": "openai", "llm.request.type": "chat",
    "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.prompt_tokens": 12,
    "gen_ai.usage.completion_tokens": 3,
    "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "You translate.",
    "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "Bonjour",
    "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "Hello",
}, took_ms=250.0, error=True, **{})
# OpenInference (Arize Phoenix's instrumentations).
OPENINFERENCE = span("0102030405060708", {
    "openinference.span.kind": "LLM", "llm.model_name": "claude-sonnet-4",
    "llm.token_count.prompt": 20, "llm.token_count.completion": 5,
    "llm.input_messages.0.message.role": "user",
    "llm.input_messages.0.message.content": "Name a prime.",
    "llm.output_messages.0.message.role": "assistant",
    "llm.output_messages.0.message.content": "7",
}, took_ms=80.0)
NOT_CALLS = [
    span("1111111111111111", {"http.request.method": "POST", "url.path": "/chat"}),
    span("2222222222222222", {"gen_ai.operation.name": "execute_tool",
                              "gen_ai.tool.name": "weather"}),
    span("3333333333333333", {"gen_ai.operation.name": "embeddings",
                              "gen_ai.request.model": "text-embedding-3-small"}),
    span("4444444444444444", {"openinference.span.kind": "CHAIN", "input.value": "hi"}),
]


def _decoder(**settings: Any) -> Decoder:
    decoder = WireSettings(format="otlp_json", **settings).decoder(1 << 20)
    decoder._clock = lambda: NOW
    return decoder


def test_each_model_call_is_a_record_in_each_conventions_names() -> None:
    records = _decoder().decode(traces(NOT_CALLS[0], SEMCONV, *NOT_CALLS[1:], OPENLLMETRY,
                                       OPENINFERENCE))
    assert isinstance(records, list) and len(records) == 3, records
    semconv, openllmetry, openinference = records
    assert [r.request_id for r in records] == [
        "00f067aa0ba902b7", "a1b2c3d4e5f60718", "0102030405060708"]
    start = datetime.fromtimestamp(START_NS / 1e9, UTC)
    assert all(r.timestamp == start for r in records)
    assert [r.latency_ms for r in records] == [1_500.0, 250.0, 80.0]
    assert [r.model for r in records] == ["gpt-4o-2024-08-06", "gpt-4o-mini", "claude-sonnet-4"]
    assert [(r.prompt_tokens, r.completion_tokens) for r in records] == [(31, 7), (12, 3),
                                                                          (20, 5)]
    assert [r.status for r in records] == ["ok", "error", "ok"]
    # The prompt the models read: the last user message; the whole chat for groundedness,
    # the tool's response among its facts, after the system instructions.
    assert semconv.user_prompt == "And tomorrow?"
    assert semconv.prompt_text == ("Be brief.\nWeather in Paris?\n\nrainy, 57F\nAnd tomorrow?")
    assert semconv.response == "Sunny tomorrow."
    assert (openllmetry.user_prompt, openllmetry.response) == ("Bonjour", "Hello")
    assert openllmetry.prompt_text == "You translate.\nBonjour"
    assert (openinference.user_prompt, openinference.response) == ("Name a prime.", "7")


def test_a_message_of_no_model_call_holds_no_record() -> None:
    assert _decoder().decode(traces(*NOT_CALLS)) == []
    # An operation that is no name (a list, a number) is no call either.
    assert _decoder().decode(traces(span("0b", {"gen_ai.operation.name": ["chat"]}),
                                    span("0c", {"gen_ai.operation.name": 3}))) == []
    assert _decoder().decode(b'{"resourceSpans": []}') == []
    # null where OTLP has an object or a list: an empty one, as protobuf's JSON reads it.
    assert _decoder().decode(
        b'{"resourceSpans": [null, {"resource": null, "scopeSpans": [null, {"spans": [null]}]}]}'
    ) == []


def test_wire_fields_read_the_span_its_attributes_and_its_resource() -> None:
    decoder = _decoder(fields={"request_id": "attributes.gen_ai.response.id",
                               "route": "attributes.app.route",
                               "deployment": "resource.service.version",
                               "model_version": "name"})
    (record,) = decoder.decode(traces(SEMCONV, resource={"service.name": "chat-api",
                                                         "service.version": "canary"}))
    assert (record.request_id, record.route, record.deployment, record.model_version) == (
        "chatcmpl-123", "support", "canary", "chat gpt-4o")


def test_the_vercel_ai_sdks_model_call_is_read_from_its_own_attributes() -> None:
    """`ai.generateText.doGenerate`, the AI SDK's call to the provider: the GenAI model and
    usage attributes, its prompt and answer under `ai.*`; its parent `ai.generateText`
    span (no `gen_ai.*` attribute) is no second call."""
    chat = [{"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}]
    records = _decoder().decode(traces(
        span("0f0f0f0f0f0f0f0f", {"operation.name": "ai.generateText", "ai.model.id": "gpt-4o",
                                  "ai.prompt": json.dumps({"messages": chat}),
                                  "ai.response.text": "Paris"}),
        span("1e1e1e1e1e1e1e1e", {"operation.name": "ai.generateText.doGenerate",
                                  "ai.model.id": "gpt-4o", "gen_ai.system": "openai.chat",
                                  "gen_ai.request.model": "gpt-4o",
                                  "gen_ai.usage.input_tokens": 19,
                                  "gen_ai.usage.output_tokens": 1,
                                  "ai.prompt.messages": json.dumps(chat),
                                  "ai.response.text": "Paris"})))
    assert isinstance(records, list) and len(records) == 1, records
    (call,) = records
    assert (call.request_id, call.model, call.user_prompt, call.response) == (
        "1e1e1e1e1e1e1e1e", "gpt-4o", "Capital of France?", "Paris")
    assert call.prompt_text == "Answer in one word.\nCapital of France?"
    assert (call.prompt_tokens, call.completion_tokens) == (19, 1)


def test_openinference_input_value_and_plain_strings() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi there"}]}
    records = _decoder().decode(traces(
        span("5555555555555555", {"openinference.span.kind": "LLM",
                                  "input.value": json.dumps(body),
                                  "input.mime_type": "application/json",
                                  "output.value": "Hello!"}),
        span("6666666666666666", {"gen_ai.operation.name": "text_completion",
                                  "gen_ai.request.model": "m",
                                  "gen_ai.input.messages": "just a string",
                                  "gen_ai.output.messages": [{"role": "assistant", "parts": [
                                      {"type": "text", "content": "structured"}]}]})))
    assert isinstance(records, list)
    assert [(r.user_prompt, r.response) for r in records] == [
        ("Hi there", "Hello!"), ("just a string", "structured")]


def test_a_message_of_several_parts_is_read_as_each_instrumentation_writes_it() -> None:
    """OpenInference indexes the parts of a multi-part message (an image beside the question,
    the Responses API's `output_text`); OpenLLMetry writes the API's own list of parts as
    JSON, an Anthropic tool result among them. Their text is the message's; a prompt that is
    JSON of its own is text."""
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    records = _decoder().decode(traces(
        span("0a0a0a0a0a0a0a0a", {
            "openinference.span.kind": "LLM", "llm.model_name": "gpt-4.1",
            "llm.input_messages.0.message.role": "system",
            "llm.input_messages.0.message.content": "Describe images.",
            "llm.input_messages.1.message.role": "user",
            "llm.input_messages.1.message.contents.0.message_content.type": "text",
            "llm.input_messages.1.message.contents.0.message_content.text": "What is this?",
            "llm.input_messages.1.message.contents.1.message_content.type": "image",
            "llm.input_messages.1.message.contents.1.message_content.image.image.url":
                "https://example.com/cat.png",
            "llm.input_messages.1.message.contents.2.message_content.type": "text",
            "llm.input_messages.1.message.contents.2.message_content.text": "Be short.",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.contents.0.message_content.type": "output_text",
            "llm.output_messages.0.message.contents.0.message_content.text": "A cat.",
            "llm.output_messages.0.message.contents.1.message_content.type": "output_text",
            "llm.output_messages.0.message.contents.1.message_content.text": "Orange."}),
        span("0b0b0b0b0b0b0b0b", {
            "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": json.dumps([{"type": "text", "text": "And this?"},
                                                   image]),
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": json.dumps([{"type": "text", "text": "A dog."}])}),
        span("0c0c0c0c0c0c0c0c", {
            "gen_ai.system": "anthropic", "gen_ai.request.model": "claude-sonnet-4",
            "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Weather in Oslo?",
            "gen_ai.prompt.1.role": "assistant", "gen_ai.prompt.1.content": json.dumps([
                {"type": "tool_use", "id": "t1", "name": "weather", "input": {"q": "Oslo"}}]),
            "gen_ai.prompt.2.role": "user", "gen_ai.prompt.2.content": json.dumps([
                {"type": "tool_result", "tool_use_id": "t1", "content": "snow, -4C"},
                {"type": "text", "text": "Do I need boots?"}]),
            "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "Yes."}),
        span("0d0d0d0d0d0d0d0d", {
            "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": '[{"type": "row", "id": 7}]',
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": '{"type": "text", "text": "a JSON answer"}'})))
    assert isinstance(records, list) and len(records) == 4, records
    openinference, openai, anthropic, json_of_its_own = records
    assert openinference.user_prompt == "What is this?\nBe short."
    assert openinference.prompt_text == "Describe images.\nWhat is this?\nBe short."
    assert openinference.response == "A cat.\nOrange."
    assert (openai.user_prompt, openai.response) == ("And this?", "A dog.")
    # The tool's result is among the facts the answer stands on, not what the user said.
    assert anthropic.user_prompt == "Do I need boots?"
    assert anthropic.prompt_text == "Weather in Oslo?\n\nsnow, -4C\nDo I need boots?"
    assert anthropic.response == "Yes."
    assert json_of_its_own.user_prompt == '[{"type": "row", "id": 7}]'
    assert json_of_its_own.response == '{"type": "text", "text": "a JSON answer"}'
    # Values that are no content at all read as none (each was a TypeError in the reading).
    odd = _decoder().decode(traces(span("0e0e0e0e0e0e0e0e", {
        "gen_ai.request.model": "m", "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": [1, 2], "gen_ai.completion.0.content": [3],
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.contents.0.message_content.type": ["text"],
        "llm.output_messages.0.message.contents.0.message_content.text": "x"})))
    assert isinstance(odd, list) and len(odd) == 1, odd
    assert (odd[0].user_prompt, odd[0].response) == ("", "")


def event(name: str, attributes: dict[str, Any]) -> dict[str, Any]:
    return {"timeUnixNano": str(START_NS + 1), "name": name,
            "attributes": [{"key": k, "value": value(v)} for k, v in attributes.items()]}


# Content an instrumentation logs as span events rather than as the span's attributes.
EVENTS = [
    # The GenAI conventions 1.37 on: one event holds the messages' attributes.
    span("e1e1e1e1e1e1e1e1", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m1"},
         events=[event("gen_ai.client.inference.operation.details", {
             "gen_ai.system_instructions": json.dumps([{"type": "text",
                                                        "content": "Be brief."}]),
             "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
                 {"type": "text", "content": "Capital of Chile?"}]}]),
             "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
                 {"type": "text", "content": "Santiago."}]}])})]),
    # 1.28 to 1.36, as Azure's AI Inference SDK writes them: an event a message.
    span("e2e2e2e2e2e2e2e2", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m2"},
         events=[event("gen_ai.system.message", {"gen_ai.event.content": json.dumps(
                     {"role": "system", "content": "Use the tool."})}),
                 event("gen_ai.user.message", {"gen_ai.event.content": json.dumps(
                     {"content": "Weather in Lima?"})}),
                 event("gen_ai.assistant.message", {"gen_ai.event.content": json.dumps(
                     {"content": None, "tool_calls": [{"id": "c1", "type": "function"}]})}),
                 event("gen_ai.tool.message", {"gen_ai.event.content": json.dumps(
                     {"content": "fog, 17C", "id": "c1"})}),
                 event("exception", {"exception.message": "retried once"}),
                 event("gen_ai.choice", {"gen_ai.event.content": json.dumps(
                     {"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": "Foggy, 17C."}})})]),
    # 1.26 and 1.27 (Semantic Kernel's): the chat's JSON, and an answer's text as it is.
    span("e3e3e3e3e3e3e3e3", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m3"},
         events=[event("gen_ai.content.prompt", {"gen_ai.prompt": json.dumps(
                     [{"role": "system", "content": "Answer in JSON."},
                      {"role": "user", "content": "Two primes?"}])}),
                 event("gen_ai.content.completion", {"gen_ai.completion": '{"primes": [2, 3]}'})]),
    # The span's own attributes come first: its events add nothing then.
    span("e4e4e4e4e4e4e4e4", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m4",
                              "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Hi",
                              "gen_ai.completion.0.content": "Hello"},
         events=[event("gen_ai.content.prompt", {"gen_ai.prompt": "not this"}),
                 event("gen_ai.content.completion", {"gen_ai.completion": "nor this"})]),
]


def test_a_calls_content_logged_as_span_events_is_read_from_them() -> None:
    records = _decoder().decode(traces(*EVENTS))
    assert isinstance(records, list) and len(records) == 4, records
    details, per_message, legacy, attributes_first = records
    assert (details.user_prompt, details.response) == ("Capital of Chile?", "Santiago.")
    assert details.prompt_text == "Be brief.\nCapital of Chile?"
    assert (per_message.user_prompt, per_message.response) == ("Weather in Lima?",
                                                               "Foggy, 17C.")
    assert per_message.prompt_text == "Use the tool.\nWeather in Lima?\n\nfog, 17C"
    assert (legacy.user_prompt, legacy.response) == ("Two primes?", '{"primes": [2, 3]}')
    assert legacy.prompt_text == "Answer in JSON.\nTwo primes?"
    assert (attributes_first.user_prompt, attributes_first.response) == ("Hi", "Hello")
    assert _proto_decoder().decode(as_proto(traces(*EVENTS))) == records


@pytest.mark.parametrize(("events", "detail"), [
    ({"a": 1}, "Expected `array`, got `dict` - at `$.events`"),
    ([7], "Expected `object`, got `int` - at `$.events.0`"),
    ([{"name": "gen_ai.choice", "attributes": [{"key": 1}]}],
     "Expected `{key, value}` with a string key - at `$.events.0.attributes.0`"),
])
def test_a_calls_events_not_as_otlp_writes_them_name_the_span_and_the_place(
        events: Any, detail: str) -> None:
    refused = _decoder().decode(traces(span("e5e5e5e5e5e5e5e5", {"gen_ai.request.model": "m"},
                                            events=events)))
    assert isinstance(refused, Rejection) and refused.reason == "invalid_field", refused
    assert refused.detail == ("the model call at `$.resourceSpans.0.scopeSpans.0.spans.0` "
                              f"(spanId e5e5e5e5e5e5e5e5): {detail}"), refused


@pytest.mark.parametrize(("message", "reason", "detail"), [
    (b"{", "not_json", "truncated"),
    (b"[1, 2]", "not_object", "Expected `object`, got `list`"),
    (b'{"resourceLogs": []}', "invalid_field",
     "Expected `array` of resource spans, got `null` - at `$.resourceSpans`"),
    (traces(SEMCONV, {**span("7777777777777777", {"gen_ai.request.model": "m"}),
                      "startTimeUnixNano": "yesterday"}),
     "invalid_field", "the model call at `$.resourceSpans.0.scopeSpans.0.spans.1` (spanId "
     "7777777777777777): Expected epoch nanoseconds, got 'yesterday' - at "
     "`$.startTimeUnixNano`"),
    (traces(span("8888888888888888", {"gen_ai.request.model": "gpt\x1b[2J"})),
     "invalid_field", "the model call at `$.resourceSpans.0.scopeSpans.0.spans.0` (spanId "
     "8888888888888888): control character '\\x1b' at character 3"),
    (traces(span("\x1b[2J", {"gen_ai.request.model": "m"})), "invalid_field",
     "(spanId '\\x1b[2J'): control character"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [5]}]}]}', "invalid_field",
     "Expected `object`, got `int` - at `$.resourceSpans.0.scopeSpans.0.spans.0`"),
    (b'{"resourceSpans": [{"resource": {"attributes": [{"value": 1}]}}]}', "invalid_field",
     "Expected `{key, value}` with a string key - at `$.resourceSpans.0.resource.attributes.0`"),
    (traces({**span("0a", {"gen_ai.request.model": "m"}), "startTimeUnixNano": 10**30}),
     "invalid_field", "Expected epoch nanoseconds, got 1000000000000000000000000000000"),
    (traces(span("", {"gen_ai.request.model": "m"})), "missing_request_id",
     "(spanId ): Expected `str` of length >= 1 - at `$.request_id`"),
])
def test_a_message_with_a_bad_call_is_refused_whole_naming_the_span(
        message: bytes, reason: str, detail: str) -> None:
    refused = _decoder().decode(message)
    assert isinstance(refused, Rejection), refused
    assert refused.reason == reason and detail in refused.detail, refused


def test_a_message_whose_parts_are_no_list_has_no_text() -> None:
    """`parts: 5` was a TypeError inside the decoder, dead-lettered as one of its own."""
    records = _decoder().decode(traces(span("5a5a5a5a5a5a5a5a", {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": 5},
                                             {"role": "user", "parts": [
                                                 {"type": "text", "content": "Hi"}]}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": 5}])})))
    assert isinstance(records, list) and len(records) == 1, records
    assert (records[0].user_prompt, records[0].response) == ("Hi", "")


def test_a_mapped_fields_error_names_the_path_in_the_span() -> None:
    decoder = _decoder(fields={"route": "attributes.app.route"})
    refused = decoder.decode(traces(span("9999999999999999", {"gen_ai.request.model": "m",
                                                              "app.route": ["a", "b"]})))
    assert isinstance(refused, Rejection)
    assert refused.detail.endswith("got `array` - at `$.attributes.app.route`"), refused


def test_latency_settings_are_for_json_records_and_otlp_is_a_topics_choice() -> None:
    with pytest.raises(ValidationError, match="a span's latency is its end less its start"):
        WireSettings(format="otlp_json", latency_unit="s")
    with pytest.raises(ValidationError, match="a span's latency is its end less its start"):
        TopicWire(format="otlp_json", latency_from=("a", "b"))
    wire = WireSettings(topics={"spans": {"format": "otlp_json"}})
    decoder = wire.decoder(1 << 20, topic="spans")
    decoder._clock = lambda: NOW
    assert isinstance(decoder.decode(traces(SEMCONV)), list)
    assert isinstance(wire.decoder(1 << 20).decode(traces(SEMCONV)), Rejection)


def test_a_record_from_a_span_is_the_record_the_wire_would_carry() -> None:
    """The same call, logged on the wire in its own names, decodes to the same record."""
    (from_span,) = _decoder().decode(traces(OPENINFERENCE))
    wire = Decoder(1 << 20)
    wire._clock = lambda: NOW
    on_wire = wire.decode(json.dumps({
        "request_id": "0102030405060708", "timestamp": START_NS // 1_000_000 + 0.0,
        "model": "claude-sonnet-4", "prompt": [{"role": "user", "content": "Name a prime."}],
        "response": "7", "latency_ms": 80.0, "prompt_tokens": 20, "completion_tokens": 5,
        "status": "ok"}).encode())
    assert isinstance(on_wire, Record)
    assert from_span.event_time == on_wire.event_time
    assert (from_span.user_prompt, from_span.response, from_span.latency_ms) == (
        on_wire.user_prompt, on_wire.response, on_wire.latency_ms)


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
_KEYS = st.sampled_from([
    "gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model",
    "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
    "gen_ai.usage.input_tokens", "gen_ai.prompt.0.content", "gen_ai.prompt.0.role",
    "gen_ai.completion.0.content", "openinference.span.kind", "input.value",
    "input.mime_type", "llm.input_messages.0.message.content", "error.type", "x",
    "llm.input_messages.0.message.contents.0.message_content.text",
    "llm.input_messages.0.message.contents.0.message_content.type",
    "llm.output_messages.0.message.contents.1.message_content.text"])
_ANY_VALUE = _JSON | st.builds(value, _JSON) | st.sampled_from([
    {"stringValue": "chat"}, {"stringValue": "LLM"}, {"stringValue": "[{\"role\": 1}]"},
    {"stringValue": "application/json"}, {"intValue": "12"}, {"intValue": "x"},
    {"stringValue": '[{"type": "text", "text": 5}, {"type": "image"}]'},
    {"stringValue": '[{"type": "tool_result", "content": {"x": [1]}}]'},
    {"stringValue": '[{"role": "user", "parts": 5}]'}])


_EVENTS = st.sampled_from([
    "gen_ai.client.inference.operation.details", "gen_ai.user.message", "gen_ai.choice",
    "gen_ai.tool.message", "gen_ai.content.prompt", "gen_ai.content.completion"])
_EVENT_KEYS = _KEYS | st.sampled_from([
    "gen_ai.event.content", "content", "gen_ai.prompt", "gen_ai.completion"])


@st.composite
def _otlp_like(draw: st.DrawFn) -> Any:
    """OTLP-shaped messages with any value anywhere: attributes, times, ids, nesting."""
    def spans() -> list[Any]:
        return draw(st.lists(st.fixed_dictionaries({}, optional={
            "spanId": _JSON, "name": _JSON, "status": _JSON,
            "startTimeUnixNano": st.sampled_from([str(START_NS), "x", -1, 1.5, None]) | _JSON,
            "endTimeUnixNano": st.sampled_from([str(START_NS + 10**9), "0"]) | _JSON,
            "attributes": st.lists(st.fixed_dictionaries({"key": _KEYS | _JSON},
                                                         optional={"value": _ANY_VALUE}),
                                   max_size=6) | _JSON,
            "events": st.lists(st.fixed_dictionaries({}, optional={
                "name": _EVENTS | _JSON,
                "attributes": st.lists(st.fixed_dictionaries(
                    {"key": _EVENT_KEYS | _JSON}, optional={"value": _ANY_VALUE}),
                    max_size=3) | _JSON}) | _JSON, max_size=3) | _JSON,
        }) | _JSON, max_size=3))
    if draw(st.integers(0, 4)) == 0:
        return draw(_JSON)
    return {"resourceSpans": [{"resource": draw(_JSON), "scopeSpans": [{"spans": spans()}]}]}


@given(_otlp_like())
@PROPERTY
def test_any_message_decodes_to_records_or_one_reason_without_raising(message: Any) -> None:
    result = _decoder().decode(json.dumps(message).encode())
    if isinstance(result, Rejection):
        assert result.reason in REASONS and result.detail, result
    else:
        assert isinstance(result, list) and all(isinstance(r, Record) for r in result)
        for r in result:
            assert isinstance(r.request_id, str) and r.request_id
            assert r.latency_ms is None or r.latency_ms >= 0


@given(st.binary(max_size=300) | st.builds(
    lambda m, cut: m[:cut], st.sampled_from([traces(SEMCONV), traces(OPENLLMETRY)]),
    st.integers(0, 2_000)))
@PROPERTY
def test_any_bytes_decode_without_raising(message: bytes) -> None:
    result = _decoder().decode(message)
    assert isinstance(result, list) or result.reason in REASONS, result


def _proto_decoder(**settings: Any) -> Decoder:
    decoder = WireSettings(format="otlp_proto", **settings).decoder(1 << 20)
    decoder._clock = lambda: NOW
    return decoder


def test_otlp_proto_reads_the_calls_otlp_json_reads() -> None:
    message = traces(NOT_CALLS[0], SEMCONV, *NOT_CALLS[1:], OPENLLMETRY, OPENINFERENCE,
                     resource={"service.version": "canary", "tags": ["a", {"b": 1}]})
    fields = {"deployment": "resource.service.version", "route": "attributes.app.route"}
    from_json = _decoder(fields=fields).decode(message)
    from_proto = _proto_decoder(fields=fields).decode(as_proto(message))
    assert isinstance(from_proto, list) and len(from_proto) == 3, from_proto
    assert from_proto == from_json
    assert (from_proto[0].deployment, from_proto[0].route) == ("canary", "support")


@pytest.mark.parametrize(("message", "reason", "detail"), [
    (b"\xff\xff\xff", "not_protobuf", "not an OTLP traces request (ExportTraceServiceRequest) "
     "in protobuf"),
    (traces(SEMCONV), "not_protobuf", "in protobuf"),  # otlp_json on a topic said otlp_proto
    (None, "empty", "message value is empty"),
])
def test_a_message_that_is_no_protobuf_request_is_refused(message: bytes | None, reason: str,
                                                         detail: str) -> None:
    refused = _proto_decoder().decode(message)
    assert isinstance(refused, Rejection) and refused.reason == reason, refused
    assert detail in refused.detail, refused


def test_a_protobuf_call_without_times_has_no_event_time_and_a_bad_one_names_the_span() -> None:
    unset = {**span("0d", {"gen_ai.request.model": "m"}), "startTimeUnixNano": "0",
             "endTimeUnixNano": "0"}
    (record,) = _proto_decoder().decode(as_proto(traces(unset)))
    assert record.timestamp is None and record.latency_ms is None
    control = span("0e", {"gen_ai.request.model": "m\x07"})
    refused = _proto_decoder().decode(as_proto(traces(control)))
    assert isinstance(refused, Rejection) and refused.detail.startswith(
        "the model call at `$.resourceSpans.0.scopeSpans.0.spans.0` (spanId 0e): control "
        "character '\\x07'"), refused


@given(st.binary(max_size=300) | st.builds(
    lambda m, cut: m[:cut], st.sampled_from([as_proto(traces(SEMCONV, OPENINFERENCE))]),
    st.integers(0, 3_000)))
@PROPERTY
def test_any_bytes_decode_as_protobuf_without_raising(message: bytes) -> None:
    result = _proto_decoder().decode(message)
    assert isinstance(result, list) or result.reason in REASONS, result
