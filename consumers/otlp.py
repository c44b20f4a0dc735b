"""OpenTelemetry traces as records (`wire.format: otlp_json | otlp_proto`): the model calls
among the spans an OpenTelemetry Collector's Kafka exporter writes (one
ExportTraceServiceRequest a message, in its `otlp_json` or default `otlp_proto` encoding),
each read as the wire's fields.

A model call is a span of OpenTelemetry's GenAI conventions (`gen_ai.operation.name` chat,
text_completion or generate_content; or, without one, a `gen_ai.request.model`), of
OpenLLMetry's (`gen_ai.prompt.0.content`) or of OpenInference's (`openinference.span.kind`
LLM, as Arize Phoenix's instrumentations write). Other spans (HTTP, databases, tools,
agents, embeddings) are not records. Each call's wire fields:

- request_id: the span's id; timestamp: its start; latency: its end less its start;
- model: `gen_ai.response.model`, else `gen_ai.request.model` (`llm.model_name`);
- prompt: `gen_ai.input.messages` (their text parts; `gen_ai.system_instructions` as the
  system prompt), else the indexed `gen_ai.prompt.N.*` or `llm.input_messages.N.message.*`,
  else the Vercel AI SDK's `ai.prompt.messages`, else `input.value`;
- response: the text of `gen_ai.output.messages`, else `gen_ai.completion.N.content`,
  `llm.output_messages.N.message.content`, `ai.response.text` or `output.value`;
- an indexed message of several parts: OpenLLMetry writes its content as the JSON of the
  API's parts (`[{"type": "text", "text": ...}, {"type": "image_url", ...}]`), read as
  those parts; OpenInference writes them indexed
  (`message.contents.M.message_content.type`/`.text`), their text parts read;
- content an instrumentation logs as span events, where the span's attributes hold none:
  the `gen_ai.client.inference.operation.details` event's attributes (as the span's),
  the per-message events (`gen_ai.user.message` ... `gen_ai.choice`, the body in
  `gen_ai.event.content`), or `gen_ai.content.prompt`/`completion`;
- token counts: `gen_ai.usage.input_tokens`/`output_tokens` (`prompt_tokens`/
  `completion_tokens`, `llm.token_count.prompt`/`completion`);
- status: `error` for a span whose status is an error, else `ok`; error_type: `error.type`.

`wire.fields` maps any wire field to a path in the span as read here instead: `traceId`,
`spanId`, `name`, `attributes.<key>` and `resource.<key>` (a key with dots in it is found
whole), e.g. `route: attributes.app.route`, `deployment: resource.service.version`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

# What `gen_ai.operation.name` says of a model call (a chat, a completion, Gemini's).
_CALLS = frozenset({"chat", "text_completion", "generate_content", "completion"})
_ERROR = (2, "2", "STATUS_CODE_ERROR")
# A message's text parts: the Chat Completions' and Anthropic's `text`, the Responses API's
# `input_text` and `output_text` (OpenInference's parts carry the API's own type).
_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
# The part types of a message's content list in the Chat Completions, Responses and
# Anthropic Messages APIs (OpenLLMetry logs such a list as its JSON).
_API_PARTS = _TEXT_PARTS | {
    "image_url", "input_image", "input_audio", "file", "input_file", "refusal", "image",
    "document", "tool_use", "tool_result", "thinking", "redacted_thinking"}
# A message's event in the GenAI conventions 1.28 to 1.36, and its author.
_MESSAGE_EVENTS = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                   "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}
# Indexed messages (prefix, role, content, parts): OpenLLMetry's, then OpenInference's.
_INPUTS = (("gen_ai.prompt.", "role", "content", None),
           ("llm.input_messages.", "message.role", "message.content", "message.contents"))
_OUTPUTS = (("gen_ai.completion.", "role", "content", None),
            ("llm.output_messages.", "message.role", "message.content", "message.contents"))
_MAX_NANOS = 2**63  # OTLP's fixed64 times, read as the int64 they are in practice


class NotTraces(ValueError):
    """The message is JSON but no ExportTraceServiceRequest: its dead-letter reason, and a
    detail that names where."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def plain(value: Any) -> Any:
    """An OTLP AnyValue (`{"stringValue": ...}`, arrays and key-value lists) as plain JSON."""
    if type(value) is not dict:
        return value
    for key in ("stringValue", "boolValue", "doubleValue", "intValue", "bytesValue"):
        if key in value:
            return value[key]
    if type(array := value.get("arrayValue")) is dict:
        return [plain(v) for v in array.get("values") or ()]
    if type(kvlist := value.get("kvlistValue")) is dict:
        return attributes(kvlist.get("values"))
    return None


