"""`driftwatch reference`: build a reference snapshot from recorded traffic, list them, or
ask a running daemon to roll its reference over.

The records go through the same decoder and model stage as the daemon, so the snapshot
holds exactly what the detectors will compare live traffic with.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from consumers.decode import Rejection, each
from consumers.wire import Record
from monitor.acting import bounded_post
from monitor.app.wiring import OFFLINE_BATCH, bounded_lines, offline_decoder
from monitor.config import OfflineConfig
from monitor.pipeline.drift import feature_columns, outcome
from monitor.pipeline.model_scoring import ModelScorers
from monitor.pipeline.reference import ReferenceMeta, ReferenceStore
from monitor.pipeline.stages import operational_features


class ReferenceInputError(ValueError):
    """Nothing to build a reference from (no valid record, no such topic, no broker); the
    message says what was read and why it gave nothing."""


def build_reference(
    lines: Iterable[bytes], config: OfflineConfig, store: ReferenceStore, name: str,
    source: str, limit: int | None = None, topic: str | None = None,
) -> ReferenceMeta:
    """`topic`: the lines are that topic's messages, read from it (under its `wire.topics`
    settings)."""
    scoring = config.scoring
    models = ModelScorers(sorted(set(config.scorers) | {"sanity"}), scoring)
    assert models.embedder is not None
    decoder = offline_decoder(config, topic, lines=topic is None)
    prompts: list[np.ndarray] = []
    responses: list[np.ndarray] = []
    numeric: dict[str, list[np.ndarray]] = {}
    outcomes: list[str] = []
    batch: list[Record] = []
    taken, refused = 0, 0
    first_refusal = ""

    def flush() -> None:
        if not batch:
            return
        scores = models.score(batch)
        assert scores.prompt_embeddings is not None and scores.response_embeddings is not None
        prompts.append(scores.prompt_embeddings)
        responses.append(scores.response_embeddings)
        for key, values in feature_columns(operational_features(batch), scores).items():
            numeric.setdefault(key, []).append(values)
        outcomes.extend(outcome(r) for r in batch)
        batch.clear()

    for line in lines:
        if limit is not None and taken >= limit:
            break
        decoded = decoder.decode(line.rstrip(b"\r\n"))
        if not isinstance(decoded, Rejection):
            for record in each(decoded):
                batch.append(record)  # type: ignore[arg-type]
                taken += 1
            if len(batch) >= OFFLINE_BATCH:
                flush()
        elif line.strip():
            refused += 1
            first_refusal = first_refusal or f"{decoded.reason}: {decoded.detail}"[:300]
    flush()
    if not taken:
        why = (f"{refused} refused, the first as {first_refusal}" if refused
               else "no records")
        raise ReferenceInputError(f"no valid records in {source} ({why}): nothing to build a "
                                  "reference from")
    return store.save(
        name,
        np.concatenate(prompts),
        np.concatenate(responses),
        {k: np.concatenate(v) for k, v in numeric.items()},
        {"outcome": outcomes},
        source,
        models.embedder.name,
    )


def topic_values(bootstrap: str | list[str], topic: str, start: int = 0, end: int | None = None,
                 idle_s: float = 3.0, client_options: dict[str, Any] | None = None
                 ) -> Iterator[bytes]:
    """Message values of a topic's offset range [start, end) on every partition, read without
    joining a consumer group (so no group's offsets move); stops at `end` or when idle.
    `client_options`: TLS and SASL settings for kafka-python (`KafkaSecurity.client_options`)."""
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                 **(client_options or {}))
    except KafkaError as exc:
        raise ReferenceInputError(f"cannot reach the brokers {bootstrap}: {exc}") from None
    try:
        partitions = [TopicPartition(topic, p) for p in
                      sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise ReferenceInputError(f"topic {topic!r} not found on {bootstrap}")
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, start)
        open_parts = set(partitions)
        while open_parts:
            fetched = consumer.poll(timeout_ms=int(idle_s * 1000))
            if not fetched:
                return
            for tp, messages in fetched.items():
                for message in messages:
                    if end is not None and message.offset >= end:
                        open_parts.discard(tp)
                        consumer.pause(tp)
                        break
                    if message.value:
                        yield message.value
    finally:
        consumer.close()


def run_reference(action: str, name: str, store_dir: Path, input_path: Path | None,
                  limit: int | None, config: OfflineConfig,
                  topic: str | None = None, bootstrap: str | None = None,
                  offsets: tuple[int, int | None] = (0, None)) -> int:
    store = ReferenceStore(store_dir)
    if action == "list":
        versions = store.versions(name)
        for version in versions:
            meta = store.load(name, version).meta
            print(f"{name} v{version}: {meta.records} records from {meta.source}, "
                  f"{meta.embedding_model} ({meta.dim}d), {meta.created_at}")
        if not versions:  # silence read as "listed nothing" and "looked nowhere" alike
            print(f"driftwatch: no snapshot named {name!r} in {store_dir} (build one with "
                  "`driftwatch reference build`; --store and --name say where to look)",
                  file=sys.stderr)
        return 0
    if topic is not None:
        # The config's kafka section says where the brokers are and how to reach them (TLS,
        # SASL with the password from the environment or a file); --bootstrap overrides.
        servers = [bootstrap] if bootstrap else config.kafka.bootstrap_servers
        security = config.kafka.security.client_options()
        start, end = offsets
        source = f"topic:{topic} offsets {start}..{'end' if end is None else end}"
        meta = build_reference(topic_values(servers, topic, start, end,
                                            client_options=security),
                               config, store, name, source, limit, topic)
    elif input_path is None:
        raise ReferenceInputError("reference build needs --input FILE.jsonl or --topic NAME")
    else:
        with open(input_path, "rb") as lines:
            meta = build_reference(bounded_lines(lines), config, store, name,
                                   f"file:{input_path}", limit)
    print(f"saved {name} v{meta.version}: {meta.records} records -> "
          f"{store_dir / name / f'v{meta.version:04d}'}")
    return 0


ADMIN_TOKEN_ENV = "DRIFTWATCH_ADMIN_TOKEN"


def request_rollover(url: str, segment: list[str]) -> int:
    """`driftwatch reference rollover`: ask a running daemon (its admin endpoint) to adopt the
    matching segments' recent records as their reference. Explicit, logged, saved as a new
    version: a reference never rolls over on its own. The daemon's admin token, if it has
    one, is read from the environment variable DRIFTWATCH_ADMIN_TOKEN."""
    params: dict[str, str] = {}
    for item in segment:
        label, sep, value = item.partition("=")
        if not sep or not label:
            print(f"driftwatch: --segment {item!r}: expected LABEL=VALUE, e.g. "
                  "deployment=stable", file=sys.stderr)
            return 2
        params[label] = value
    target = url.rstrip("/") + "/admin/reference/rollover"
    try:
        token = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Bounded: a --url that is not the daemon's may answer with a page or a stream.
        with httpx.Client() as client:
            reply = bounded_post.post(client, str(httpx.URL(target, params=params)), b"",
                                      headers, timeout_s=10.0)
    except httpx.HTTPError as exc:
        print(f"driftwatch: cannot reach the daemon at {target}: {exc}", file=sys.stderr)
        return 1
    print(reply.text.strip())
    if reply.status != 202:
        print(f"driftwatch: rollover refused ({reply.status})", file=sys.stderr)
        return 1
    return 0
