"""The five driftwatch dashboards: Overview, Drift, Quality, Canary and Operations.
Counters are summed and gauges maxed over `instance`, so several daemons read as one."""

from __future__ import annotations

from dashboards.alert_rules import detections_in
from dashboards.grafana_json import RATE, SEG, Annotation, Dashboard, Panel, Query, Row

BY_SEG = "model, model_version, deployment"
LEGEND_SEG = "{{model}} {{model_version}} {{deployment}}"


def _quantiles(metric: str, by: str, qs: tuple[float, ...], legend: str,
               selector: str = SEG, recorded: bool = False) -> tuple[Query, ...]:
    source = (f"{metric}{{{selector}}}" if recorded
              else f"rate({metric}_bucket{{{selector}}}[{RATE}])")
    keys = ", ".join(k for k in ("le", by) if k)
    return tuple(Query(f"histogram_quantile({q}, sum by ({keys}) ({source}))",
                       f"p{round(q * 100)} {legend}".strip()) for q in qs)


def _distribution(title: str, metric: str, selector: str = SEG) -> Panel:
    return Panel(title, (Query(f"sum by (le) (increase({metric}_bucket{{{selector}}}[{RATE}]))",
                               "{{le}}", heatmap=True),),
                 kind="heatmap", unit="percentunit", width=8)


OVERVIEW = Dashboard("driftwatch-overview", "driftwatch / Overview",
                     "Throughput, lag, dead letters, scores and alerts across every daemon.", (
    Row("Traffic"),
    Panel("Throughput by outcome", (Query(
        f"sum by (outcome) (driftwatch:records:rate5m{{{SEG}}})", "{{outcome}}"),),
        unit="reqps", width=8, stacked=True,
        description="Records per second: scored, dead_lettered, duplicate; decided: by the "
                    "decide stage of a split deployment (scored: by the score stage)."),
    Panel("Scored records by segment", (Query(
        f'sum by ({BY_SEG}) (driftwatch:records:rate5m{{outcome="scored", {SEG}}})',
        LEGEND_SEG),), unit="reqps", width=8),
    Panel("Consumer lag", (Query("sum by (topic) (driftwatch_consumer_lag)", "{{topic}}"),),
          width=8, description="Messages between the high watermark and the commit point; "
                               "the scored topic's is the decide stage's lag."),
    Panel("Dead letters by reason", (Query(
        f"sum by (reason) (rate(driftwatch_dead_letter_total[{RATE}]))", "{{reason}}"),),
        unit="reqps", width=8, stacked=True),
    Panel("Daemons ready", (Query("sum(driftwatch_ready)", "ready", instant=True),
                            Query("count(driftwatch_ready)", "running", instant=True),
                            Query("sum by (stage) (driftwatch_stage)", "{{stage}}",
                                  instant=True)),
          kind="stat", width=4,
          description="Processes ready and running, and how many run each stage (all: both "
                      "in one process; score, decide: a split deployment)."),
    Panel("Model-scored fraction", (Query("min(driftwatch_scored_fraction)", "scored",
                                          instant=True),),
          kind="stat", unit="percentunit", width=4,
          description="Below 1 while overloaded: only a uniform sample is model-scored."),
    Panel("Errors by type", (Query(
        f'sum by (error_type) (rate(driftwatch_responses_total{{status="error", {SEG}}}'
        f"[{RATE}]))", "{{error_type}}"),), unit="reqps", width=8, stacked=True),
    Row("Scores"),
    _distribution("Toxicity distribution", "driftwatch_toxicity_score"),
    _distribution("Groundedness distribution", "driftwatch_groundedness_score"),
    Panel("Toxic and ungrounded share", (
        Query(f"max by ({BY_SEG}) (driftwatch:toxic_rate:5m{{{SEG}}})", f"toxic {LEGEND_SEG}"),
        Query(f"max by ({BY_SEG}) (driftwatch:ungrounded_rate:5m{{{SEG}}})",
              f"ungrounded {LEGEND_SEG}")), unit="percentunit", width=8),
    Row("Alerts"),
    Panel("Prometheus alerts", (Query('ALERTS{alertname=~"Driftwatch.*"}', instant=True),),
          kind="table", width=12, description="Pending and firing driftwatch alerts."),
    Panel("Rules firing in the daemon", (Query(
        f"max by (rule, severity, {BY_SEG}) (driftwatch_rule_firing{{{SEG}}})",
        instant=True),), kind="table", width=12,
        description="driftwatch's own rules (1 = condition holds); they drive the webhooks."),
))

