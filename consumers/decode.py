"""Bytes from Kafka to a validated Record, or a dead-letter reason; never an exception.

Every rejection names one of REASONS, which becomes the `reason` header on the
dead-letter topic and the `reason` label of driftwatch_dead_letter_total.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from consumers import otlp
from consumers.api_bodies import (
    ChatMessage,
    ContentPart,
    RequestObject,
    ResponseObject,
    response_text,
)
from consumers.field_map import FieldMap, at, present
from consumers.wire import Record

REASONS: tuple[str, ...] = (
    "empty",
    "oversized",
    "not_utf8",
    "not_json",
    "not_object",
    "missing_request_id",
    "invalid_field",
    "too_deep",
    "unmatched_request",
    "unmatched_response",
    "processing_error",
    "scored_format",  # on the internal scored topic: not a record this version reads
    "not_protobuf",  # wire.format otlp_proto: no OTLP traces request in protobuf
)
_DETAIL_LIMIT = 300
_WIRE_NAMES = FieldMap({})  # an OTLP span's fields as read, under no map
# msgspec builds (or skips) nested values recursively; past this it raises RecursionError.
MAX_DEPTH_NOTE = "about 1,000 levels"
# An escaped high surrogate not followed by a low one, or a low one on its own.
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}")
# C0 and C1 controls, DEL included: in an id or a label (logged, printed by `driftwatch
# events`, shown on dashboards) a line break forges a log line and an escape sequence
# rewrites an on-call engineer's terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LABELS = ("request_id", "model", "model_version", "deployment", "route", "status",
           "error_type")
# 2000-01-01T00:00:00Z: older event times are clock or unit errors, not traffic.
NOT_BEFORE = 946_684_800.0
# An epoch number's unit, and what one of it is in milliseconds (the Record's).
EPOCH_UNITS: dict[str, float] = {"s": 1e3, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
# `auto`: a number below a bound is in that unit. Seconds reach 1e11 in the year 5138 and
# milliseconds only pass it in 1973 (so for microseconds at 1e14 and nanoseconds at 1e17):
# for any event time since 1973 the magnitudes cannot be confused.
_BY_MAGNITUDE = ((1e11, "s"), (1e14, "ms"), (1e17, "us"))


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message is dead-lettered: a reason (one of REASONS) and a detail."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class EventTimeBounds:
    """The event times a record may carry: from `not_before` (epoch seconds) to
    `max_future_seconds` after its arrival. Outside, the record is `invalid_field`: a time
    from a broken clock would date decisions wrongly and stall cooldowns."""

    max_future_seconds: float = 86_400.0
    not_before: float = NOT_BEFORE
    naive_utc: bool = False  # an RFC 3339 time without an offset: read as UTC, or refused
    epoch_unit: str = "auto"  # a number's unit: one of EPOCH_UNITS, or auto (by magnitude)

    def unit_of(self, number: float) -> str:
        """The unit an epoch number is read in."""
        if self.epoch_unit != "auto":
            return self.epoch_unit
        size = abs(number)
        for bound, unit in _BY_MAGNITUDE:
            if size < bound:
                return unit
        return "ns"

    def problem(self, t: float, now: float) -> str | None:
        if t != t:  # NaN: a string "nan" decodes to it
            return "event time is not a number"
        if abs(t) == _INF:  # "inf", "-Infinity"
            return "event time is not a finite number"
        if t < self.not_before:
            return f"event time {_shown(t)} (epoch s) is before not_before={self.not_before:.0f}"
        if t > now + self.max_future_seconds:
            return (f"event time {_shown(t)} (epoch s) is {_shown(t - now)}s after arrival; "
                    f"max_future_seconds={self.max_future_seconds:g}")
        return None


def _shown(t: float) -> str:
    """A time as a detail shows it: whole, or in exponent form past any calendar (1e308
    would print 309 digits)."""
    return f"{t:.0f}" if abs(t) < 1e21 else f"{t:.6g}"


class Decoder:
    """Decodes one message value at a time with a reusable msgspec decoder (the hot path)."""

    def __init__(self, max_message_bytes: int, event_time: EventTimeBounds | None = None,
                 clock: Callable[[], float] = time.time, fields: FieldMap | None = None,
                 latency_scale: float = 1.0, otlp: Literal["json", "proto"] | None = None
                 ) -> None:
        """`fields`: where the producer keeps the wire's fields (`wire.fields`); None or an
        empty map reads the wire's own names on the fast path. `latency_scale`: what one of
        the producer's latency unit is in milliseconds (`wire.latency_unit`). `otlp`: a
        message is an OTLP traces request in that encoding, its model calls the records
        (`wire.format`)."""
        self._otlp = otlp
        self.max_message_bytes = max_message_bytes
        self.event_time = event_time or EventTimeBounds()
        self._clock = clock
        self._fields = fields or None
        self._latency_scale = latency_scale
        # Lax: a number written as a string ("123", as protobuf's JSON writes every int64
        # and some log shippers every field) is read as the number; an epoch time too.
        # Strings stay strings, and a string that is no number is refused.
        self._json = msgspec.json.Decoder(Record, strict=False)

    def decode(self, value: bytes | None) -> Record | list[Record] | Rejection:
        if not value or value.isspace():
            return Rejection("empty", "message value is empty, whitespace or null")
        if len(value) > self.max_message_bytes:
            return Rejection(
                "oversized", f"{len(value)} bytes > max_message_bytes={self.max_message_bytes}"
            )
        if self._otlp == "proto":  # binary: its strings are checked by protobuf
            return self._calls(value)
        # msgspec only checks UTF-8 inside fields it reads; unknown fields must be valid too.
        # ASCII is valid UTF-8 and checking it is ~10x cheaper than decoding a copy.
        if not value.isascii():
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as exc:
                return Rejection("not_utf8", str(exc)[:_DETAIL_LIMIT])
            if value.startswith(_BOM):  # a Windows editor's; RFC 8259 lets a reader ignore it
                value = value[len(_BOM):]
        if self._otlp is not None:
            return self._calls(value)
        result = self._read(value)
        if self._fields is not None and type(result) is Rejection:
            return Rejection(result.reason, self._fields.producers_path(result.detail))
        return result

    def _read(self, value: bytes) -> Record | Rejection:
        obj = None
        try:
            if self._fields is None:
                record = self._json.decode(value)
            else:
                obj = msgspec.json.decode(value)
                record = self._fields.convert(obj)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError,
                ValueError) as exc:
            return _unread(value, exc)
        if self._latency_scale != 1.0 and record.latency_ms is not None:
            record = msgspec.structs.replace(
                record, latency_ms=record.latency_ms * self._latency_scale)
        if obj is not None and record.latency_ms is None:
            latency = self._latency_between(obj)
            if type(latency) is Rejection:
                return latency
            if latency is not None:
                record = msgspec.structs.replace(record, latency_ms=latency)
        return self._checked(record)

    def _calls(self, value: bytes) -> list[Record] | Rejection:
        """The model calls among an OTLP traces message's spans (`wire.format: otlp_*`),
        each read and checked as a record; the message is refused whole, naming the span,
        where one of them is (a message is dead-lettered or scored, never split)."""
        try:
            message = (otlp.from_proto(value) if self._otlp == "proto"
                       else msgspec.json.decode(value))
            calls = list(otlp.calls(message))
        except otlp.NotTraces as exc:
            return Rejection(exc.reason, str(exc))
        except (msgspec.DecodeError, RecursionError, ValueError) as exc:
            return _unread(value, exc)
        except (TypeError, KeyError, AttributeError, ArithmeticError) as exc:
            # A shape the spans' reading did not foresee: this message dead-lettered, saying
            # what, rather than the consumer stopped on it.
            return Rejection("invalid_field", f"an OTLP message this decoder cannot read: "
                             f"{type(exc).__name__}: {exc}"[:_DETAIL_LIMIT])
        fields = self._fields or _WIRE_NAMES
        records: list[Record] = []
        for where, span in calls:
            try:
                result = self._checked(fields.convert(span))
            except (msgspec.ValidationError, RecursionError, ValueError) as exc:
                result = _unread(value, exc)
            if type(result) is Rejection:
                detail = fields.producers_path(result.detail)
                return Rejection(result.reason, f"{otlp.call_at(where, span)}: "
                                 f"{detail}"[:_DETAIL_LIMIT])
            records.append(result)
        return records

    def _latency_between(self, obj: dict[str, Any]) -> float | Rejection | None:
        """Milliseconds from the producer's start time to its end time (`wire.latency_from`),
        where the record logs no latency and both times are there."""
        assert self._fields is not None
        if self._fields.latency_paths is None:
            return None
        times: list[float] = []
        for path, keys in self._fields.latency_paths:
            value = at(obj, keys)
            if not present(value):
                return None
            read = self._epoch_seconds(value, path)
            if type(read) is Rejection:
                return read
            times.append(read)
        (start, _), (end, _) = self._fields.latency_paths
        if times[1] < times[0]:
            return Rejection("invalid_field", f"latency from `$.{start}` to `$.{end}` would be "
                             f"{(times[1] - times[0]) * 1e3:.1f} ms: the end is before the start")
        return (times[1] - times[0]) * 1e3

    def _epoch_seconds(self, value: Any, path: str) -> float | Rejection:
        """A time the producer logged, in epoch seconds: read as the wire's `timestamp` is (an
        epoch number, in a string too, in the unit `validation.epoch_unit` says, or an RFC 3339
        string), by the same msgspec conversion."""
        try:
            read = msgspec.convert(value, float | datetime, strict=False)
        except msgspec.ValidationError:
            if type(value) is str:
                return Rejection("invalid_field", "Expected an epoch number or an RFC 3339 "
                                 f"time, got {value[:40]!r} - at `$.{path}`")
            read = None
        if type(read) is datetime:
            if read.tzinfo is None:
                if not self.event_time.naive_utc:
                    return Rejection("invalid_field", "a time without an offset is ambiguous: "
                                     "write Z or +00:00, or set validation.naive_timestamps: "
                                     f"utc - at `$.{path}`")
                read = read.replace(tzinfo=UTC)
            return read.timestamp()
        if read is None or not abs(read) < _INF:
            return Rejection("invalid_field", f"Expected a finite epoch number or an RFC 3339 "
                             f"time - at `$.{path}`")
        return read * EPOCH_UNITS[self.event_time.unit_of(read)] / 1e3

    def _checked(self, record: Record) -> Record | Rejection:
        """What the type cannot say: an id given as a number written as its string, no control
        character in an id or label, passages and a response object read as their text,
        event time in range, token counts whole numbers."""
        if type(record.request_id) is int:
            if not -_ID_NUMBER < record.request_id < _ID_NUMBER:
                return Rejection("invalid_field", "Expected an id of at most 20 digits, got a "
                                 "longer number - at `$.request_id`")
            record = msgspec.structs.replace(record, request_id=str(record.request_id))
        if type(record.prompt) is RequestObject:
            read = _request_read(record, record.prompt)
            if read is None:
                return Rejection("invalid_field", _REQUEST_SHAPE)
            record = read
        if record.response is not None and type(record.response) is not str:
            read = _response_read(record, record.response)
            if read is None:
                return Rejection("invalid_field", _RESPONSE_SHAPE)
            record = read
        # str.isprintable at C speed first (0.2 us a record); it is False for some spaces
        # too (U+00A0), so a False is looked at closer.
        r = record
        if not (r.request_id.isprintable() and (r.model is None or r.model.isprintable())
                and (r.model_version is None or r.model_version.isprintable())
                and (r.deployment is None or r.deployment.isprintable())
                and (r.route is None or r.route.isprintable())
                and (r.status is None or r.status.isprintable())
                and (r.error_type is None or r.error_type.isprintable())):
            for name in _LABELS:
                value = getattr(record, name)
                if value is not None and (bad := _CONTROL.search(value)):
                    return Rejection("invalid_field", f"control character {bad.group()!r} at "
                                     f"character {bad.start()}: ids and labels are printed in "
                                     f"logs and events - at `$.{name}`")
        context = r.context
        if type(context) is str:
            record = msgspec.structs.replace(record, context=[context])
        elif context is not None:
            for passage in context:  # a loop, not all(): a generator costs more than a list
                if type(passage) is not str:
                    texts = [p if type(p) is str else p.passage_text for p in context]
                    if None in texts:
                        return Rejection("invalid_field", f"{_PASSAGE} - at `$.context"
                                         f"[{texts.index(None)}]`")
                    record = msgspec.structs.replace(record, context=texts)
                    break
        if r.latency_ms == _INF or r.cost_usd == _INF:  # a string "inf" decodes to it
            return Rejection("invalid_field", "Expected a finite number, got inf - at "
                             f"`$.{'latency_ms' if r.latency_ms == _INF else 'cost_usd'}`")
        ts = record.timestamp
        if type(ts) is datetime and ts.tzinfo is None:
            if not self.event_time.naive_utc:
                return Rejection("invalid_field", _NAIVE)
            record = msgspec.structs.replace(record, timestamp=ts.replace(tzinfo=UTC))
        number = ts if type(ts) is float else None
        if number is not None and (unit := self.event_time.unit_of(number)) != "ms":
            record = msgspec.structs.replace(record, timestamp=number * EPOCH_UNITS[unit])
        t = record.event_time
        if t is not None and (problem := self.event_time.problem(t, self._clock())):
            if number is not None and abs(number) < _INF:  # NaN and inf have no unit
                problem += self._unit_hint(number)
            return Rejection("invalid_field", f"{problem} - at `$.timestamp`")
        p, c = record.prompt_tokens, record.completion_tokens
        if type(p) is float or type(c) is float:  # 1000.0 is a count, 1000.5 is not
            fixed: dict[str, int] = {}
            for name, n in (("prompt_tokens", p), ("completion_tokens", c)):
                if type(n) is float:
                    if not n.is_integer():
                        return Rejection("invalid_field", f"Expected a whole number, got {n!r} "
                                         f"- at `$.{name}`")
                    fixed[name] = int(n)
            record = msgspec.structs.replace(record, **fixed)
        return record

    def _unit_hint(self, number: float) -> str:
        """What unit a number was read in, and, where another unit lands it in range (a
        producer writing `time.time()` seconds under `validation.epoch_unit: ms`), that one."""
        bounds = self.event_time
        read = _UNIT_NAMES[bounds.unit_of(number)]
        if bounds.epoch_unit == "auto":
            return f"; {_shown(number)} was read as epoch {read} by its size"
        now = self._clock()
        for unit, scale in EPOCH_UNITS.items():
            seconds = number * scale / 1e3
            if unit != bounds.epoch_unit and bounds.problem(seconds, now) is None:
                when = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
                return (f"; a number is epoch {read} (validation.epoch_unit: "
                        f"{bounds.epoch_unit}), and {_shown(number)} looks like epoch "
                        f"{_UNIT_NAMES[unit]} ({when.replace('+00:00', 'Z')})")
        return ""


_INF = float("inf")
_BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark
_ID_NUMBER = 10**20  # a 64-bit id has at most 20 digits
_NAIVE = ("a time without an offset is ambiguous (RFC 3339 requires one): write Z or "
          "+00:00 (Python: datetime.now(timezone.utc).isoformat()), or set "
          "validation.naive_timestamps: utc to read such times as UTC - at `$.timestamp`")


def _request_read(record: Record, request: RequestObject) -> Record | None:
    """The record with its request body read into its prompt, system prompt and model (where
    the record gives none of its own); None when the body holds no prompt. A string prompt
    beside the body's system prompt becomes a user message, so that one is read too."""
    chat = request.chat
    if chat is None:
        return None
    system = request.system_prompt
    if system is None:
        system = record.system
    elif isinstance(chat, str):
        chat = [ChatMessage("user", chat)]
    model = record.model if record.model is not None else request.model
    return msgspec.structs.replace(record, prompt=chat, system=system, model=model)


