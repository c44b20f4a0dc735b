"""Settings of the Kafka side (validated at the config edge by pydantic, composed by monitor)."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode

from consumers.decode import Decoder, EventTimeBounds
from consumers.field_map import WIRE_FIELDS, FieldMap, path_problem

# Every settings section: an unknown key refused, frozen, and no NaN or infinity in a number
# (NaN passes every bound: each comparison with it is false).
SECTION = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _broker_list(value: Any) -> Any:
    """Kafka's own `bootstrap.servers` is one comma-separated string, and that is what users
    copy: "kafka-1:9092,kafka-2:9092" is a list of two, in the file and in the environment
    (where a JSON list is read as well)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            pass  # not JSON: an IPv6 broker, "[::1]:9092", or a list of them
    return [part.strip() for part in text.split(",") if part.strip()]


# HOST, HOST:PORT or [IPv6]:PORT, with a listener's name before it if copied so
# (PLAINTEXT://kafka:9092): what kafka-python reads. Port 9092 when none is given.
_BROKER = re.compile(r"^(?:[A-Za-z_]+://)?(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+)(?::(\d{1,5}))?$")


def brokers_checked(brokers: list[str]) -> list[str]:
    """A broker kafka-python cannot parse (`kafka:abc`) passed the config and then failed in
    the daemon's connect thread at every try, for good."""
    for broker in brokers:
        match = _BROKER.match(broker)
        if match is None or not 0 < int(match.group(1) or 9092) < 65_536:
            raise ValueError(f"{broker!r} is not a broker's address: HOST:PORT (a port from 1 "
                             "to 65535), e.g. kafka-1:9092")
    return brokers


# NoDecode: the environment's value reaches _broker_list as it is, not parsed as JSON first.
Brokers = Annotated[list[str], NoDecode, BeforeValidator(_broker_list),
                    AfterValidator(brokers_checked),
                    Field(default=["127.0.0.1:9092"], min_length=1)]


# Kafka's own rule for a topic's name (a broker refuses any other; kafka-python only logs it).
TOPIC = r"^[A-Za-z0-9._-]{1,249}$"
Topic = Annotated[str, Field(pattern=TOPIC)]


def any_case(*choices: str, **aliases: str) -> BeforeValidator:
    """A validator that takes one of `choices` in any case (or an alias of one, `warn` for
    WARNING) as that choice; anything else is left for the Literal to refuse as written."""
    def pick(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        word = value.strip().upper()
        word = aliases.get(word, word)
        return word if word in choices else value
    return BeforeValidator(pick)


class KafkaSecretError(ValueError):
    """The SASL password is not where the config says; the message names the setting."""


class KafkaSecurity(BaseModel):
    """TLS and SASL, passed through to kafka-python. The SASL password comes from the
    environment or a file, never from the config file, and is never logged."""

    model_config = SECTION

    # In any case, as Kafka's own clients take security.protocol.
    protocol: Annotated[Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], any_case(
        "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")] = "PLAINTEXT"
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None  # client certificate, for mutual TLS
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    sasl_password_file: Path | None = None

    @model_validator(mode="after")
    def _complete(self) -> KafkaSecurity:
        if self.protocol.startswith("SASL"):
            if self.sasl_mechanism is None or not self.sasl_username:
                raise ValueError(f"protocol {self.protocol} needs sasl_mechanism and "
                                 "sasl_username")
            if (self.sasl_password_env is None) == (self.sasl_password_file is None):
                raise ValueError(f"protocol {self.protocol} needs exactly one of "
                                 "sasl_password_env or sasl_password_file")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "sasl_password_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {str(path)!r}: no such file")
        return self

    def client_options(self) -> dict[str, Any]:
        """kafka-python keyword arguments for every client driftwatch opens."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol in ("SSL", "SASL_SSL"):
            options |= {"ssl_check_hostname": self.ssl_check_hostname,
                        "ssl_cafile": _str(self.ssl_cafile),
                        "ssl_certfile": _str(self.ssl_certfile),
                        "ssl_keyfile": _str(self.ssl_keyfile)}
        if self.protocol.startswith("SASL"):
            options |= {"sasl_mechanism": self.sasl_mechanism,
                        "sasl_plain_username": self.sasl_username,
                        "sasl_plain_password": self._password()}
        return options

    def _password(self) -> str:
        if self.sasl_password_env is not None:
            value = os.environ.get(self.sasl_password_env)
            if not value:
                raise KafkaSecretError(f"kafka.security.sasl_password_env: the environment "
                                       f"variable {self.sasl_password_env} is not set")
            return value
        assert self.sasl_password_file is not None
        try:
            return self.sasl_password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise KafkaSecretError(f"kafka.security.sasl_password_file: cannot read "
                                   f"{self.sasl_password_file}: {exc.strerror}") from None


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


class KafkaClientSettings(BaseModel):
    """What a one-off client (`driftwatch reference build --topic`) takes from the config's
    `kafka` section: where the brokers are and how to reach them; the rest is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    bootstrap_servers: Brokers
    security: KafkaSecurity = KafkaSecurity()