DRIFT = Dashboard("driftwatch-drift", "driftwatch / Drift",
                  "Online MMD drift per stream and segment; detections as annotations.", (
    Row("Embedding drift"),
    Panel("MMD statistic vs threshold", (
        Query(f"max by (stream, {BY_SEG}) (driftwatch_drift_statistic{{{SEG}}})",
              f"statistic {{{{stream}}}} {LEGEND_SEG}"),
        Query(f"max by (stream, {BY_SEG}) (driftwatch_drift_threshold{{{SEG}}})",
              f"threshold {{{{stream}}}} {LEGEND_SEG}")), width=12,
        description="Drift is detected when the statistic crosses its ERT-calibrated threshold."),
    Panel("Statistic / threshold", (Query(
        f"max by (stream, {BY_SEG}) (driftwatch_drift_statistic{{{SEG}}})\n"
        f"/ max by (stream, {BY_SEG}) (driftwatch_drift_threshold{{{SEG}}})",
        f"{{{{stream}}}} {LEGEND_SEG}"),), width=12, description="Above 1: drift."),
    Panel("Drift detected now", (Query(
        f"max by (stream, {BY_SEG}) (driftwatch_drift_detected{{{SEG}}})",
        f"{{{{stream}}}} {LEGEND_SEG}"),), kind="state-timeline", width=12),
    Panel("Detections by kind and stream", (Query(
        f"sum by (kind, stream) (increase(driftwatch_drift_detections_total[{RATE}]))",
        "{{kind}} {{stream}}"),), width=12, stacked=True),
    Panel("New error classes", (Query(
        f"sum by ({BY_SEG}) (increase(driftwatch_drift_new_error_classes_total{{{SEG}}}"
        f"[{RATE}]))", LEGEND_SEG),), width=24, stacked=True,
        description="Error types or statuses the segment's reference never saw, each counted "
                    "once (drift.new_error_classes)."),
    Row("References"),
    Panel("Reference records per segment", (Query(
        f"max by ({BY_SEG}) (driftwatch_drift_reference_records{{{SEG}}})", LEGEND_SEG),),
        width=12, description="Grows during warm-up, then stays at warmup_records."),
    Panel("Batches of untracked segments", (Query(
        f"sum(rate(driftwatch_drift_segments_untracked_total[{RATE}]))", "untracked"),),
        width=12, description="Segments beyond drift.max_segments are counted, not tracked."),
), (Annotation("Drift detections",
               detections_in("1m"),
               "drift: {{kind}} {{stream}}", ("kind", "stream")),))

QUALITY = Dashboard("driftwatch-quality", "driftwatch / Quality",
                    "Toxic and ungrounded shares and score quantiles by version and deployment.", (
    Row("Shares"),
    Panel("Toxic share", (Query(f"driftwatch:toxic_rate:5m{{{SEG}}}", LEGEND_SEG),),
          unit="percentunit", width=12),
    Panel("Ungrounded share", (Query(f"driftwatch:ungrounded_rate:5m{{{SEG}}}", LEGEND_SEG),),
          unit="percentunit", width=12),
    Panel("Flags per scored record", (Query(
        f"sum by (flag, {BY_SEG}) (rate(driftwatch_flags_total{{{SEG}}}[{RATE}]))\n"
        f"/ ignoring (flag) group_left sum by ({BY_SEG}) "
        f"(rate(driftwatch_model_scored_records_total{{{SEG}}}[{RATE}]))",
        f"{{{{flag}}}} {LEGEND_SEG}"),), unit="percentunit", width=24),
    Row("Score quantiles"),
    Panel("Toxicity p50 / p95", _quantiles(
        "driftwatch_toxicity_score", BY_SEG, (0.5, 0.95), LEGEND_SEG,
        f'field="response", {SEG}'), unit="percentunit", width=12),
    Panel("Groundedness p10 / p50", _quantiles(
        "driftwatch_groundedness_score", BY_SEG, (0.1, 0.5), LEGEND_SEG),
        unit="percentunit", width=12, description="Low is bad: share of supported sentences."),
    Row("Reviewed by people"),
    Panel("Flag precision and recall, measured by reviewers", (
        Query(f"max by (flag, {BY_SEG}) (driftwatch_flag_precision{{{SEG}}})",
              f"precision {{{{flag}}}} {LEGEND_SEG}"),
        Query(f"max by (flag, {BY_SEG}) (driftwatch_flag_recall{{{SEG}}})",
              f"recall {{{{flag}}}} {LEGEND_SEG}")), unit="percentunit", width=12,
        description="Stratified estimates from the review queue's labels; "
                    "driftwatch_flag_labels says how many labels stand behind each."),
    Panel("Label-corrected rate", (Query(
        f"max by (flag, {BY_SEG}) (driftwatch_flag_corrected_rate{{{SEG}}})",
        f"{{{{flag}}}} {LEGEND_SEG}"),), unit="percentunit", width=6),
    Panel("Records sent for review", (Query(
        f"sum by (reason) (rate(driftwatch_review_sampled_total[{RATE}]))", "{{reason}}"),),
        unit="reqps", width=6, stacked=True),
    Row("Tokenization"),
    Panel("Reported tokens per counted token (learnt line)", (Query(
        f'max by (stream, {BY_SEG}) (driftwatch_token_line{{parameter="slope", {SEG}}})',
        f"slope {{{{stream}}}} {LEGEND_SEG}"),
        Query(f'max by (stream, {BY_SEG}) (driftwatch_token_line{{parameter="offset", {SEG}}})',
              f"offset {{{{stream}}}} {LEGEND_SEG}")), width=12,
        description="The tokenization scorer's line, learnt per segment: a new line after a "
                    "restart or rollout means the stack's tokenizer or template changed."),
    Panel("Token-count mismatches", (Query(
        f'sum by ({BY_SEG}) (rate(driftwatch_flags_total{{flag="token_mismatch", {SEG}}}'
        f"[{RATE}]))", LEGEND_SEG),), width=12,
        description="Records whose reported prompt or completion tokens are off the line."),
))

