"""`wire.fields` and `wire.latency_unit`: a producer's own field names and latency unit, read
as the wire's; its errors name the producer's paths."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from consumers.decode import Decoder, Rejection
from consumers.field_map import WIRE_FIELDS, FieldMap
from consumers.settings import WireSettings
from consumers.wire import Record
from monitor.local import traffic
from monitor.local.bench_consume import MAPPED_FIELDS, as_gateway_logs
from tests.consumers.test_decode import MAX_BYTES, PROPERTY, _assert_well_formed, _wire_objects

NOW = 1_800_000_100.0
# As LiteLLM's standard logging payload names them (its `messages`, `response`, `model`,
# `status` and token counts are the wire's names already).
LITELLM = {"request_id": "id", "timestamp": "startTime", "latency_ms": "response_time",
           "cost_usd": "response_cost", "route": "metadata.user_api_key_team_alias"}
PAYLOAD: dict[str, Any] = {
    "id": "chatcmpl-7f3a", "trace_id": "t-1", "call_type": "acompletion",
    "startTime": 1_800_000_000.25, "endTime": 1_800_000_001.5, "response_time": 1.25,
    "response_cost": 0.00042, "model": "gpt-4o-mini", "status": "success",
    "messages": [{"role": "user", "content": "How tall is the Eiffel Tower?"}],
    "response": {"choices": [{"message": {"role": "assistant",
                                          "content": "It is 330 metres tall."},
                              "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 14, "completion_tokens": 8}},
    "metadata": {"user_api_key_team_alias": "search", "requester_ip_address": "10.0.0.1"},
}


def _decoder(fields: dict[str, str], latency_unit: str = "ms") -> Decoder:
    decoder = WireSettings(fields=fields, latency_unit=latency_unit).decoder(1 << 20)
    decoder._clock = lambda: NOW
    return decoder


def _decode(decoder: Decoder, obj: Any) -> Record | Rejection:
    return decoder.decode(json.dumps(obj).encode())


def test_a_gateway_record_is_read_through_its_own_field_names() -> None:
    record = _decode(_decoder(LITELLM, "s"), PAYLOAD)
    assert isinstance(record, Record)
    assert record.request_id == "chatcmpl-7f3a"
    assert record.event_time == 1_800_000_000.25  # epoch seconds, read by their size
    assert record.latency_ms == 1_250.0  # seconds, read as milliseconds
    assert (record.cost_usd, record.route, record.model) == (0.00042, "search", "gpt-4o-mini")
    assert record.user_prompt == "How tall is the Eiffel Tower?"
    assert record.response == "It is 330 metres tall."
    assert (record.prompt_tokens, record.completion_tokens, record.status) == (14, 8, "success")
    # The same message without the map: no `request_id`, dead-lettered.
    plain = Decoder(1 << 20, clock=lambda: NOW).decode(json.dumps(PAYLOAD).encode())
    assert isinstance(plain, Rejection) and plain.reason == "missing_request_id"


def test_a_mapped_field_is_read_from_its_path_only() -> None:
    """A producer's own key of the wire's name does not stand in for a mapped field whose path
    is absent: the map says where the field is."""
    decoder = _decoder({"request_id": "id", "route": "metadata.team"})
    record = _decode(decoder, {"id": "a", "route": "ignored", "metadata": {}})
    assert isinstance(record, Record) and record.route is None
    record = _decode(decoder, {"id": "a", "route": "ignored", "metadata": {"team": "ads"}})
    assert isinstance(record, Record) and record.route == "ads"
    # A path through a number that is no key (a string, a scalar) reads nothing.
    assert _decode(decoder, {"id": "a", "metadata": "flat"}).route is None  # type: ignore[union-attr]


def test_a_number_in_a_path_steps_into_a_list() -> None:
    decoder = _decoder({"request_id": "spans.0.id", "model": "spans.1.attributes.model"})
    message = {"spans": [{"id": "s0"}, {"attributes": {"model": "m1"}}]}
    record = _decode(decoder, message)
    assert isinstance(record, Record) and (record.request_id, record.model) == ("s0", "m1")
    past = _decode(decoder, {"spans": [{"id": "s0"}]})  # no second span: no model
    assert isinstance(past, Record) and past.model is None


@pytest.mark.parametrize(("message", "reason", "detail"), [
    ({**PAYLOAD, "id": None}, "missing_request_id",
     "Expected `int | str`, got `null` - at `$.id`"),
    ({k: v for k, v in PAYLOAD.items() if k != "id"}, "missing_request_id",
     "Object missing required field `request_id` (read from `$.id`)"),
    ({**PAYLOAD, "metadata": {"user_api_key_team_alias": 7}}, "invalid_field",
     "Expected `str | null`, got `int` - at `$.metadata.user_api_key_team_alias`"),
    ({**PAYLOAD, "response_time": -1}, "invalid_field",
     "Expected `float` >= 0.0 - at `$.response_time`"),
    ({**PAYLOAD, "startTime": 5}, "invalid_field",
     "event time 5 (epoch s) is before not_before=946684800; 5 was read as epoch seconds by "
     "its size - at `$.startTime`"),
    # An unmapped field's path is the wire's own.
    ({**PAYLOAD, "prompt_tokens": 1.5}, "invalid_field",
     "Expected a whole number, got 1.5 - at `$.prompt_tokens`"),
    ([PAYLOAD], "not_object", "Expected `object`, got `array`"),
])
def test_a_rejection_names_the_producers_path(message: Any, reason: str, detail: str) -> None:
    result = _decode(_decoder(LITELLM, "s"), message)
    assert isinstance(result, Rejection)
    assert (result.reason, result.detail) == (reason, detail)


def test_broken_messages_are_refused_as_on_the_fast_path() -> None:
    decoder = _decoder(LITELLM)
    assert decoder.decode(b'{"id": "a",').reason == "not_json"  # type: ignore[union-attr]
    deep = b'{"id": "a", "x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    assert decoder.decode(deep).reason == "too_deep"  # type: ignore[union-attr]
    assert decoder.decode(b'{"id": "a\xff"}').reason == "not_utf8"  # type: ignore[union-attr]


def test_records_logged_by_a_gateway_decode_as_the_wire_records_they_are() -> None:
    """Every generated record, renamed and nested as a gateway logs it (the bench's
    `--mapped` payloads), decodes to the record the wire's own names give."""
    fast = Decoder(1 << 20, clock=lambda: traffic.FIXED_START_MS / 1_000 + 86_400)
    mapped = _decoder(MAPPED_FIELDS, "s")
    mapped._clock = fast._clock
    for raw in traffic.wire_records(400, seed=3, start_ms=traffic.FIXED_START_MS):
        want = fast.decode(traffic.encode(raw))
        got = mapped.decode(json.dumps(as_gateway_logs(raw)).encode())
        assert isinstance(want, Record) and isinstance(got, Record)
        if want.latency_ms is not None:
            assert got.latency_ms == pytest.approx(want.latency_ms)
        assert got.event_time == pytest.approx(want.event_time)
        assert {**_fields(got), "latency_ms": 0, "timestamp": 0} == \
            {**_fields(want), "latency_ms": 0, "timestamp": 0}