class KafkaSettings(BaseModel):
    """The kafka section: brokers, group, topics, timeouts, limits and security."""

    model_config = SECTION

    bootstrap_servers: Brokers
    group_id: str = Field(default="driftwatch", min_length=1)
    client_id: str = Field(default="driftwatch", min_length=1)
    # Either one combined topic, or a request topic and a response topic joined by request_id.
    topic: Topic | None = None
    request_topic: Topic | None = None
    response_topic: Topic | None = None
    dead_letter_topic: Topic = "driftwatch-dead-letter"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100, le=60_000)
    # Also the rebalance timeout: Tansu joins a group in ~3 s at 10 s, ~23 s at Kafka's 300 s.
    max_poll_interval_ms: int = Field(default=10_000, ge=1_000, le=3_600_000)
    # kafka-python's default waits up to 30 s between reconnects after an outage.
    reconnect_backoff_max_ms: int = Field(default=5_000, ge=50, le=60_000)
    max_poll_records: int = Field(default=2_000, ge=1, le=100_000)
    # The longest the broker may hold a fetch that found nothing new. A broker may answer such
    # a fetch late when records arrive meanwhile (Tansu did, by up to 0.25 s at kafka-python's
    # 500 ms), and in a split deployment that delay is paid again by the decide stage. An idle
    # consumer sends about 1000 / fetch_max_wait_ms fetches a second.
    fetch_max_wait_ms: int = Field(default=100, ge=1, le=60_000)
    commit_interval_ms: int = Field(default=1_000, ge=0, le=60_000)
    max_message_bytes: int = Field(default=1_048_576, ge=64, le=100 * 1_048_576)
    # The largest dead letter written (value, key and headers); a larger original is cut to a
    # prefix, with its length and SHA-256 in headers. The broker's default limit is 1 MiB.
    dead_letter_max_bytes: int = Field(default=1_000_000, ge=4_096, le=100 * 1_048_576)
    # Failed dead-letter writes retried (with backoff) before the partition stops: its offset
    # cannot be committed until the letter is written.
    dead_letter_attempts: int = Field(default=5, ge=1, le=1_000)
    security: KafkaSecurity = KafkaSecurity()
    # A split deployment (`driftwatch run --stage score|decide`): the internal topic the score
    # stage writes, keyed by segment, and the consumer group of the decide stage reading it.
    scored_topic: Topic = "driftwatch-scored"
    decide_group_id: str | None = None  # None: "<group_id>-decide"

    @model_validator(mode="after")
    def _one_topic_layout(self) -> KafkaSettings:
        split = (self.request_topic, self.response_topic)
        if self.topic and any(split):
            raise ValueError(
                "set either kafka.topic (one combined topic) or kafka.request_topic and "
                "kafka.response_topic (joined by request_id), not both"
            )
        if not self.topic and not all(split):
            raise ValueError(
                "no input topic: set kafka.topic, or both kafka.request_topic and "
                "kafka.response_topic"
            )
        shared = shared_topic(self.topic_roles())
        if shared is not None:
            raise ValueError(shared)
        if self.decide_group_id == self.group_id:
            raise ValueError(
                f"kafka.decide_group_id and kafka.group_id are both {self.group_id!r}: the "
                "decide stage's group reads the scored topic, the score stage's the input; in "
                "one group they share one assignment, and the input's partitions go to no "
                "scoring process (unset decide_group_id for <group_id>-decide)")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                f"kafka.heartbeat_interval_ms={self.heartbeat_interval_ms} must be below "
                f"kafka.session_timeout_ms={self.session_timeout_ms}"
            )
        return self

    def topic_roles(self) -> list[tuple[str, str]]:
        """(setting, topic) of each topic the daemon reads or writes here."""
        return [(f"kafka.{name}", topic) for name in (
            "topic", "request_topic", "response_topic", "dead_letter_topic", "scored_topic")
            if (topic := getattr(self, name))]

    def client_options(self) -> dict[str, Any]:
        """kafka-python keyword arguments every client of these settings shares: brokers,
        client id, reconnect backoff and security (a missing secret raises here)."""
        return {"bootstrap_servers": self.bootstrap_servers, "client_id": self.client_id,
                "reconnect_backoff_max_ms": self.reconnect_backoff_max_ms,
                **self.security.client_options()}

    def for_decide(self, commit_interval_ms: int) -> KafkaSettings:
        """The settings of the decide stage's consumer: the scored topic, its own group."""
        return self.model_copy(update={
            "topic": self.scored_topic, "request_topic": None, "response_topic": None,
            "group_id": self.decide_group_id or f"{self.group_id}-decide",
            "commit_interval_ms": commit_interval_ms})

    @property
    def topics(self) -> tuple[str, ...]:
        if self.topic:
            return (self.topic,)
        return (self.request_topic or "", self.response_topic or "")


