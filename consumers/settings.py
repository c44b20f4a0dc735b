"""Settings of the Kafka side (validated at the config edge by pydantic, composed by monitor)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class KafkaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: list[str] = Field(default=["127.0.0.1:9092"], min_length=1)
    group_id: str = Field(default="driftwatch", min_length=1)
    client_id: str = Field(default="driftwatch", min_length=1)
    # Either one combined topic, or a request topic and a response topic joined by request_id.
    topic: str | None = None
    request_topic: str | None = None
    response_topic: str | None = None
    dead_letter_topic: str = Field(default="driftwatch-dead-letter", min_length=1)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100, le=60_000)
    # Also the rebalance timeout: Tansu joins a group in ~3 s at 10 s, ~23 s at Kafka's 300 s.
    max_poll_interval_ms: int = Field(default=10_000, ge=1_000, le=3_600_000)
    max_poll_records: int = Field(default=2_000, ge=1, le=100_000)
    commit_interval_ms: int = Field(default=1_000, ge=0, le=60_000)
    max_message_bytes: int = Field(default=1_048_576, ge=64, le=100 * 1_048_576)

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
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                f"kafka.heartbeat_interval_ms={self.heartbeat_interval_ms} must be below "
                f"kafka.session_timeout_ms={self.session_timeout_ms}"
            )
        return self

    @property
    def topics(self) -> tuple[str, ...]:
        if self.topic:
            return (self.topic,)
        return (self.request_topic or "", self.response_topic or "")


class JoinSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    window_seconds: float = Field(default=30.0, gt=0, le=3_600)
    max_pending: int = Field(default=100_000, ge=1, le=10_000_000)
    # What happens to a half whose partner never came within the window.
    unmatched: Literal["score", "dead_letter"] = "score"


class BatchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_records: int = Field(default=512, ge=1, le=100_000)
    max_wait_ms: int = Field(default=200, ge=1, le=60_000)
    # Batches handed to the worker and not yet done; beyond this the source pauses partitions.
    max_in_flight: int = Field(default=8, ge=1, le=1_000)