def _response_read(record: Record, response: ResponseObject | list[ContentPart]
                   ) -> Record | None:
    """The record with its response object read as its text, and what the object says of
    itself (model, token counts, latency) where the record gives none of its own; None when
    the object holds no response."""
    text = response_text(response)
    if text is None:
        return None
    changes: dict[str, Any] = {"response": text}
    if type(response) is ResponseObject:
        changes.update((name, value) for name, value in response.facts().items()
                       if getattr(record, name) is None)
    return msgspec.structs.replace(record, **changes)


_REQUEST_SHAPE = ("a request object carries its prompt in `messages`, `input`, `contents` "
                  "(Gemini) or `prompt`; none is here - at `$.prompt`")
_PASSAGE = ("a passage object carries its text in `page_content` (LangChain), `text`, "
            "`content` or `node` (LlamaIndex); none is here")
_RESPONSE_SHAPE = ("a response object carries its text in `content` (an assistant message), "
                   "`choices` (a chat completion: the first choice's `message` or `text`), "
                   "`message`, `output` (a Responses API or Bedrock Converse response), "
                   "`candidates` (Gemini), `generated_text` or `response` (Ollama's "
                   "generate), a failed request's body its "
                   "`error`; none is here, or it is a stream's chunk - at `$.response`")


def each(decoded: Record | list[Record] | Rejection) -> Sequence[Record | Rejection]:
    """What one message decoded to, one by one: a record or a rejection alone, or the
    records of a message that holds several (an OTLP traces message's model calls)."""
    return decoded if type(decoded) is list else (decoded,)  # type: ignore[return-value]