CANARY = Dashboard("driftwatch-canary", "driftwatch / Canary",
                   "Stable and canary side by side, the gate's differences and its verdict.", (
    Row("Verdict"),
    Panel("Verdict", (Query('max by (model, verdict) (driftwatch_canary_verdict{model=~"$model"})',
                            "{{model}} {{verdict}}"),), kind="state-timeline", width=12),
    Panel("Records per arm", (Query(
        'max by (model, arm) (driftwatch_canary_records{model=~"$model"})',
        "{{model}} {{arm}}"),), width=12),
    Panel("Canary minus stable (estimate and confidence bounds)", (Query(
        'max by (model, gate, bound) (driftwatch_canary_difference{model=~"$model"})',
        "{{model}} {{gate}} {{bound}}"),), width=24,
        description="Per gate: the estimate and its always-valid confidence bounds."),
    Row("Side by side"),
    Panel("Toxic share by deployment", (Query(
        f"max by (model, deployment) (driftwatch:toxic_rate:5m{{{SEG}}})",
        "{{model}} {{deployment}}"),), unit="percentunit", width=8),
    Panel("Ungrounded share by deployment", (Query(
        f"max by (model, deployment) (driftwatch:ungrounded_rate:5m{{{SEG}}})",
        "{{model}} {{deployment}}"),), unit="percentunit", width=8),
    Panel("p95 latency by deployment", _quantiles(
        "driftwatch:request_latency_seconds_bucket:rate5m", "model, deployment", (0.95,),
        "{{model}} {{deployment}}", SEG, recorded=True), unit="s", width=8),
    Panel("Error share by deployment", (Query(
        f'(sum by (model, deployment) (rate(driftwatch_responses_total{{status="error", '
        f"{SEG}}}[{RATE}]))\n"
        f"or 0 * sum by (model, deployment) (rate(driftwatch_responses_total{{{SEG}}}"
        f"[{RATE}])))\n"
        f"/ sum by (model, deployment) (rate(driftwatch_responses_total{{{SEG}}}"
        f"[{RATE}]))", "{{model}} {{deployment}}"),), unit="percentunit", width=12),
    Panel("Throughput by deployment", (Query(
        f'sum by (model, deployment) (driftwatch:records:rate5m{{outcome="scored", '
        f"{SEG}}})", "{{model}} {{deployment}}"),), unit="reqps", width=12),
    Row("Shadow"),
    Panel("Shadow verdict", (Query(
        'max by (model, verdict) (driftwatch_shadow_verdict{model=~"$model"})',
        "{{model}} {{verdict}}"),), kind="state-timeline", width=12,
        description="The shadow's answers against stable's to the same requests, paired."),
    Panel("Shadow minus stable per request (estimate and confidence bounds)", (Query(
        'max by (model, gate, bound) (driftwatch_shadow_difference{model=~"$model"})',
        "{{model}} {{gate}} {{bound}}"),), width=12),
    Panel("Shadow records paired and unpaired", (Query(
        f'sum by (model, outcome) (rate(driftwatch_shadow_records_total{{model=~"$model"}}'
        f"[{RATE}]))", "{{model}} {{outcome}}"),), unit="reqps", width=12,
        description="Unpaired: no stable answer to the same request within the window."),
    Panel("Shadow answers unlike stable's (cosine below 0.8)", (Query(
        f'sum by (model) (rate(driftwatch_shadow_answer_cosine_bucket{{le="0.8", '
        f'model=~"$model"}}[{RATE}]))\n/ sum by (model) '
        f'(rate(driftwatch_shadow_answer_cosine_count{{model=~"$model"}}[{RATE}]))',
        "{{model}}"),), unit="percentunit", width=12),
))

