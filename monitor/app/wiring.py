"""The one place a config becomes a pipeline: the daemon and the backtest both wire theirs
here, so a backtest runs exactly the stages, detectors, rules and gate the daemon would.

`live` is the only difference between them, and it changes how, never what, is decided: the
daemon bounds model time per batch, calibrates drift detectors off the batch path and keeps
warm-up references for its next start; a backtest does none of that, so its results do not
depend on the machine's speed or on what an earlier run left behind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

from consumers.decode import Decoder
from detectors.embedder import pick_device, resolve_model_path
from detectors.static_embedder import vectors_name
from detectors.token_consistency import TokenCounter
from monitor.acting.canary import CanaryGate
from monitor.acting.review import ReviewSampler, ReviewStore
from monitor.acting.rules import RuleEngine
from monitor.acting.shadow import ShadowGate
from monitor.config import MODEL_SCORERS, Config, ConfigError, OfflineConfig, rollover_actions
from monitor.config.scoring import EmbeddingSettings
from monitor.pipeline import scored
from monitor.pipeline.checkpoint import Checkpointer, fingerprint
from monitor.pipeline.drift import DriftStage
from monitor.pipeline.model_scoring import ModelScorers, wants_embeddings
from monitor.pipeline.pipeline import Pipeline
from monitor.pipeline.review_step import ReviewStep
from monitor.pipeline.stages import (
    AuditStage,
    CanaryUpdate,
    DecideStage,
    DriftStep,
    ModelStage,
    OperationalStage,
    Stage,
)
from monitor.pipeline.token_check import TokenCheckStep, TokenCountStage
from monitor.telemetry.metrics import METRICS, Metrics
from monitor.types import Decision, DriftEvent, IntakeCounts, Segment

log = logging.getLogger(__name__)

# Records per micro-batch when reading a file (backtest, score, reference build).
OFFLINE_BATCH = 256
# The longest line the offline verbs read (a recorded message, whatever the broker's limit).
OFFLINE_MAX_LINE = 100 * 1_048_576


def bounded_lines(source: IO[bytes], limit: int = OFFLINE_MAX_LINE) -> Iterator[bytes]:
    """A file's lines, each read to at most `limit` + 1 bytes: a longer one is given cut
    there (the decoder refuses it as oversized) and the rest of it skipped, so a file with
    no newline (a binary given by mistake, /dev/zero) never sits whole in memory."""
    while line := source.readline(limit + 1):
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := source.readline(limit)) and not rest.endswith(b"\n"):
                pass
        yield line


def offline_decoder(config: OfflineConfig, topic: str | None = None,
                    lines: bool = True) -> Decoder:
    """How score, backtest, compare and reference build read a line (`lines`; else a
    message read from a topic): as the daemon reads a message (of `topic`, where
    `wire.topics` has settings of its own), under the config's `validation` and `wire` (so
    they refuse what the daemon refuses, and read a producer's field names as it does)."""
    settings, where = config.wire.for_topic(topic)
    if lines and settings.format == "otlp_proto":
        raise ConfigError(f"{where}.format = 'otlp_proto': its messages are binary, not lines of a "
                          "file; read a file of the Collector's otlp_json messages with "
                          "format otlp_json (or build a reference from the topic itself)")
    return config.wire.decoder(OFFLINE_MAX_LINE, config.validation, topic)


@dataclass
class Parts:
    """The stateful parts a config asks for; None where it asks for none."""

    models: ModelScorers | None = None
    drift: DriftStage | None = None
    rules: RuleEngine | None = None
    canary: CanaryGate | None = None
    shadow: ShadowGate | None = None
    review: ReviewSampler | None = None  # the review queue's sampler and its store
    tokens: TokenCounter | None = None  # the tokenization scorer's counter (score stage)
    token_check: TokenCheckStep | None = None  # ... and its per-segment check (decide stage)

    @property
    def device(self) -> str:
        embedder = self.models.embedder if self.models is not None else None
        return embedder.device if embedder is not None else "cpu"


def embedding_vectors_name(settings: EmbeddingSettings) -> str:
    """The name of the vectors the score stage makes under these settings."""
    return vectors_name(settings.model, settings.backend, settings.static_pca_dims)


def build_models(config: OfflineConfig | Config, live: bool) -> ModelScorers | None:
    """The model scorers the config enables (None: no model scorer is on)."""
    if not set(config.scorers) & MODEL_SCORERS:
        return None
    return ModelScorers(config.scorers, config.scoring,
                        embeddings=wants_embeddings(config.drift, config.canary, config.shadow),
                        time_budget_s=config.scoring.max_batch_seconds if live else None)