def _unread(value: bytes, exc: Exception) -> Rejection:
    """Why a message could not be read as a record."""
    if isinstance(exc, msgspec.ValidationError):
        return _classify(str(exc))
    if isinstance(exc, msgspec.DecodeError):
        return Rejection("not_json", _json_problem(value, str(exc)))
    if isinstance(exc, RecursionError):
        return Rejection("too_deep", f"nested deeper than the decoder allows "
                         f"({MAX_DEPTH_NOTE}); unknown fields are skipped, but they are "
                         "parsed, so the limit holds for them too")
    return Rejection("not_json", f"{type(exc).__name__}: {exc}"[:_DETAIL_LIMIT])


def _json_problem(value: bytes, message: str) -> str:
    # msgspec reports an unpaired surrogate escape as "Input data was truncated".
    lone = _LONE_SURROGATE.search(value)
    if lone is not None:
        return (f"unpaired UTF-16 surrogate escape {lone.group().decode()} at byte "
                f"{lone.start()}: JSON strings must be valid Unicode")
    return message[:_DETAIL_LIMIT]


def _classify(message: str) -> Rejection:
    detail = message[:_DETAIL_LIMIT]
    # msgspec names the path of a nested error ("- at `$.prompt[0]`"); a top-level one has none.
    top_level = " - at `$" not in message
    if top_level and message.startswith("Expected `object`"):
        return Rejection("not_object", detail)
    # Missing: absent, null or empty. One of another type (a number) or too long is there,
    # and wrong: invalid_field, as for any other field.
    if message in ("Object missing required field `request_id`",
                   "Expected `int | str`, got `null` - at `$.request_id`",
                   "Expected `str` of length >= 1 - at `$.request_id`"):
        return Rejection("missing_request_id", detail)
    return Rejection("invalid_field", detail)