OPERATIONS = Dashboard("driftwatch-operations", "driftwatch / Operations",
                       "Serving latency, tokens and cost; the daemon's own work and deliveries.", (
    Row("Serving"),
    Panel("Request latency p50 / p95 / p99", _quantiles(
        "driftwatch:request_latency_seconds_bucket:rate5m", "model, deployment",
        (0.5, 0.95, 0.99), "{{model}} {{deployment}}", recorded=True), unit="s", width=12),
    Panel("Tokens per second", (Query(
        f"sum by (kind, model) (rate(driftwatch_tokens_total{{{SEG}}}[{RATE}]))",
        "{{kind}} {{model}}"),), width=6, stacked=True),
    Panel("Cost per hour", (Query(
        f"sum by (model, deployment) (rate(driftwatch_cost_usd_total{{{SEG}}}[{RATE}])) * 3600",
        "{{model}} {{deployment}}"),), unit="currencyUSD", width=6, stacked=True),
    Row("Scoring"),
    Panel("Embedder throughput (texts per second of model time)", (Query(
        f'sum(rate(driftwatch_embedder_texts_total{{outcome="embedded"}}[{RATE}]))\n'
        f"/ sum(rate(driftwatch_embedder_seconds_total[{RATE}]))", "texts/s"),),
        width=8),
    Panel("Embedder texts by outcome", (Query(
        f"sum by (outcome) (rate(driftwatch_embedder_texts_total[{RATE}]))", "{{outcome}}"),),
        unit="reqps", width=8, stacked=True),
    Panel("Models and devices", (Query(
        "max by (role, name, device, backend, precision) (driftwatch_model_info)",
        instant=True),), kind="table", width=8),
    Panel("Batch processing time p50 / p95", _quantiles(
        "driftwatch_batch_processing_seconds", "", (0.5, 0.95), "", selector=""),
        unit="s", width=6),
    Panel("Batch size p50 / p95", _quantiles(
        "driftwatch_batch_size_records", "", (0.5, 0.95), "", selector=""), width=6),
    Panel("Since each process's last batch", (Query(
        "time() - (driftwatch_last_processed_timestamp_seconds > 0)", "{{instance}}"),),
        unit="s", width=6,
        description="Seconds since the process finished a batch: it grows while there is no "
                    "traffic, and while the process is stuck (with lag: DriftwatchStalled)."),
    Panel("Segments per process", (Query("max by (instance) (driftwatch_segments)",
                                         "{{instance}}"),), width=6,
          description="Distinct combinations of the segment labels each process has seen; "
                      "at metrics.max_segments (500) a new one is reported with every label "
                      "'other' (logged once)."),
    Row("Actions"),
    Panel("Outbox depth", (Query("sum by (action) (driftwatch_outbox_depth)", "{{action}}"),),
          width=8),
    Panel("Delivery attempts by outcome", (Query(
        f"sum by (action, outcome) (rate(driftwatch_outbox_deliveries_total[{RATE}]))",
        "{{action}} {{outcome}}"),), unit="reqps", width=8, stacked=True),
    Panel("Delivery failures", (Query(
        "sum by (action) (rate(driftwatch_outbox_deliveries_total"
        f'{{outcome=~"retry|failed|expired|disabled"}}[{RATE}]))', "{{action}}"),),
        unit="reqps", width=8),
    Panel("Delivery time p95", _quantiles(
        "driftwatch_outbox_delivery_seconds", "action", (0.95,), "{{action}}", selector=""),
        unit="s", width=12),
    Panel("Alerts pushed to Alertmanager", (Query(
        "sum by (action) (driftwatch_alerts_active)", "{{action}}"),), width=12),
))

DASHBOARDS: tuple[Dashboard, ...] = (OVERVIEW, DRIFT, QUALITY, CANARY, OPERATIONS)
# The metric whose label values fill the model / model_version / deployment variables.
VARIABLE_METRIC = "driftwatch_records_total"