def attributes(pairs: Any) -> dict[str, Any]:
    """OTLP's `[{key, value}]` list as a dict."""
    if type(pairs) is not list:
        return {}
    return {kv["key"]: plain(kv.get("value")) for kv in pairs
            if type(kv) is dict and type(kv.get("key")) is str}


def calls(message: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, span) for each model call in an ExportTraceServiceRequest, in order: the
    span with its attributes and its resource's as dicts, and the wire's fields read from
    them. NotTraces where the message is no such request."""
    if type(message) is not dict:
        raise NotTraces("not_object", f"Expected `object`, got {_kind(message)}: an OTLP "
                        "traces message is an ExportTraceServiceRequest object")
    if type(message.get("resourceSpans")) is not list:
        raise NotTraces("invalid_field", "Expected `array` of resource spans, got "
                        f"{_kind(message.get('resourceSpans'))} - at `$.resourceSpans`: not an "
                        "OTLP traces message (ExportTraceServiceRequest)")
    for i, rs in enumerate(message["resourceSpans"]):
        at = f"resourceSpans.{i}"
        rs = _object(rs, at)
        resource = _attributes(_object(rs.get("resource"), f"{at}.resource"),
                               f"{at}.resource")
        for j, ss in enumerate(_array(rs, "scopeSpans", at)):
            ss = _object(ss, f"{at}.scopeSpans.{j}")
            for k, span in enumerate(_array(ss, "spans", f"{at}.scopeSpans.{j}")):
                where = f"{at}.scopeSpans.{j}.spans.{k}"
                attrs = _attributes(_object(span, where), where)
                if is_call(attrs):
                    try:
                        fields = _fields(span, attrs)
                    except NotTraces as exc:
                        raise NotTraces(exc.reason, f"{call_at(where, span)}: {exc}") from None
                    yield where, {**fields, "traceId": span.get("traceId"),
                                  "spanId": span.get("spanId"), "name": span.get("name"),
                                  "attributes": attrs, "resource": resource}


def _object(value: Any, where: str) -> dict[str, Any]:
    """`value` where OTLP has an object (absent: an empty one). NotTraces otherwise."""
    if value is None:
        return {}
    if type(value) is not dict:
        raise NotTraces("invalid_field", f"Expected `object`, got {_kind(value)} - at "
                        f"`$.{where}`")
    return value


def _array(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    """`obj[key]` where OTLP has an array (absent: an empty one). NotTraces otherwise;
    `where`: the path to `obj` (empty: a span, whose details name it apart)."""
    value = obj.get(key)
    if value is None:
        return []
    if type(value) is not list:
        raise NotTraces("invalid_field", f"Expected `array`, got {_kind(value)} - at "
                        f"`$.{f'{where}.' if where else ''}{key}`")
    return value


def _attributes(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """An object's `attributes` (`[{key, value}]`) as a dict. NotTraces where one is no
    `{key, value}` with a string key."""
    pairs = _array(obj, "attributes", where)
    for n, kv in enumerate(pairs):
        if type(kv) is not dict or type(kv.get("key")) is not str:
            raise NotTraces("invalid_field", "Expected `{key, value}` with a string key - at "
                            f"`$.{where}.attributes.{n}`")
    return attributes(pairs)


def from_proto(value: bytes) -> dict[str, Any]:
    """An ExportTraceServiceRequest in protobuf (the Collector's `otlp_proto`) as what its
    OTLP JSON decodes to: ids in hex, times as integers. NotTraces where it is none."""
    try:
        request = ExportTraceServiceRequest.FromString(value)
    except (DecodeError, RecursionError) as exc:
        raise NotTraces("not_protobuf", "not an OTLP traces request (ExportTraceServiceRequest) "
                        f"in protobuf: {exc}") from None
    return {"resourceSpans": [{
        "resource": {"attributes": [_proto_kv(kv) for kv in rs.resource.attributes]},
        "scopeSpans": [{"spans": [{
            "traceId": span.trace_id.hex(), "spanId": span.span_id.hex(), "name": span.name,
            "startTimeUnixNano": span.start_time_unix_nano,
            "endTimeUnixNano": span.end_time_unix_nano,
            "attributes": [_proto_kv(kv) for kv in span.attributes],
            "events": [{"name": event.name,
                        "attributes": [_proto_kv(kv) for kv in event.attributes]}
                       for event in span.events],
            "status": {"code": span.status.code}} for span in ss.spans]}
            for ss in rs.scope_spans]} for rs in request.resource_spans]}


def _proto_kv(kv: Any) -> dict[str, Any]:
    return {"key": kv.key, "value": _proto_value(kv.value)}


def _proto_value(value: AnyValue) -> Any:
    """A protobuf AnyValue as `plain` reads it: a scalar as it is, lists and maps as OTLP's
    JSON writes them."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return {"arrayValue": {"values": [_proto_value(v) for v in value.array_value.values]}}
    if which == "kvlist_value":
        return {"kvlistValue": {"values": [_proto_kv(kv) for kv in value.kvlist_value.values]}}
    if which == "bytes_value":
        return {"bytesValue": base64.b64encode(value.bytes_value).decode()}
    return None if which is None else getattr(value, which)


def call_at(where: str, span: dict[str, Any]) -> str:
    """Where a model call is in its message, for a dead letter's detail (an id that is no
    short printable string shown escaped: a detail is printed in logs)."""
    sid = span.get("spanId")
    shown = sid if type(sid) is str and len(sid) <= 64 and sid.isprintable() else f"{sid!r:.40}"
    return f"the model call at `$.{where}` (spanId {shown})"


def is_call(attrs: dict[str, Any]) -> bool:
    """Whether a span's attributes say it is a model call."""
    operation = attrs.get("gen_ai.operation.name")
    if operation is not None:
        return type(operation) is str and operation in _CALLS
    kind = attrs.get("openinference.span.kind")
    if kind is not None:
        return str(kind).upper() == "LLM"
    return ("gen_ai.request.model" in attrs or "gen_ai.response.model" in attrs
            or "gen_ai.prompt.0.content" in attrs)


def _fields(span: dict[str, Any], attrs: dict[str, Any]) -> dict[str, Any]:
    """The wire's fields of a model call's span (absent where it says nothing)."""
    out: dict[str, Any] = {"request_id": span.get("spanId")}
    start = _nanos(span, "startTimeUnixNano")
    end = _nanos(span, "endTimeUnixNano")
    if start is not None:
        out["timestamp"] = datetime.fromtimestamp(start / 1e9, UTC)
        if end is not None and end >= start:
            out["latency_ms"] = (end - start) / 1e6
    found = {
        "model": _first(attrs, "gen_ai.response.model", "gen_ai.request.model",
                        "llm.model_name"),
        "prompt_tokens": _first(attrs, "gen_ai.usage.input_tokens",
                                "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"),
        "completion_tokens": _first(attrs, "gen_ai.usage.output_tokens",
                                    "gen_ai.usage.completion_tokens",
                                    "llm.token_count.completion"),
        "error_type": attrs.get("error.type"),
    }
    # The content an instrumentation logs as events: the span's own attributes first.
    details, chat, answer = _from_events(_events(span))
    content = {**details, **attrs} if details else attrs
    prompt, response = _prompt(content), _response(content)
    found["prompt"] = chat if prompt is None else prompt
    found["response"] = answer if response is None else response
    found["system"] = _text(_json(content.get("gen_ai.system_instructions")))
    out.update((name, value) for name, value in found.items() if value is not None)
    status = span.get("status")
    out["status"] = "error" if type(status) is dict and status.get("code") in _ERROR else "ok"
    return out


def _events(span: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A span's events as (name, attributes). NotTraces where one is no such object."""
    out = []
    for n, event in enumerate(_array(span, "events", "")):
        event = _object(event, f"events.{n}")
        name = event.get("name")
        out.append((name if type(name) is str else "", _attributes(event, f"events.{n}")))
    return out


def _from_events(events: list[tuple[str, dict[str, Any]]]
                 ) -> tuple[dict[str, Any], list[dict[str, Any]] | None, str | None]:
    """The content a span's events carry: the attributes of the GenAI conventions'
    `gen_ai.client.inference.operation.details` event (1.37 on: the messages as the span's
    own attributes would hold them); else a chat and an answer from their per-message events
    (1.28 to 1.36: `gen_ai.user.message`, `gen_ai.choice` and the rest, the body in
    `gen_ai.event.content` as Azure's and Semantic Kernel's SDKs write it) or the older
    `gen_ai.content.prompt`/`completion` (the chat's JSON in `gen_ai.prompt`/`completion`)."""
    details: dict[str, Any] = {}
    chat: list[dict[str, Any]] = []
    answers: list[str] = []
    for name, attrs in events:
        if name == "gen_ai.client.inference.operation.details":
            details.update(attrs)
        elif name in _MESSAGE_EVENTS:
            role, body = _MESSAGE_EVENTS[name], _body(attrs)
            if type(body) is dict:
                role = body["role"] if type(body.get("role")) is str else role
                body = body.get("content")
            chat.append({"role": role, "content": _said(body)})
        elif name == "gen_ai.choice":
            answers.append(_answer(_body(attrs)))
        elif name == "gen_ai.content.prompt":
            said = _chat(attrs.get("gen_ai.prompt"))
            if type(said) is str:
                chat.append({"role": "user", "content": said})
            elif said is not None:
                chat.extend({"role": m["role"] if type(m.get("role")) is str else "user",
                             "content": _said(m.get("content"))} for m in said)
        elif name == "gen_ai.content.completion":
            said = _chat(attrs.get("gen_ai.completion"))
            answers.extend([said] if type(said) is str else map(_answer, said or ()))
    answer = "\n".join(a for a in answers if a)
    return details, chat or None, answer if answers else None


def _chat(value: Any) -> str | list[dict[str, Any]] | None:
    """The older events' `gen_ai.prompt`/`gen_ai.completion`: the JSON of a list of messages
    (or one), else text as it is (an answer that is JSON of its own included)."""
    said = _json(value)
    if type(said) is dict:
        said = [said]
    if type(said) is list and said and all(
            type(m) is dict and ("content" in m or "message" in m) for m in said):
        return said
    return value if type(value) is str else None


def _body(attrs: dict[str, Any]) -> Any:
    """A message event's body, as its attributes carry it."""
    return _json(attrs.get("gen_ai.event.content", attrs.get("content")))


def _answer(body: Any) -> str:
    """An answer's text from an event's body: text, a message, or a choice of one."""
    if type(body) is dict:
        body = body["message"] if type(body.get("message")) is dict else body
        body = body.get("content")
    return _parts_text(_said(body))


def _said(content: Any) -> str | list[dict[str, Any]]:
    """A message's content as a chat message of the wire holds it: text, the API's parts
    (as a list or as its JSON), else empty."""
    if type(content) is str:
        return _json_parts(content)
    return content if _is_parts(content) else ""


def _is_parts(value: Any) -> bool:
    """Whether a value is a content list as the APIs send it: objects of their part types."""
    return type(value) is list and bool(value) and all(
        type(p) is dict and type(p.get("type")) is str and p["type"] in _API_PARTS
        for p in value)


def _prompt(attrs: dict[str, Any]) -> Any:
    messages = _json(attrs.get("gen_ai.input.messages"))
    if type(messages) is list:
        return [_message(m) for m in messages if type(m) is dict]
    if messages is not None:  # a string that is no JSON: the prompt itself
        return messages
    for names in _INPUTS:
        indexed = _indexed(attrs, *names)
        if indexed:
            return indexed
    if (chat := attrs.get("ai.prompt.messages")) is not None:  # the Vercel AI SDK's
        return _json(chat)  # [{role, content}], content text or parts: the wire's own chat
    value = attrs.get("input.value")
    if value is not None and attrs.get("input.mime_type") == "application/json":
        return _json(value)  # a request body: the wire reads its messages
    return value


def _response(attrs: dict[str, Any]) -> Any:
    messages = _json(attrs.get("gen_ai.output.messages"))
    if type(messages) is list:
        return "\n".join(t for m in messages if type(m) is dict and (t := _text(m.get("parts"))))
    if messages is not None:
        return messages
    for names in _OUTPUTS:
        indexed = _indexed(attrs, *names)
        if indexed:
            return "\n".join(t for m in indexed if (t := _parts_text(m["content"])))
    return _first(attrs, "ai.response.text", "output.value")


def _message(message: dict[str, Any]) -> dict[str, Any]:
    """A GenAI convention message (`{role, parts: [{type, content}]}`) as a chat message of
    the wire: its text parts its content, a tool's response a tool result."""
    parts = []
    given = message.get("parts")
    for part in given if type(given) is list else ():
        if type(part) is not dict:
            continue
        if part.get("type") == "tool_call_response":
            response = part.get("response")
            parts.append({"type": "tool_result",
                          "content": response if type(response) is str else None})
        else:
            content = part.get("content")
            parts.append({"type": part.get("type") or "text",
                          "content": content if type(content) is str else None})
    return {"role": message.get("role") or "user", "content": parts}


def _indexed(attrs: dict[str, Any], prefix: str, role: str, content: str,
             parts: str | None) -> list[dict[str, Any]]:
    """Messages flattened with an index (`gen_ai.prompt.0.role`, `.content`, or `.contents`
    indexed in turn), in order, each content a string or a list of the API's parts."""
    out = []
    for i in range(len(attrs)):
        said = attrs.get(f"{prefix}{i}.{content}")
        who = attrs.get(f"{prefix}{i}.{role}")
        if said is None and parts is not None:
            said = _contents(attrs, f"{prefix}{i}.{parts}.")
        if said is None and who is None:
            break
        out.append({"role": who or "user", "content": _said(said)})
    return out


def _json_parts(said: str) -> str | list[dict[str, Any]]:
    """A message's content as OpenLLMetry writes it: text, or the JSON of the API's list of
    parts for a message of several (read as parts only where each is an object of a part
    type the APIs send: a prompt that is JSON of its own stays text)."""
    parts = _json(said)
    return parts if _is_parts(parts) else said


def _contents(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]] | None:
    """OpenInference's indexed parts of a message (`message.contents.0.message_content.text`
    and `.type`): its text parts as the API's, an image's dropped; None where it has none."""
    parts: list[dict[str, Any]] = []
    for j in range(len(attrs) + 1):  # a part more than there are attributes: the loop ends
        text = attrs.get(f"{prefix}{j}.message_content.text")
        kind = attrs.get(f"{prefix}{j}.message_content.type")
        if text is None and kind is None:
            break
        if type(text) is str and kind in (None, *_TEXT_PARTS):  # == each: any kind
            parts.append({"type": "text", "text": text})
    return parts if j else None


def _text(parts: Any) -> str | None:
    """The text of convention parts (`[{type: text, content}]`), or a string as it is."""
    if type(parts) is str or parts is None:
        return parts
    if type(parts) is not list:
        return None
    return "\n".join(p["content"] for p in parts if type(p) is dict
                     and p.get("type", "text") == "text" and type(p.get("content")) is str)


def _parts_text(content: str | list[dict[str, Any]]) -> str:
    """An indexed message's text: a string as it is, or its text parts' one per line."""
    if type(content) is str:
        return content
    return "\n".join(p["text"] for p in content
                     if p["type"] in _TEXT_PARTS and type(p.get("text")) is str)


def _json(value: Any) -> Any:
    """A value the conventions allow as a JSON string or as structure: the structure."""
    if type(value) is not str or not value.lstrip().startswith(("[", "{")):
        return value
    try:
        return msgspec.json.decode(value)
    except msgspec.DecodeError:
        return value


def _first(attrs: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if attrs.get(key) is not None:
            return attrs[key]
    return None


def _nanos(span: dict[str, Any], key: str) -> int | None:
    """A time of the span in epoch nanoseconds, as OTLP's JSON writes them (a string) or as a
    number; None where it is absent. NotTraces where it is no such number."""
    value = span.get(key)
    if value is None or value == 0 or value == "0":  # unset, as protobuf writes it
        return None
    if type(value) is int and 0 <= value < _MAX_NANOS:
        return value
    if type(value) is str and value.isdigit() and int(value) < _MAX_NANOS:
        return int(value)
    raise NotTraces("invalid_field", f"Expected epoch nanoseconds, got {value!r:.40} - at "
                    f"`$.{key}`")


def _kind(value: Any) -> str:
    return "`null`" if value is None else f"`{type(value).__name__}`"
