"""The scored-record format: what the score stage writes to the internal topic
(`kafka.scored_topic`) and the decide stage reads back, one scored record per input record.

A Kafka message carries the scored records of one batch that share a partition key, in batch
order, up to `MESSAGE_BYTES` a message: per message, not per record, is what the producer,
the broker and the decide stage's consumer pay for (in kafka-python, most of the cost of the
internal topic). A message is decided whole or not at all: its records never part between
two batches, so its offset is committed only when every one of them is decided.

Binary (msgpack, by msgspec), array-like and versioned: a message is `[version, [records]]`;
the version is read alone before anything else, so a message written by another version is
refused with an error naming both versions instead of being misread field by field.
Embeddings travel as float16 bytes (half the size; the drift tests work on unit vectors,
where float16 keeps about three significant digits). Texts are only the short excerpts that
drift explanations show, truncated as in the events, and of a record's novel numbers and names
the first few. With the wire format's bound on ids and labels (`MAX_FIELD_CHARS`) a scored
record stays far below `MESSAGE_BYTES` whatever its input held: one the producer refused as
too large could never be sent, and its input offsets never committed.

The message key is the record's partition key (`partition_key`): every record whose state
meets in one place (a drift segment; the canary gate's model) lands in one partition, so one
decide instance owns it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import msgspec
import numpy as np

from consumers.batcher import Batch
from consumers.decode import Rejection
from consumers.wire import Record
from detectors.operational import OperationalFeatures
from monitor.pipeline.model_scoring import BatchScores
from monitor.pipeline.stages import OperationalStage, Work
from monitor.types import EXAMPLE_TEXT_CHARS, IntakeCounts

FORMAT = 2  # 1: one record a message, each with its own version
MESSAGE_BYTES = 256 * 1024  # far below kafka-python's 1 MiB max_request_size
# Evidence kept of a record's novel numbers and names: the decide stage judges their flags,
# not the lists, and one long response can hold a hundred thousand of them.
NOVEL_KEPT = 16
_FEATURES = ("latency_seconds", "prompt_tokens", "completion_tokens", "cost_usd",
             "prompt_chars", "response_chars")


class ScoredFormatError(ValueError):
    """A scored record this version cannot read (another format version, or not one at all)."""


class _Version(msgspec.Struct, array_like=True):
    v: int


class ScoredRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One input record after the score stage: labels, features, model scores, vectors."""

    request_id: str
    event_time: float | None
    model: str | None
    model_version: str | None
    deployment: str | None
    route: str | None
    status: str | None
    error_type: str | None
    features: tuple[float, float, float, float, float, float]  # as _FEATURES, NaN: missing
    sampled: bool  # went through the models; the scores below are NaN otherwise
    toxicity: float
    prompt_toxicity: float
    groundedness: float
    flags: dict[str, bool]
    # The first NOVEL_KEPT of each, cut as the texts are (a record's size stays bounded).
    novel_numbers: tuple[str, ...] = ()
    novel_names: tuple[str, ...] = ()
    prompt_embedding: bytes | None = None  # float16, little-endian
    response_embedding: bytes | None = None
    prompt_text: str | None = None  # of a chat, its last user message (Record.user_prompt)
    response_text: str | None = None
    # Input messages dead-lettered since the score stage's previous batch, on the batch's
    # first record: what the decide stage's dead-letter rules judge (as the single process's
    # rules judge the dead letters read since its previous batch).
    dead_letters_before: int = 0
    # Prompt and completion tokens counted by the tokenization scorer (NaN: no text); last,
    # so records written without it still decode.
    counted_tokens: tuple[float, float] | None = None
    # The name of the embeddings' vectors (`vectors_name`: model, backend, static table), on
    # a record that carries them: a decide stage compares only its own (None: written before
    # this field, read as they are).
    vectors: str | None = None


class _Message(msgspec.Struct, array_like=True):
    v: int
    records: list[ScoredRecord]


class _Packed(msgspec.Struct, array_like=True):
    """A message as written: its records encoded once each (to size it), then packed."""

    v: int
    records: list[msgspec.Raw]


class Message(NamedTuple):
    """A message for the scored topic: its key, its value, and how many records it carries."""

    key: bytes
    value: bytes
    records: int


_encoder = msgspec.msgpack.Encoder()
_version = msgspec.msgpack.Decoder(_Version)
_decoder = msgspec.msgpack.Decoder(_Message)


def partition_key(labels: Sequence[str], canary: bool) -> tuple[str, ...]:
    """The raw labels whose values key the internal topic. Drift and rules keep state per
    segment (the configured labels), the canary gate per model: the key must be no finer than
    either. With `model` among the labels the model alone is that key; without it a canary
    gate ties every segment together (one key), and without a gate the segment is the key."""
    if "model" in labels:
        return ("model",)
    if canary:
        return ()
    return tuple(labels)


