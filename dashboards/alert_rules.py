"""Prometheus recording and alerting rules for driftwatch, as typed values.
`driftwatch dashboards build` writes them to alerts.yml; the dashboards use the records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

SEGMENT_BY = "model, model_version, deployment"
# A zero rate must read as 0, not as a gap: flag counters only exist once a flag was raised.
_ZERO_IF_NONE = f"or 0 * sum by ({SEGMENT_BY}) (rate(driftwatch_model_scored_records_total[5m]))"


@dataclass(frozen=True)
class Record:
    """A Prometheus recording rule: the series it records and its expression."""

    record: str
    expr: str


@dataclass(frozen=True)
class Alert:
    """A Prometheus alerting rule, with the series it is about and what it says when firing."""

    alert: str
    expr: str
    # The series the condition is about: it has data whenever a daemon runs, whether the
    # alert fires or not (the live test checks it, since a healthy `expr` returns nothing).
    signal: str
    summary: str
    description: str
    severity: Literal["info", "warning", "critical"] = "warning"
    for_: str = "0m"


def detections_in(window: str, counter: str = "driftwatch_drift_detections_total",
                  by: str = "kind, stream") -> str:
    """Series (by `by`) of a detection counter with a detection in the window.

    The counter is born at its first detection, which increase() cannot see (there is no
    earlier sample), so a series that is new within the window counts as well.
    """
    return (f"sum by ({by}) (increase({counter}[{window}])) > 0\n"
            f"or sum by ({by}) ({counter} > 0 unless {counter} offset {window})")


def _by_stage(counter: str) -> str:
    """A counter's 5-minute rate summed by the stage its process runs (driftwatch_stage)."""
    return (f"sum by (stage) (rate({counter}[5m]) * on (instance, job) group_left (stage) "
            "driftwatch_stage)")


def _share(flag: str) -> str:
    return (f"(sum by ({SEGMENT_BY}) (rate(driftwatch_flags_total{{flag=\"{flag}\"}}[5m])) "
            f"\n {_ZERO_IF_NONE})\n/ sum by ({SEGMENT_BY}) "
            "(rate(driftwatch_model_scored_records_total[5m]))")


# Writes the pipeline gives up on so that scoring goes on (the outbox's wait instead: a
# stall, DriftwatchStalled). Both counters exist at 0 from the start.
_WRITES_LOST = ("sum by (instance, job) (increase(driftwatch_review_write_failures_total[15m]))"
                "\n+ sum by (instance, job) "
                "(increase(driftwatch_drift_reference_save_failures_total[15m]))")

RECORDS: tuple[Record, ...] = (
    Record("driftwatch:records:rate5m",
           f"sum by (outcome, {SEGMENT_BY}) (rate(driftwatch_records_total[5m]))"),
    Record("driftwatch:toxic_rate:5m", _share("toxic")),
    Record("driftwatch:ungrounded_rate:5m", _share("ungrounded")),
    Record("driftwatch:request_latency_seconds_bucket:rate5m",
           f"sum by (le, {SEGMENT_BY}) (rate(driftwatch_request_latency_seconds_bucket[5m]))"),
    Record("driftwatch:request_latency_seconds:p99_5m",
           f"histogram_quantile(0.99, sum by (le, {SEGMENT_BY}) "
           "(driftwatch:request_latency_seconds_bucket:rate5m))"),
    # Per stage: in a split deployment the decide stage reads scored-topic messages, each
    # carrying a batch's records; summed with the input's they would hide either stage's share.
    Record("driftwatch:dead_letter_share:5m",
           f"({_by_stage('driftwatch_dead_letter_total')}\n"
           f" or 0 * {_by_stage('driftwatch_messages_consumed_total')})\n"
           f"/ {_by_stage('driftwatch_messages_consumed_total')}"),
    Record("driftwatch:consumer_lag:sum", "sum by (topic) (driftwatch_consumer_lag)"),
)