def _fields(record: Record) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__struct_fields__}


def test_latency_in_seconds_without_a_map() -> None:
    record = _decode(_decoder({}, "s"), {"request_id": "a", "latency_ms": "0.25"})
    assert isinstance(record, Record) and record.latency_ms == 250.0
    assert _decoder({})._fields is None  # no map: the fast path


@pytest.mark.parametrize(("fields", "words"), [
    ({"requestid": "id"}, ["'requestid' is no field of the wire", "request_id, timestamp"]),
    ({"route": "metadata..team"}, ["route: 'metadata..team' is not a key or a dotted path"]),
    ({"route": ""}, ["route: '' is not"]),
])
def test_a_bad_map_names_the_field_and_what_is_allowed(fields: dict[str, str],
                                                       words: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        WireSettings(fields=fields)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_every_wire_field_may_be_mapped() -> None:
    assert set(WIRE_FIELDS) == set(Record.__struct_fields__)
    assert WireSettings(fields={name: f"x.{name}" for name in WIRE_FIELDS}).fields
    assert not FieldMap({})


# Where a nesting producer keeps each wire field: under `meta`, `body` and a list.
NESTED = {"request_id": "meta.id", "timestamp": "meta.at", "model": "body.model",
          "prompt": "body.input", "response": "body.output.0", "context": "docs",
          "latency_ms": "meta.took"}


def _nested(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in obj.items() if k not in NESTED}
    meta = {short: obj[ours] for ours, short in (("request_id", "id"), ("timestamp", "at"),
                                                 ("latency_ms", "took")) if ours in obj}
    body: dict[str, Any] = {k: obj[ours] for ours, k in (("model", "model"),
                                                         ("prompt", "input")) if ours in obj}
    if "response" in obj:
        body["output"] = [obj["response"]]
    if "context" in obj:
        out["docs"] = obj["context"]
    return {**out, "meta": meta, "body": body}


@pytest.mark.slow  # runs many examples
@PROPERTY
@given(_wire_objects())
def test_nested_objects_decode_as_the_wire_objects_they_hold(
        drawn: tuple[dict[str, Any], bool]) -> None:
    """Any object over the wire fields, nested as a producer might keep it, decodes under the
    map to what the object decodes to under the wire's names, or is refused for the same
    reason (or as not JSON where it holds a token JSON has not, such as Infinity: the map
    parses the whole message first, where the wire's decoder stops at its first bad field);
    never an exception."""
    obj, _ = drawn
    mapped = Decoder(1 << 20, fields=FieldMap(NESTED)).decode(json.dumps(_nested(obj)).encode())
    plain = Decoder(1 << 20).decode(json.dumps(obj).encode())
    _assert_well_formed(mapped)
    if isinstance(plain, Record):
        assert mapped == plain
    else:
        assert isinstance(mapped, Rejection)
        assert mapped.reason in (plain.reason, "not_json"), (mapped, plain)


@PROPERTY
@given(st.binary(max_size=2_000))
def test_any_bytes_decode_under_a_map_without_raising(payload: bytes) -> None:
    _assert_well_formed(Decoder(MAX_BYTES, fields=FieldMap(NESTED)).decode(payload))


@pytest.mark.parametrize(("start", "end", "latency"), [
    (1_800_000_000.25, 1_800_000_001.5, 1_250.0),  # epoch seconds (LiteLLM, Braintrust)
    ("2027-01-15T08:00:00Z", "2027-01-15T08:00:00.75+00:00", 750.0),  # RFC 3339 (LangSmith)
    ("1800000000000000000", "1800000000042000000", 42.0),  # OTel's nanoseconds, in strings
    # Mixed: milliseconds (2027-01-15T08:00:00Z), and an RFC 3339 time.
    (1_800_000_000_000, "2027-01-15T08:00:00.5Z", 500.0),
])
def test_a_latency_is_the_time_from_start_to_end_where_none_is_logged(
        start: Any, end: Any, latency: float) -> None:
    decoder = WireSettings(latency_from=("span.start", "span.end")).decoder(1 << 20)
    decoder._clock = lambda: NOW
    record = _decode(decoder, {"request_id": "a", "span": {"start": start, "end": end}})
    assert isinstance(record, Record)
    assert record.latency_ms == pytest.approx(latency, abs=1e-3)
    # A latency the record logs is its own; a missing time gives none.
    own = _decode(decoder, {"request_id": "a", "latency_ms": 9, "span": {"start": start,
                                                                         "end": end}})
    assert isinstance(own, Record) and own.latency_ms == 9
    for span in ({"start": start}, {"start": start, "end": None}, {}):
        alone = _decode(decoder, {"request_id": "a", "span": span})
        assert isinstance(alone, Record) and alone.latency_ms is None


@pytest.mark.parametrize(("span", "detail"), [
    ({"start": 1_800_000_001, "end": 1_800_000_000},
     "latency from `$.span.start` to `$.span.end` would be -1000.0 ms: the end is before the "
     "start"),
    ({"start": "yesterday", "end": 1_800_000_000},
     "Expected an epoch number or an RFC 3339 time, got 'yesterday' - at `$.span.start`"),
    ({"start": 1_800_000_000, "end": "2027-01-15T08:00:00"},
     "a time without an offset is ambiguous: write Z or +00:00, or set "
     "validation.naive_timestamps: utc - at `$.span.end`"),
    ({"start": 1_800_000_000, "end": "inf"},
     "Expected a finite epoch number or an RFC 3339 time - at `$.span.end`"),
    ({"start": True, "end": 1_800_000_000},
     "Expected a finite epoch number or an RFC 3339 time - at `$.span.start`"),
])
def test_a_latency_that_cannot_be_read_from_its_times_is_refused_at_their_path(
        span: dict[str, Any], detail: str) -> None:
    decoder = WireSettings(latency_from=("span.start", "span.end")).decoder(1 << 20)
    result = _decode(decoder, {"request_id": "a", "span": span})
    assert isinstance(result, Rejection) and result.reason == "invalid_field"
    assert result.detail == detail


def test_latency_from_follows_the_validation_settings() -> None:
    """A time without offset is read as UTC where validation says so; epoch numbers are read
    in the unit validation pins."""
    from consumers.settings import ValidationSettings

    wire = WireSettings(latency_from=("t0", "t1"))
    utc = wire.decoder(1 << 20, ValidationSettings(naive_timestamps="utc"))
    record = _decode(utc, {"request_id": "a", "t0": "2027-01-15T08:00:00",
                           "t1": "2027-01-15T08:00:02Z"})
    assert isinstance(record, Record) and record.latency_ms == 2_000.0
    pinned = wire.decoder(1 << 20, ValidationSettings(epoch_unit="ms"))
    record = _decode(pinned, {"request_id": "a", "t0": 1_000, "t1": 1_250})  # milliseconds
    assert isinstance(record, Record) and record.latency_ms == 250.0
    with pytest.raises(ValidationError, match=re.escape("'a..b' is not a key or a dotted path")):
        WireSettings(latency_from=("a..b", "c"))


def test_a_topic_of_its_own_producer_is_read_by_its_own_map() -> None:
    """A split deployment's halves written by two producers: requests as the wire names them
    (the section's settings), responses by a model server with names and a unit of its own."""
    wire = WireSettings(topics={"responses": {
        "fields": {"request_id": "id", "response": "output.text", "latency_ms": "took"},
        "latency_unit": "s"}})
    response = {"id": "r-1", "timestamp": 1_800_000_000_000,
                "output": {"text": "Paris."}, "took": 0.5}
    request = {"request_id": "r-1", "timestamp": 1_800_000_000_000, "prompt": "Capital?"}
    own, others, offline = (wire.decoder(1 << 20, topic=t)
                            for t in ("responses", "requests", None))
    for decoder in (own, others, offline):
        decoder._clock = lambda: NOW
    half = _decode(own, response)
    assert isinstance(half, Record)
    assert (half.request_id, half.response, half.latency_ms) == ("r-1", "Paris.", 500.0)
    # The other topic, and no topic (the offline verbs), read the wire's names.
    assert _decode(others, request) == _decode(offline, request)
    assert isinstance(_decode(others, request), Record)
    assert _decode(others, response) == Rejection(
        "missing_request_id", "Object missing required field `request_id`")
    # The map is the topic's alone: the wire's own name is not read there.
    refused = _decode(own, {**response, "request_id": "r-1", "id": None})
    assert isinstance(refused, Rejection) and refused.detail.endswith("at `$.id`"), refused


def test_a_key_with_dots_in_it_is_found_by_its_path() -> None:
    """Flattened logs and OpenTelemetry's attributes keep `gen_ai.request.model` as one key:
    a path finds it whole, inside nested objects too; a key as written is looked up first,
    then the longest joined one."""
    decoder = _decoder({"request_id": "span.id", "model": "attributes.gen_ai.request.model",
                        "route": "http.route", "prompt_tokens": "gen_ai.usage.input_tokens"})
    record = _decode(decoder, {
        "span": {"id": "s-1"}, "timestamp": 1_800_000_000, "http.route": "/chat",
        "attributes": {"gen_ai.request.model": "gpt-4o"},
        "gen_ai.usage": {"input_tokens": 12}, "gen_ai.usage.input_tokens": 99})
    assert isinstance(record, Record), record
    assert (record.request_id, record.model, record.route) == ("s-1", "gpt-4o", "/chat")
    assert record.prompt_tokens == 99  # the longest key there is
    nested = _decode(decoder, {"span": {"id": "s-2"}, "timestamp": 1_800_000_000, "attributes": {
        "gen_ai": {"request": {"model": "nested"}}, "gen_ai.request.model": "flat"}})
    assert isinstance(nested, Record) and nested.model == "nested"
    missing = _decode(decoder, {"span": {"id": "s-3"}, "timestamp": 1_800_000_000,
                                "attributes": {"gen_ai.request": "gpt-4o"}})
    assert isinstance(missing, Record) and missing.model is None