def build_tokens(config: OfflineConfig | Config) -> TokenCounter | None:
    """The tokenization scorer's tokenizer (None: the scorer is off), from disk only."""
    if "tokenization" not in config.scorers:
        return None
    s = config.scoring
    setting = "scoring.tokenizer.path" if s.tokenizer.path else "scoring.embedding.model"
    return TokenCounter(resolve_model_path(s.tokenizer.path or s.embedding.model, setting))


def build_parts(config: OfflineConfig | Config, live: bool,
                last_fired: Callable[[str], float | None] | None = None,
                models: ModelScorers | None = None, scored_input: bool = False,
                embedding_model: str | None = None) -> Parts:
    """Models, drift stage, rule engine and canary gate, as `config` sets them. `last_fired`:
    the outbox's memory of when each incident last fired (cooldowns across restarts).
    `models`: already loaded ones (a caller that loads them first, to fail fast).
    `scored_input`: the decide stage, whose records come scored: no model is loaded, and the
    drift stage is built for the embedding model the score stage runs (`embedding_model`,
    when the caller has its name: a static table's name hashes the model's files)."""
    if scored_input:
        parts, device = Parts(), pick_device(config.scoring.device)
        if config.drift.enabled and wants_embeddings(config.drift, config.canary, config.shadow) \
                and set(config.scorers) & MODEL_SCORERS:
            parts.drift = DriftStage.from_settings(
                config.drift, device,
                embedding_model or embedding_vectors_name(config.scoring.embedding),
                keep_warmup=live, background=live)
        _decisions(config, parts, last_fired, device, live)
        _token_check(config, parts)
        return parts
    models = models if models is not None else build_models(config, live)
    parts = Parts(models, tokens=build_tokens(config))
    _token_check(config, parts)
    embedder = models.embedder if models is not None else None
    if config.drift.enabled and embedder is not None:
        parts.drift = DriftStage.from_settings(config.drift, embedder.device, embedder.name,
                                               keep_warmup=live, background=live)
    _decisions(config, parts, last_fired, parts.device, live)
    return parts


def _token_check(config: OfflineConfig | Config, parts: Parts) -> None:
    if "tokenization" in config.scorers:
        parts.token_check = TokenCheckStep(config.scoring.tokenizer)


def build_review(config: OfflineConfig | Config, live: bool = True) -> ReviewSampler | None:
    """The review queue's sampler over its store (None: the queue is off). Not `live` (a
    backtest): over a copy of the store in memory, writing no review file."""
    if not config.review.enabled:
        return None
    s = config.scoring
    settings = config.review if live else config.review.model_copy(update={"file": None})
    return ReviewSampler(settings, ReviewStore(config.review.store, scratch=not live),
                         s.toxicity.threshold, s.groundedness.ungrounded_below)


def corrected_rates(review: ReviewSampler
                    ) -> Callable[[str, Segment], tuple[float, int] | None]:
    """What a `labelled` rule reads: the label-corrected rate and the labels behind it."""

    def corrected(flag: str, segment: Segment) -> tuple[float, int] | None:
        found = review.store.corrected(flag, segment)
        return None if found is None else (found.corrected_rate, found.labels)

    return corrected


def _decisions(config: OfflineConfig | Config, parts: Parts,
               last_fired: Callable[[str], float | None] | None, device: str,
               live: bool) -> None:
    if config.rules:
        parts.rules = RuleEngine(config.rules, config.actions, last_fired=last_fired)
    if config.canary.enabled:
        parts.canary = CanaryGate(config.canary, device)
    if config.shadow.enabled:
        parts.shadow = ShadowGate(config.shadow)
    parts.review = build_review(config, live)