ALERTS: tuple[Alert, ...] = (
    Alert("DriftwatchDriftDetected", detections_in("10m"),
          "sum by (kind, stream) (increase(driftwatch_drift_detections_total[10m]))",
          "Drift detected on {{ $labels.kind }} stream {{ $labels.stream }}",
          "{{ $labels.kind }}/{{ $labels.stream }}: {{ $value | humanize }} detection(s) in the "
          "last 10 minutes; the Drift dashboard shows which segment."),
    Alert("DriftwatchNewErrorClass",
          detections_in("30m", "driftwatch_drift_new_error_classes_total", SEGMENT_BY),
          f"sum by ({SEGMENT_BY}) (increase(driftwatch_drift_new_error_classes_total[30m]))",
          "New error class for {{ $labels.model }} {{ $labels.model_version }}",
          "{{ $value | humanize }} error class(es) never seen in the reference of "
          "{{ $labels.model }} {{ $labels.model_version }} ({{ $labels.deployment }}) in the "
          "last 30 minutes; the drift.new_error_class event names each and its first requests."),
    Alert("DriftwatchToxicRateHigh", "driftwatch:toxic_rate:5m > 0.05",
          "driftwatch:toxic_rate:5m",
          "Toxic responses above 5% for {{ $labels.model }} {{ $labels.model_version }}",
          "{{ $value | humanizePercentage }} of {{ $labels.deployment }} responses of "
          "{{ $labels.model }} {{ $labels.model_version }} were flagged toxic over 5 minutes.",
          "critical", "10m"),
    Alert("DriftwatchUngroundedRateHigh", "driftwatch:ungrounded_rate:5m > 0.2",
          "driftwatch:ungrounded_rate:5m",
          "Ungrounded responses above 20% for {{ $labels.model }} {{ $labels.model_version }}",
          "{{ $value | humanizePercentage }} of {{ $labels.deployment }} responses of "
          "{{ $labels.model }} {{ $labels.model_version }} were not supported by their context.",
          "warning", "10m"),
    Alert("DriftwatchLatencyP99High", "driftwatch:request_latency_seconds:p99_5m > 10",
          "driftwatch:request_latency_seconds:p99_5m",
          "p99 latency above 10 s for {{ $labels.model }} {{ $labels.deployment }}",
          "p99 request latency of {{ $labels.model }} {{ $labels.model_version }} "
          "({{ $labels.deployment }}) is {{ $value | humanizeDuration }}.",
          "warning", "10m"),
    Alert("DriftwatchDeadLetterShareHigh", "driftwatch:dead_letter_share:5m > 0.05",
          "driftwatch:dead_letter_share:5m",
          "More than 5% of messages go to the dead-letter topic ({{ $labels.stage }} stage)",
          "{{ $value | humanizePercentage }} of the messages the {{ $labels.stage }} stage "
          "consumed were dead-lettered over 5 minutes; the reason is in "
          "driftwatch_dead_letter_total and in each message's headers.",
          "warning", "10m"),
    Alert("DriftwatchConsumerLagGrowing",
          "driftwatch:consumer_lag:sum > 1000 and delta(driftwatch:consumer_lag:sum[10m]) > 0",
          "driftwatch:consumer_lag:sum",
          "Consumer lag on {{ $labels.topic }} is growing",
          "{{ $value | humanize }} messages behind on {{ $labels.topic }} and still growing: "
          "add daemons (partitions allowing) or check driftwatch_batch_processing_seconds.",
          "warning", "15m"),
    # A process with records waiting that finishes no batch: a scorer, the broker or the
    # outbox hangs it. Lag alone cannot tell (no new traffic keeps it flat), nor can
    # readiness (the group membership outlives a stuck batch thread).
    Alert("DriftwatchStalled",
          "time() - driftwatch_last_processed_timestamp_seconds > 600\n"
          "and on (instance, job) sum by (instance, job) (driftwatch_consumer_lag) > 0",
          "driftwatch_last_processed_timestamp_seconds",
          "driftwatch {{ $labels.instance }} has processed nothing for 10 minutes",
          "{{ $labels.instance }} has records waiting on its partitions but finished no "
          "batch for {{ $value | humanizeDuration }}; see its log (a hung scorer or broker "
          "call) and driftwatch_paused.", "critical", "5m"),
    Alert("DriftwatchNotReady", "driftwatch_ready == 0", "driftwatch_ready",
          "driftwatch {{ $labels.instance }} is not ready",
          "{{ $labels.instance }} cannot reach Kafka, has not joined its consumer group, or "
          "reads a topic the brokers do not have (a standby member, with no partitions to "
          "own, is ready); see its /readyz (missing_topics) and its log.", "critical", "5m"),
    Alert("DriftwatchAbsent", 'absent(up{job="driftwatch"} == 1)', 'up{job="driftwatch"}',
          "No driftwatch daemon is up",
          'No target of job "driftwatch" has been scraped successfully for 5 minutes: LLM '
          "traffic is not being monitored.", "critical", "5m"),
    Alert("DriftwatchCanaryRollback",
          'max by (model) (driftwatch_canary_verdict{verdict="rollback"}) == 1',
          'max by (model) (driftwatch_canary_verdict{verdict="rollback"})',
          "Canary of {{ $labels.model }} should be rolled back",
          "The canary gate found the canary of {{ $labels.model }} worse than stable; see the "
          "Canary dashboard for the gate.", "critical"),
    Alert("DriftwatchShadowRegressed",
          'max by (model) (driftwatch_shadow_verdict{verdict="regressed"}) == 1',
          'max by (model) (driftwatch_shadow_verdict{verdict="regressed"})',
          "Shadow of {{ $labels.model }} answers worse than stable",
          "Paired with stable's answers to the same requests, the shadow of "
          "{{ $labels.model }} is worse on a gate; see the Canary dashboard's Shadow row "
          "and GET /shadow. Nothing is rolled back: a shadow is never shown.", "warning"),
    Alert("DriftwatchOutboxBacklog", "sum by (action) (driftwatch_outbox_depth) > 100",
          "sum by (action) (driftwatch_outbox_depth)",
          "Outbox for {{ $labels.action }} holds {{ $value }} deliveries",
          "Deliveries to {{ $labels.action }} are piling up; the endpoint may be down or slow.",
          "warning", "15m"),
    Alert("DriftwatchWritesLost",
          f"{_WRITES_LOST} > 0", _WRITES_LOST,
          "driftwatch {{ $labels.instance }} could not write review or reference data",
          "In the last 15 minutes {{ $labels.instance }} lost review lines or sampled "
          "records (driftwatch_review_write_failures_total{sink}) or learnt drift "
          "references (driftwatch_drift_reference_save_failures_total), refused by a full "
          "disk, a missing topic or a locked file. Scoring goes on without them; see the log.",
          "warning"),
    Alert("DriftwatchDeliveriesFailing",
          "sum by (action) (rate(driftwatch_outbox_deliveries_total"
          '{outcome=~"failed|expired|disabled"}[10m])) > 0',
          "sum by (action) (rate(driftwatch_outbox_deliveries_total[10m]))",
          "Deliveries to {{ $labels.action }} are being given up",
          "Decisions for {{ $labels.action }} were dropped (failed, expired or disabled "
          "endpoint): a retrain or rollback may not have happened.", "critical", "5m"),
)


def rule_groups() -> dict[str, Any]:
    """The rule file's content: one group of recording rules, one of alerts."""
    return {"groups": [
        {"name": "driftwatch.records", "rules": [
            {"record": r.record, "expr": r.expr} for r in RECORDS]},
        {"name": "driftwatch.alerts", "rules": [{
            "alert": a.alert, "expr": a.expr, "for": a.for_,
            "labels": {"severity": a.severity},
            "annotations": {"summary": a.summary, "description": a.description},
        } for a in ALERTS]},
    ]}