def key_of(record: ScoredRecord, key_labels: tuple[str, ...]) -> bytes:
    return "\x1f".join(getattr(record, name) or "" for name in key_labels).encode()


def encode_batch(records: Sequence[Record], features: OperationalFeatures,
                 scores: BatchScores | None, dead_letters: int = 0,
                 token_counts: dict[str, np.ndarray] | None = None,
                 vectors: str | None = None) -> list[ScoredRecord]:
    """The scored records of one batch, in its order; `dead_letters` (read since the previous
    batch) ride on the first, `vectors` (the embeddings' name) on each that has embeddings.
    Columns become Python values once per batch, not once per record and field: this runs
    for every record the score stage reads."""
    n = len(records)
    columns = np.column_stack([getattr(features, name) for name in _FEATURES]) \
        .astype(np.float64).tolist()
    counts: list[tuple[float, float] | None] = [None] * n if token_counts is None else list(
        zip(token_counts["prompt"].tolist(), token_counts["completion"].tolist(), strict=True))
    if scores is None:  # not model-scored: NaN scores, no flags, no vectors
        sampled, rows = [False] * n, [-1] * n
        toxicity = prompt_toxicity = groundedness = [float("nan")] * n
        names: list[str] = []
        flags: list[tuple[bool, ...]] = [()] * n
        novel_numbers: Sequence[tuple[str, ...]] = [()] * n
        novel_names: Sequence[tuple[str, ...]] = novel_numbers
        prompt_blobs = response_blobs = None
    else:
        sampled = scores.sampled.tolist()
        rows = (np.cumsum(scores.sampled) - 1).tolist()  # embedding row of each sampled record
        toxicity, prompt_toxicity = scores.toxicity.tolist(), scores.prompt_toxicity.tolist()
        groundedness = scores.groundedness.tolist()
        names = list(scores.flags)
        flags = list(zip(*(v.tolist() for v in scores.flags.values()), strict=True)) \
            if names else [()] * n
        novel_numbers, novel_names = scores.novel_numbers, scores.novel_names
        prompt_blobs = _rows_as_float16(scores.prompt_embeddings)
        response_blobs = _rows_as_float16(scores.response_embeddings)
    out = []
    named = vectors if prompt_blobs is not None or response_blobs is not None else None
    for i, r in enumerate(records):
        row = rows[i] if sampled[i] else -1
        out.append(ScoredRecord(
            r.request_id, r.event_time, r.model, r.model_version, r.deployment,
            r.route, r.status, r.error_type, tuple(columns[i]), sampled[i],
            toxicity[i], prompt_toxicity[i], groundedness[i],
            dict(zip(names, flags[i], strict=True)),
            _kept(novel_numbers[i]), _kept(novel_names[i]),
            None if row < 0 or prompt_blobs is None else prompt_blobs[row],
            None if row < 0 or response_blobs is None else response_blobs[row],
            _cut(r.user_prompt), _cut(r.response), dead_letters if i == 0 else 0, counts[i],
            None if row < 0 else named))
    return out


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:EXAMPLE_TEXT_CHARS]


def _kept(found: tuple[str, ...]) -> tuple[str, ...]:
    if len(found) <= NOVEL_KEPT and all(len(x) <= EXAMPLE_TEXT_CHARS for x in found):
        return found
    return tuple(x[:EXAMPLE_TEXT_CHARS] for x in found[:NOVEL_KEPT])


def _rows_as_float16(vectors: np.ndarray | None) -> list[bytes] | None:
    """Each row as little-endian float16 bytes (one conversion for the whole batch)."""
    if vectors is None:
        return None
    return [row.tobytes() for row in np.ascontiguousarray(vectors, dtype="<f2")]


def messages(records: Sequence[ScoredRecord], key_labels: tuple[str, ...],
             max_bytes: int = MESSAGE_BYTES) -> list[Message]:
    """The messages of a batch's records: each key's records in batch order, in as few
    messages as `max_bytes` allows (a record larger than that travels alone)."""
    by_key: dict[bytes, list[bytes]] = {}
    for r in records:
        by_key.setdefault(key_of(r, key_labels), []).append(_encoder.encode(r))
    out = []
    for key, encoded in by_key.items():
        chunk: list[msgspec.Raw] = []
        size = 0
        for value in encoded:
            if chunk and size + len(value) > max_bytes:
                out.append(Message(key, _encoder.encode(_Packed(FORMAT, chunk)), len(chunk)))
                chunk, size = [], 0
            chunk.append(msgspec.Raw(value))
            size += len(value)
        out.append(Message(key, _encoder.encode(_Packed(FORMAT, chunk)), len(chunk)))
    return out


def encode(records: Sequence[ScoredRecord]) -> bytes:
    """One message of these records, whatever their keys (see `messages`)."""
    return _encoder.encode(_Message(FORMAT, list(records)))