def shared_topic(roles: list[tuple[str, str]]) -> str | None:
    """Why two roles may not share a topic, naming the first two that do; None if none do."""
    seen: dict[str, str] = {}
    for setting, topic in roles:
        if topic in seen:
            if {seen[topic], setting} == {"kafka.request_topic", "kafka.response_topic"}:
                return (f"kafka.request_topic and kafka.response_topic are both {topic!r}: "
                        "whole records on one topic are kafka.topic")
            return (f"{seen[topic]} and {setting} are both {topic!r}: each needs a topic of "
                    "its own (what the daemon writes there it would read back: dead letters "
                    "dead-lettered again, without end)")
        seen[topic] = setting
    return None


class ValidationSettings(BaseModel):
    """What a record must hold beyond its types; a record outside is dead-lettered as
    invalid_field, so one broken clock cannot date decisions or stall cooldowns."""

    model_config = SECTION

    # Event times later than arrival by more than this are refused.
    max_future_seconds: float = Field(default=86_400.0, ge=0, le=10 * 365 * 86_400)
    # Event times before this are refused (a unit or clock error, not traffic).
    not_before: AwareDatetime = datetime(2000, 1, 1, tzinfo=UTC)
    # An RFC 3339 time without an offset ("2026-12-05T10:00:00", as Python's
    # datetime.utcnow().isoformat() writes it): refused, or read as UTC for a producer that
    # writes UTC so and cannot be changed. Never the host's zone.
    naive_timestamps: Literal["refuse", "utc"] = "refuse"
    # A number's unit: auto tells seconds (time.time()), milliseconds, microseconds and
    # nanoseconds apart by size (no time since 1973 is ambiguous); or one unit for all.
    epoch_unit: Literal["auto", "s", "ms", "us", "ns"] = "auto"

    def event_time_bounds(self) -> EventTimeBounds:
        return EventTimeBounds(self.max_future_seconds, self.not_before.timestamp(),
                               self.naive_timestamps == "utc", self.epoch_unit)


_OTLP: dict[str, Literal["json", "proto"]] = {"otlp_json": "json", "otlp_proto": "proto"}