def assemble(
    scorers: Sequence[str],
    segment_labels: Sequence[str],
    max_label_values: int,
    *,
    models: ModelScorers | None = None,
    drift: DriftStage | None = None,
    rules: RuleEngine | None = None,
    canary: CanaryUpdate | None = None,
    on_events: Callable[[list[DriftEvent]], None] | None = None,
    on_decisions: Callable[[list[Decision]], None] | None = None,
    intake: IntakeCounts | None = None,
    rollover_actions: frozenset[str] = frozenset(),
    fraction: Callable[[], float] = lambda: 1.0,
    cancel: threading.Event | None = None,
    audit_log: Path | None = None,
    checkpoints: Checkpointer | None = None,
    metrics: Metrics = METRICS,
    publish: Stage | None = None,
    scored_input: bool = False,
    tokens: TokenCounter | None = None,
    token_check: TokenCheckStep | None = None,
    shadow: ShadowGate | None = None,
    review: ReviewSampler | None = None,
    review_publish: Callable[[list[dict[str, object]]], None] | None = None,
    max_segments: int = 500,
) -> Pipeline:
    """The stages, in order, for the parts given (each stage only when its part is there).
    `metrics`: where the operational and model stages count (a test passes its own).
    `publish`: the score stage's last step (records to the scored topic). `scored_input`:
    the decide stage, whose batches are scored records (`scored.beginner`)."""
    if scored_input and intake is None:
        intake = IntakeCounts()  # one for the decide stage and the scored records' tallies
    if drift is not None and models is None and not scored_input:
        raise ValueError("drift needs the model scorers (embeddings): enable one of "
                         f"{sorted(MODEL_SCORERS)}")
    if (rules is not None or canary is not None or shadow is not None) and on_decisions is None:
        raise ValueError("rules and the gates need somewhere to put their decisions")
    operational = OperationalStage([] if scored_input else scorers, segment_labels,
                                   max_label_values, metrics=metrics,
                                   outcome="decided" if scored_input else "scored",
                                   max_segments=max_segments)
    stages: list[Stage] = []
    if models is not None:
        stages.append(ModelStage(models, fraction, cancel, metrics))
    if tokens is not None:
        stages.append(TokenCountStage(tokens))
    if publish is not None:
        stages.append(publish)
    if token_check is not None:
        stages.append(token_check)
    if drift is not None:
        stages.append(DriftStep(drift, on_events))
    if rules is not None or canary is not None or shadow is not None:
        assert on_decisions is not None
        stages.append(DecideStage(rules, canary, on_decisions, intake,
                                  # A rule's decision: adopt the traffic that follows it.
                                  partial(drift.request_rollover, following=True)
                                  if drift is not None else None,
                                  rollover_actions, shadow,
                                  corrected_rates(review) if review is not None else None))
    if review is not None:
        stages.append(ReviewStep(review, review_publish))
    if audit_log is not None:
        stages.append(AuditStage(audit_log, cancel, metrics))
    begin = scored.beginner(intake) if intake is not None and scored_input else None
    return Pipeline(operational, stages, checkpoints, metrics, begin=begin)


def wire(
    config: OfflineConfig | Config,
    parts: Parts,
    *,
    on_decisions: Callable[[list[Decision]], None],
    intake: IntakeCounts,
    on_events: Callable[[list[DriftEvent]], None] | None = None,
    fraction: Callable[[], float] = lambda: 1.0,
    cancel: threading.Event | None = None,
    checkpoints: Checkpointer | None = None,
    audit_log: Path | None = None,
    publish: Stage | None = None,
    scored_input: bool = False,
    review_publish: Callable[[list[dict[str, object]]], None] | None = None,
) -> Pipeline:
    """The pipeline of `config` over `parts`: what the daemon and the backtest both run
    (`publish`, `scored_input`: the score and decide stages of a split deployment)."""
    return assemble(
        config.scorers, config.metrics.labels, config.metrics.max_label_values,
        models=parts.models, drift=parts.drift, rules=parts.rules, canary=parts.canary,
        on_events=on_events, on_decisions=on_decisions, intake=intake,
        rollover_actions=rollover_actions(config.actions), fraction=fraction, cancel=cancel,
        audit_log=audit_log, checkpoints=checkpoints, publish=publish,
        scored_input=scored_input, tokens=parts.tokens, token_check=parts.token_check,
        shadow=parts.shadow, review=parts.review, review_publish=review_publish,
        max_segments=config.metrics.max_segments)


def checkpointer(config: Config, models: ModelScorers | None, path: Path | None = None,
                 embedding_model: str | None = None) -> Checkpointer | None:
    """Checkpoints of the detectors', rules' and canary's state; each part fingerprinted with
    the config that shapes it, so a changed config drops only what it invalidates. `path`:
    instead of checkpoint.path (a decide task's file); `embedding_model`: the model's name
    when none is loaded here (the decide stage)."""
    if not config.checkpoint.enabled:
        return None
    labels = (config.metrics.labels, config.metrics.max_label_values)
    model = models.embedder.name if models is not None and models.embedder is not None \
        else embedding_model or ""
    settings = config.checkpoint if path is None else config.checkpoint.model_copy(
        update={"path": path})
    return Checkpointer(settings, {
        "segments": fingerprint(*labels),
        "drift": fingerprint(config.drift, model, *labels),
        "rules": fingerprint(config.rules, *labels),
        "canary": fingerprint(config.canary),
        "shadow": fingerprint(config.shadow),
        "token_lines": fingerprint(config.scoring.tokenizer, *labels),
    })