def decode(value: bytes | None) -> list[ScoredRecord]:
    """A message's scored records; ScoredFormatError when it is not one this version reads."""
    if not value:
        raise ScoredFormatError("an empty message is not a scored-records message")
    try:
        version = _version.decode(value).v
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ScoredFormatError(f"not a driftwatch scored-records message: {exc}") from None
    if version != FORMAT:
        raise ScoredFormatError(
            f"scored record format {version}; this driftwatch reads format {FORMAT} only. "
            "Run the score and decide stages at one version (drain the scored topic first "
            "when upgrading)")
    try:
        records = _decoder.decode(value).records
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ScoredFormatError(f"a format-{FORMAT} scored-records message that does not "
                                f"decode: {exc}") from None
    if not records:  # nothing would ever finish its offset
        raise ScoredFormatError("a scored-records message without records")
    return records


def as_record(s: ScoredRecord) -> Record:
    """The wire record the decide stage's rules and drift explanations see (texts cut)."""
    return Record(request_id=s.request_id,
                  timestamp=None if s.event_time is None else s.event_time * 1000.0,
                  model=s.model, model_version=s.model_version,
                  deployment=s.deployment,
                  route=s.route, prompt=s.prompt_text, response=s.response_text,
                  status=s.status, error_type=s.error_type)


def decode_batch(scored: Sequence[ScoredRecord]) -> tuple[OperationalFeatures, BatchScores]:
    """The features and model scores of a batch of scored records, as the score stage had
    them (embeddings back in float32, rows for the sampled records only)."""
    n = len(scored)
    table = np.array([s.features for s in scored], dtype=np.float64).reshape(n, 6)
    features = OperationalFeatures(*(table[:, j] for j in range(6)))
    sampled = np.array([s.sampled for s in scored], dtype=bool)
    names = sorted({k for s in scored for k in s.flags})
    flags = {k: np.array([s.flags.get(k, False) for s in scored], dtype=bool) for k in names}

    def vectors(field: str) -> np.ndarray | None:
        blobs = [getattr(s, field) for s in scored if s.sampled]
        if not blobs or any(b is None for b in blobs):
            return None
        return np.frombuffer(b"".join(blobs), dtype="<f2").reshape(len(blobs), -1) \
            .astype(np.float32)

    scores = BatchScores(
        sampled, np.array([s.toxicity for s in scored], dtype=np.float64),
        np.array([s.prompt_toxicity for s in scored], dtype=np.float64),
        np.array([s.groundedness for s in scored], dtype=np.float64), flags,
        [s.novel_numbers for s in scored], [s.novel_names for s in scored],
        vectors("prompt_embedding"), vectors("response_embedding"))
    return features, scores


def beginner(intake: IntakeCounts) -> Callable[[OperationalStage, Batch, bool], Work]:
    """How a decide task starts its `Work` from a batch of scored records (see `Pipeline`'s
    `begin`), counting into `intake` the input messages and dead letters they stand for."""

    def begin(operational: OperationalStage, batch: Batch, stateful: bool) -> Work:
        scored: list[ScoredRecord] = batch.records  # type: ignore[assignment]
        records = [as_record(s) for s in scored]
        features, scores = decode_batch(scored)
        times = np.array([np.nan if s.event_time is None else s.event_time for s in scored])
        if stateful:  # a replay's dead letters are in the checkpointed rule state already
            dead = sum(s.dead_letters_before for s in scored)
            intake.dead_letters += dead
            intake.messages += len(scored) + dead
        counts = None
        if scored and all(s.counted_tokens is not None for s in scored):
            pairs = np.array([s.counted_tokens for s in scored], dtype=np.float64)
            counts = {"prompt": pairs[:, 0], "completion": pairs[:, 1]}
        return Work(operational.scored(records, features), batch.origins, times, stateful,
                    scores=scores, token_counts=counts)

    return begin


class ScoredDecoder:
    """The decide stage's message decoder: a message's scored records, or a dead letter that
    says why not (`scored_format`), never a misread one. With `vectors` (the decide stage's
    own `vectors_name`), a message whose embeddings another model made is refused too: its
    vectors would be compared with references of another space (and, of the same dimension,
    silently), as during a rolling change of `scoring.embedding`."""

    def __init__(self, vectors: str | None = None) -> None:
        self.vectors = vectors

    def decode(self, value: bytes | None) -> list[ScoredRecord] | Rejection:
        try:
            records = decode(value)
        except ScoredFormatError as exc:
            return Rejection("scored_format", str(exc)[:300])
        if self.vectors is not None:
            for r in records:
                if r.vectors is not None and r.vectors != self.vectors:
                    return Rejection("scored_format", (
                        f"embeddings of {r.vectors!r}; this decide stage compares "
                        f"{self.vectors!r} (scoring.embedding): run both stages with one "
                        "embedding setting, and replay these from the dead-letter topic")[:300])
        return records