class TopicWire(BaseModel):
    """How one producer writes a record: its field names, its latency's unit or times."""

    model_config = SECTION

    # The wire's field -> where the producer keeps it: a key or a dotted path (`id`,
    # `metadata.team`, `choices.0.message`). A mapped field is read from there only.
    fields: dict[str, str] = {}
    # The unit of the latency read (`latency_ms`, or where `fields` says it is).
    latency_unit: Literal["ms", "s"] = "ms"
    # [start, end]: where a producer that logs no latency keeps a request's start and end
    # times (epoch numbers or RFC 3339); their difference is its latency.
    latency_from: tuple[str, str] | None = None
    # json: one record a message, in the wire's names or `fields`. otlp_json, otlp_proto:
    # an OpenTelemetry Collector's traces (its Kafka exporter's encoding of that name), each
    # model call among their spans a record (`fields` paths into the span as read).
    format: Literal["json", "otlp_json", "otlp_proto"] = "json"

    @field_validator("fields")
    @classmethod
    def _known(cls, fields: dict[str, str]) -> dict[str, str]:
        for ours, path in fields.items():
            if ours not in WIRE_FIELDS:
                raise ValueError(f"{ours!r} is no field of the wire; one of "
                                 f"{', '.join(WIRE_FIELDS)}")
            if problem := path_problem(path):
                raise ValueError(f"{ours}: {path!r} is not {problem}")
        return fields

    @field_validator("latency_from")
    @classmethod
    def _paths(cls, paths: tuple[str, str] | None) -> tuple[str, str] | None:
        for path in paths or ():
            if problem := path_problem(path):
                raise ValueError(f"{path!r} is not {problem}")
        return paths

    @model_validator(mode="after")
    def _span_latency(self) -> TopicWire:
        if self.format != "json" and (self.latency_from or self.latency_unit != "ms"):
            raise ValueError(f"format {self.format}: a span's latency is its end less its "
                             "start (in ms); latency_from and latency_unit are for json records")
        return self

    def _decoder(self, max_message_bytes: int, validation: ValidationSettings | None) -> Decoder:
        return Decoder(max_message_bytes,
                       (validation or ValidationSettings()).event_time_bounds(),
                       fields=FieldMap(self.fields, self.latency_from),
                       latency_scale=1_000.0 if self.latency_unit == "s" else 1.0,
                       otlp=None if self.format == "json" else _OTLP[self.format])


class WireSettings(TopicWire):
    """A producer that names the wire's fields otherwise, or logs latency in seconds; and a
    topic whose producer writes otherwise than the rest (`topics`)."""

    # A topic -> its own settings, in place of those above (the request and response topics
    # of a split deployment are often written by two producers: a gateway and a model server).
    topics: dict[str, TopicWire] = {}

    def for_topic(self, topic: str | None) -> tuple[TopicWire, str]:
        """The settings a topic is read under (its own under `topics`, else the section's),
        and where they are set, for an error to name."""
        own = self.topics.get(topic) if topic is not None else None
        return (own, f"wire.topics.{topic}") if own is not None else (self, "wire")

    def decoder(self, max_message_bytes: int, validation: ValidationSettings | None = None,
                topic: str | None = None) -> Decoder:
        """How a message of `topic` becomes a record under these and the `validation`
        settings: the topic's own under `topics`, else the section's."""
        return self.for_topic(topic)[0]._decoder(max_message_bytes, validation)


class JoinSettings(BaseModel):
    """How long and how many halves wait for a partner, and what becomes of the rest."""

    model_config = SECTION

    window_seconds: float = Field(default=30.0, gt=0, le=3_600)
    max_pending: int = Field(default=100_000, ge=1, le=10_000_000)
    # The waiting halves' raw messages in all (memory is about twice this, with the decoded
    # records): long prompts waiting for responses must not outgrow the process.
    max_pending_bytes: int = Field(default=268_435_456, ge=1_048_576, le=1 << 40)
    # What happens to a half whose partner never came within the window.
    unmatched: Literal["score", "dead_letter"] = "score"


class BatchSettings(BaseModel):
    """Micro-batch size and wait, batches in flight, and the drain time at a stop."""

    model_config = SECTION

    max_records: int = Field(default=512, ge=1, le=100_000)
    # A decide stage's batches (`--stage decide`, and the deciding parent of `--workers N`):
    # its work is microseconds a record while each segment's detectors pay per call, so it
    # takes bigger batches than a stage that runs the models.
    decide_max_records: int = Field(default=4_096, ge=1, le=100_000)
    max_wait_ms: int = Field(default=200, ge=1, le=60_000)
    # Batches handed to the worker and not yet done; beyond this the source pauses partitions.
    max_in_flight: int = Field(default=8, ge=1, le=1_000)
    # On a stop: how long the batches in hand may take before the rest is cancelled (left
    # uncommitted, read again). Keep it, plus about 10 s, within the orchestrator's grace.
    drain_seconds: float = Field(default=20.0, ge=0, le=600)

    def for_decide(self) -> BatchSettings:
        """The decide stage's batch settings: `decide_max_records` a batch."""
        return self.model_copy(update={"max_records": self.decide_max_records})
