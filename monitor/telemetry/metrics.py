"""Every metric driftwatch exports, declared once: the whole exported surface in one file.

Names follow Prometheus conventions (prefix driftwatch_, base units, _total on
counters); labels are few and bounded (segments are capped by monitor.telemetry.labels).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info

from monitor.telemetry.batch_histogram import BatchHistogram
from monitor.types import SEGMENT_LABELS

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
LENGTH_BUCKETS = (0, 16, 64, 256, 1_024, 4_096, 16_384, 65_536)
TOKEN_BUCKETS = (0, 8, 32, 128, 512, 2_048, 8_192, 32_768)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000)
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

SCORE_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def driftwatch_version() -> str:
    """The installed package's version (driftwatch_build_info, `driftwatch --version`)."""
    try:
        return version("driftwatch")
    except PackageNotFoundError:
        return "0+unknown"


class Metrics:
    """Every metric driftwatch exports, registered in one registry (the global one by default;
    a test makes its own, so it reads its own numbers and no one else's)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.BUILD_INFO = Info(
            "driftwatch_build", "driftwatch version and Python runtime", registry=registry
        )

        # -- Kafka side ---------------------------------------------------------------------------
        self.MESSAGES_CONSUMED = Counter(
            "driftwatch_messages_consumed_total",
            "Kafka messages read, valid or not",
            ["topic"],
            registry=registry,
        )
        self.RECORDS = Counter(
            "driftwatch_records_total",
            "Records handled by outcome: scored, dead_lettered, duplicate (a repeated join half), "
            "decided (by the decide stage of a split deployment)",
            ["outcome", *SEGMENT_LABELS],
            registry=registry,
        )
        self.SEGMENTS = Gauge(
            "driftwatch_segments",
            "Distinct segments (combinations of the segment labels) seen; past "
            "metrics.max_segments a new one is reported with every label 'other'",
            registry=registry,
        )
        self.SCORED_PUBLISHED = Counter(
            "driftwatch_scored_published_total",
            "Scored records the score stage wrote to the internal scored topic (acknowledged "
            "by the broker)",
            registry=registry,
        )
        self.STAGE_INFO = Gauge(
            "driftwatch_stage",
            "The stages this process runs: score, decide, or all (both, in one process)",
            ["stage"],
            registry=registry,
        )
        self.DEAD_LETTERS = Counter(
            "driftwatch_dead_letter_total",
            "Messages sent to the dead-letter topic, by reason",
            ["reason"],
            registry=registry,
        )
        self.DEAD_LETTERS_TRUNCATED = Counter(
            "driftwatch_dead_letter_truncated_total",
            "Dead letters over kafka.dead_letter_max_bytes, written as a prefix with the "
            "original's length and SHA-256 in headers",
            registry=registry,
        )
        self.PARTITIONS_STALLED = Gauge(
            "driftwatch_partitions_stalled",
            "Partitions stopped because a dead letter of theirs cannot be written (retried until "
            "it is)",
            registry=registry,
        )
        self.JOIN_UNMATCHED = Counter(
            "driftwatch_join_unmatched_total",
            "Request or response halves whose partner did not arrive within the join window",
            ["side", "outcome"],
            registry=registry,
        )
        self.CONSUMER_LAG = Gauge(
            "driftwatch_consumer_lag",
            "Messages between the partition's high watermark and the group's commit point",
            ["topic", "partition"],
            registry=registry,
        )
        self.ASSIGNED_PARTITIONS = Gauge(
            "driftwatch_assigned_partitions",
            "Partitions this instance owns in the consumer group",
            registry=registry,
        )
        self.OFFSET_COMMITS = Counter(
            "driftwatch_offset_commits_total",
            "Offset commits that succeeded (one per partition moved)",
            registry=registry,
        )
        self.READY = Gauge(
            "driftwatch_ready",
            "1 when the broker is reachable and partitions are assigned, or the process is a "
            "standby member of its group (more members than partitions)",
            registry=registry,
        )
        self.PAUSED = Gauge(
            "driftwatch_paused",
            "1 while partitions are paused because the worker is behind",
            registry=registry,
        )

        self.HTTP_REFUSED = Counter(
            "driftwatch_http_refused_total",
            "HTTP requests refused: unauthorized (401), forbidden (403), body too large (413), "
            "too slow (408), or over the connection limit (503)",
            ["code"],
            registry=registry,
        )

        # -- Pipeline -----------------------------------------------------------------------------
        self.BATCH_SIZE = Histogram(
            "driftwatch_batch_size_records",
            "Records per processed micro-batch",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.BATCH_SECONDS = Histogram(
            "driftwatch_batch_processing_seconds",
            "Wall time to score and count one micro-batch",
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.LAST_EVENT_TIME = Gauge(
            "driftwatch_last_event_timestamp_seconds",
            "Event time of the newest record scored",
            registry=registry,
        )
        self.LAST_PROCESSED_TIME = Gauge(
            "driftwatch_last_processed_timestamp_seconds",
            "Wall-clock time this process last finished a batch of records (scored, or "
            "decided in the decide stage); its start time until its first batch",
            registry=registry,
        )

        # -- Operational scores (per record, by segment) ------------------------------------------
        self.REQUEST_LATENCY = BatchHistogram(
            "driftwatch_request_latency_seconds",
            "LLM request latency reported by the serving side",
            SEGMENT_LABELS,
            LATENCY_BUCKETS,
            registry=registry,
        )
        self.TEXT_LENGTH = BatchHistogram(
            "driftwatch_text_length_characters",
            "Prompt and response length in characters",
            ("field", *SEGMENT_LABELS),
            LENGTH_BUCKETS,
            registry=registry,
        )
        self.COMPLETION_TOKENS = BatchHistogram(
            "driftwatch_completion_tokens",
            "Completion tokens per request",
            SEGMENT_LABELS,
            TOKEN_BUCKETS,
            registry=registry,
        )
        self.TOKENS = Counter(
            "driftwatch_tokens_total",
            "Tokens used, by kind (prompt, completion)",
            ["kind", *SEGMENT_LABELS],
            registry=registry,
        )
        self.COST = Counter(
            "driftwatch_cost_usd_total",
            "Cost of the requests in US dollars",
            SEGMENT_LABELS,
            registry=registry,
        )
        self.RESPONSES = Counter(
            "driftwatch_responses_total",
            "Responses by status class (ok, error) and error type (bounded)",
            ["status", "error_type", *SEGMENT_LABELS],
            registry=registry,
        )

        # -- Model scores (issue: scoring every record) -------------------------------------------
        self.TOXICITY = BatchHistogram(
            "driftwatch_toxicity_score",
            "Toxicity score in [0, 1] per scored text, by field (response, prompt)",
            ("field", *SEGMENT_LABELS),
            SCORE_BUCKETS,
            registry=registry,
        )
        self.GROUNDEDNESS = BatchHistogram(
            "driftwatch_groundedness_score",
            "Share of response sentences supported by the retrieved context (records with context)",
            SEGMENT_LABELS,
            SCORE_BUCKETS,
            registry=registry,
        )
        self.FLAGS = Counter(
            "driftwatch_flags_total",
            "Records flagged: toxic, ungrounded, novel_number, novel_name, empty_response, "
            "refusal, truncated, charset_anomaly",
            ["flag", *SEGMENT_LABELS],
            registry=registry,
        )
        self.MODEL_SCORED = Counter(
            "driftwatch_model_scored_records_total",
            "Records that went through the model scorers (all records are counted; under overload "
            "only a uniform sample is scored)",
            SEGMENT_LABELS,
            registry=registry,
        )
        self.MODEL_SKIPPED = Counter(
            "driftwatch_model_skipped_records_total",
            "Records counted but not model-scored, by reason: overload (the lag sampler left them "
            "out) or time_budget (their batch used up scoring.max_batch_seconds)",
            ["reason"],
            registry=registry,
        )
        self.SCORED_FRACTION = Gauge(
            "driftwatch_scored_fraction",
            "Fraction of records sent to the model scorers now (1 unless lag exceeds the overload "
            "bound)",
            registry=registry,
        )
        self.EMBEDDED_TEXTS = Counter(
            "driftwatch_embedder_texts_total",
            "Texts embedded, by outcome (embedded, cache_hit)",
            ["outcome"],
            registry=registry,
        )
        self.EMBEDDER_TRUNCATED = Counter(
            "driftwatch_embedder_truncated_total",
            "Texts cut to the embedding model's maximum length",
            registry=registry,
        )
        self.EMBEDDER_BATCH = Histogram(
            "driftwatch_embedder_batch_size_texts",
            "Texts per embedding model call",
            buckets=(1, 4, 16, 32, 64, 128, 256, 512, 1_024),
            registry=registry,
        )
        self.EMBEDDER_SECONDS = Counter(
            "driftwatch_embedder_seconds_total",
            "Time spent in the embedding model (throughput = "
            'rate(driftwatch_embedder_texts_total{outcome="embedded"}) / rate(this))',
            registry=registry,
        )
        self.MODEL_INFO = Gauge(
            "driftwatch_model_info",
            "Models loaded, with device, backend and precision (value 1)",
            ["role", "name", "device", "backend", "precision"],
            registry=registry,
        )

        # -- Drift --------------------------------------------------------------------------------
        self.DRIFT_STATISTIC = Gauge(
            "driftwatch_drift_statistic",
            "Online MMD statistic of the embedding window, by stream",
            ["stream", *SEGMENT_LABELS],
            registry=registry,
        )
        self.DRIFT_THRESHOLD = Gauge(
            "driftwatch_drift_threshold",
            "Calibrated MMD threshold in force (ERT-calibrated)",
            ["stream", *SEGMENT_LABELS],
            registry=registry,
        )
        self.DRIFT_DETECTED = Gauge(
            "driftwatch_drift_detected",
            "1 if the last batch crossed the embedding drift threshold",
            ["stream", *SEGMENT_LABELS],
            registry=registry,
        )
        self.DRIFT_DETECTIONS = Counter(
            "driftwatch_drift_detections_total",
            "Drift detections by kind (embedding, feature) and stream or feature",
            ["kind", "stream"],
            registry=registry,
        )
        self.DRIFT_REFERENCE_RECORDS = Gauge(
            "driftwatch_drift_reference_records",
            "Records in the segment's drift reference (growing during warm-up)",
            SEGMENT_LABELS,
            registry=registry,
        )
        self.DRIFT_UNTESTED = Counter(
            "driftwatch_drift_untested_records_total",
            "Records of a segment not tested for embedding drift while its detectors were "
            "calibrated in the background",
            SEGMENT_LABELS,
            registry=registry,
        )
        self.DRIFT_SEGMENTS_UNTRACKED = Counter(
            "driftwatch_drift_segments_untracked_total",
            "Batches of a segment beyond drift.max_segments (counted, not tracked)",
            registry=registry,
        )

        # -- Rules, outbox and deliveries ---------------------------------------------------------
        self.RULE_FIRING = Gauge(
            "driftwatch_rule_firing",
            "1 while a rule's condition holds for the segment",
            ["rule", "severity", *SEGMENT_LABELS],
            registry=registry,
        )
        self.RULE_ACTIONS = Counter(
            "driftwatch_rule_actions_total",
            "Decisions put in the outbox, by rule and event type",
            ["rule", "event_type"],
            registry=registry,
        )
        self.AUDIT_WRITE_FAILURES = Counter(
            "driftwatch_audit_log_write_failures_total",
            "Writes of the audit log the disk refused; each is tried again while its batch "
            "waits (a full disk stalls scoring rather than leave a record out of the log)",
            registry=registry,
        )
        self.OUTBOX_WRITE_FAILURES = Counter(
            "driftwatch_outbox_write_failures_total",
            "Writes of decisions the outbox refused (a full disk, an I/O error); each is tried "
            "again while its batch waits",
            registry=registry,
        )
        self.OUTBOX_DEPTH = Gauge(
            "driftwatch_outbox_depth",
            "Deliveries waiting in the outbox, by action",
            ["action"],
            registry=registry,
        )
        self.OUTBOX_DELIVERIES = Counter(
            "driftwatch_outbox_deliveries_total",
            "Delivery attempts by action and outcome (delivered, retry, expired, disabled, failed)",
            ["action", "outcome"],
            registry=registry,
        )
        self.OUTBOX_DELIVERY_SECONDS = Histogram(
            "driftwatch_outbox_delivery_seconds",
            "Time from a decision entering the outbox to its successful delivery",
            ["action"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3_600),
            registry=registry,
        )
        self.ALERTS_ACTIVE = Gauge(
            "driftwatch_alerts_active",
            "Alerts pushed to Alertmanager that are firing now",
            ["action"],
            registry=registry,
        )

        # -- Canary gate --------------------------------------------------------------------------
        self.CANARY_VERDICT = Gauge(
            "driftwatch_canary_verdict",
            "The canary gate's verdict, one-hot by verdict (watching, promote, rollback)",
            ["model", "verdict"],
            registry=registry,
        )
        self.CANARY_DIFFERENCE = Gauge(
            "driftwatch_canary_difference",
            "Canary minus stable for each gate: estimate and the bounds of its confidence sequence",
            ["model", "gate", "bound"],
            registry=registry,
        )
        self.CANARY_RECORDS = Gauge(
            "driftwatch_canary_records",
            "Records seen by the canary gate, by arm (stable, canary)",
            ["model", "arm"],
            registry=registry,
        )
        self.SHADOW_VERDICT = Gauge(
            "driftwatch_shadow_verdict",
            "The shadow gate's verdict, one-hot by verdict (watching, ready, regressed)",
            ["model", "verdict"],
            registry=registry,
        )
        self.SHADOW_DIFFERENCE = Gauge(
            "driftwatch_shadow_difference",
            "Shadow minus stable, per paired request: estimate and always-valid bounds",
            ["model", "gate", "bound"],
            registry=registry,
        )
        self.SHADOW_RECORDS = Counter(
            "driftwatch_shadow_records_total",
            "Shadow records paired with the stable answer to the same request, or unpaired "
            "(no stable record within the window; counted, not compared)",
            ["model", "outcome"],
            registry=registry,
        )
        self.SHADOW_COSINE = Histogram(
            "driftwatch_shadow_answer_cosine",
            "Cosine between the shadow's and stable's answers to the same request",
            ["model"],
            buckets=(0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
            registry=registry,
        )
        self.REVIEW_SAMPLED = Counter(
            "driftwatch_review_sampled_total",
            "Records sent for human review, by reason (borderline, uniform, drift, "
            "new_error_class; a record with two reasons counts under both)",
            ["reason"],
            registry=registry,
        )
        self.REVIEW_SKIPPED = Counter(
            "driftwatch_review_budget_skipped_total",
            "Records not considered for review: the hour's review.max_per_hour was spent",
            registry=registry,
        )
        self.REVIEW_WRITE_FAILURES = Counter(
            "driftwatch_review_write_failures_total",
            "Review lines not written, by sink (file, topic; store: sampled records the review "
            "store refused): logged, and the batch goes on",
            ["sink"],
            registry=registry,
        )
        for sink in ("file", "topic", "store"):  # at 0 from the start, for increase()
            self.REVIEW_WRITE_FAILURES.labels(sink)
        self.REVIEW_LABELS = Counter(
            "driftwatch_review_labels_total",
            "Reviewers' labels read, by outcome (stored, unknown_label, not_sampled, invalid)",
            ["outcome"],
            registry=registry,
        )
        self.FLAG_LABELS = Gauge(
            "driftwatch_flag_labels",
            "Labelled design-sample records behind a flag's measured precision and recall",
            ["flag", *SEGMENT_LABELS],
            registry=registry,
        )
        self.FLAG_PRECISION = Gauge(
            "driftwatch_flag_precision",
            "Share of driftwatch's flags that reviewers confirmed (stratified estimate)",
            ["flag", *SEGMENT_LABELS],
            registry=registry,
        )
        self.FLAG_RECALL = Gauge(
            "driftwatch_flag_recall",
            "Share of the truly positive records driftwatch flagged (stratified estimate)",
            ["flag", *SEGMENT_LABELS],
            registry=registry,
        )
        self.CORRECTED_RATE = Gauge(
            "driftwatch_flag_corrected_rate",
            "Label-corrected estimate of the true rate (toxic, ungrounded, refusal)",
            ["flag", *SEGMENT_LABELS],
            registry=registry,
        )
        self.TOKEN_LINE = Gauge(
            "driftwatch_token_line",
            "Reported tokens = offset + slope x counted, learnt per segment and stream "
            "(prompt, completion) by the tokenization scorer",
            ["stream", "parameter", *SEGMENT_LABELS],
            registry=registry,
        )
        self.DRIFT_NEW_ERROR_CLASSES = Counter(
            "driftwatch_drift_new_error_classes_total",
            "Error classes (error type, or status) never seen in the segment's reference, "
            "each announced once as a new_error_class detection",
            SEGMENT_LABELS,
            registry=registry,
        )
        self.DRIFT_REFERENCE_SAVE_FAILURES = Counter(
            "driftwatch_drift_reference_save_failures_total",
            "References learnt (warm-up, rollover) that drift.reference.store could not take; "
            "the segment is armed with them all the same",
            registry=registry,
        )
        self.DRIFT_ROLLOVERS = Counter(
            "driftwatch_drift_reference_rollovers_total",
            "Explicit reference rollovers (by command or rule) to the segment's recent records",
            SEGMENT_LABELS,
            registry=registry,
        )

        # -- State checkpoints --------------------------------------------------------------------
        self.CHECKPOINTS = Counter(
            "driftwatch_checkpoints_total",
            "State checkpoints by outcome (written, failed, loaded, rejected)",
            ["outcome"],
            registry=registry,
        )
        self.CHECKPOINT_BYTES = Gauge(
            "driftwatch_checkpoint_bytes", "Size of the last checkpoint written", registry=registry
        )
        self.CHECKPOINT_SECONDS = Histogram(
            "driftwatch_checkpoint_seconds",
            "Time to write a checkpoint (pickle, fsync, rename)",
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.CHECKPOINT_TIME = Gauge(
            "driftwatch_checkpoint_timestamp_seconds",
            "Unix time of the last checkpoint written",
            registry=registry,
        )
        self.CHECKPOINT_REPLAYED = Counter(
            "driftwatch_checkpoint_replayed_records_total",
            "Records read again after a restart that the checkpointed state already held: scored "
            "and counted again, not applied to the detectors twice",
            registry=registry,
        )


# The process' metrics, on the global registry that /metrics serves.
METRICS = Metrics()
