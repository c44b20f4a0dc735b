"""Config sections for acting on findings: actions (where decisions go), rules (when to
decide), the outbox (how deliveries survive), and the canary gate."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from consumers.settings import SECTION, Topic
from monitor.config.names import ENV_NAME, NAME, GateName
from monitor.types import EventType, Severity

URL = r"^https?://[^\s/]+(/\S*)?$"


def shown_url(url: str) -> str:
    """A URL as logs and errors may show it: scheme, host and port, the rest left out. Many
    hooks carry their secret in the path or the query (Slack's, Teams', a token parameter),
    and a URL may hold a user and password. Plain string work, so an invalid URL is cut too."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    tail = rest[len(authority):]
    return f"{scheme}{sep}{authority.rsplit('@', 1)[-1]}" + ("/…" if tail not in ("", "/")
                                                                else "")


class _Frozen(BaseModel):
    model_config = SECTION


# -- Actions ------------------------------------------------------------------------------------

class WebhookAction(_Frozen):
    """HTTP POST signed per Standard Webhooks v1 (webhook-id, -timestamp, -signature)."""

    type: Literal["webhook"]
    url: str = Field(pattern=URL)
    # The signing secret (`whsec_<base64>`) comes from the environment or a file, never the
    # config file itself, and is never logged.
    secret_env: str | None = Field(default="DRIFTWATCH_WEBHOOK_SECRET", pattern=ENV_NAME)
    secret_file: Path | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Only these event types are sent here (None: all).
    event_types: list[EventType] | None = None


class AlertmanagerAction(_Frozen):
    """Alerts pushed to Alertmanager's v2 API, re-sent while firing, then resolved."""

    type: Literal["alertmanager"]
    url: str = Field(pattern=URL)  # base URL, e.g. http://alertmanager:9093
    # Prometheus' semantics: re-send firing alerts at this interval with endsAt 4x ahead,
    # and keep sending a resolved alert for `resolved_for_seconds` after it clears.
    resend_seconds: float = Field(default=60.0, ge=0.1, le=3_600)
    resolved_for_seconds: float = Field(default=900.0, ge=0, le=86_400)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    generator_url: str | None = Field(default=None, pattern=URL)


class RolloverAction(_Frozen):
    """Adopt the segment's recent records as its drift reference (saved as a new version).
    Explicit in the config, never a default: a rollover can hide a drift that persists."""

    type: Literal["reference_rollover"]


Action = Annotated[WebhookAction | AlertmanagerAction | RolloverAction,
                   Field(discriminator="type")]


def rollover_actions(actions: Mapping[str, Action]) -> frozenset[str]:
    """Names of the actions that roll the drift reference over (done in the pipeline)."""
    return frozenset(name for name, a in actions.items() if a.type == "reference_rollover")


class OutboxSettings(_Frozen):
    """Where the outbox lives, how deliveries are retried, and how long rows are kept."""

    path: Path = Path("state/outbox.sqlite3")
    # Retries: exponential backoff with full jitter, from `backoff_initial` up to
    # `backoff_max`; a delivery older than `max_age` is given up (counted as expired).
    backoff_initial_seconds: float = Field(default=1.0, gt=0, le=3_600)
    backoff_max_seconds: float = Field(default=300.0, gt=0, le=86_400)
    max_age_seconds: float = Field(default=86_400.0, gt=0, le=30 * 86_400)
    poll_seconds: float = Field(default=0.5, gt=0, le=60)
    keep_days: float = Field(default=30.0, gt=0)  # delivered rows are pruned after this


# -- Rules --------------------------------------------------------------------------------------

RateSignal = Literal[
    "toxic", "ungrounded", "refusal", "empty_response", "truncated", "charset_anomaly",
    "token_mismatch", "error", "dead_letter",
]


class _Window(_Frozen):
    # The rate or quantile is taken over the last `window_records` records, or the records of
    # the last `window_seconds` of event time when that is set; nothing is decided on fewer
    # than `min_records`.
    window_records: int = Field(default=1_000, ge=1, le=10_000_000)
    window_seconds: float | None = Field(default=None, gt=0)
    min_records: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _min_fits(self) -> _Window:
        if self.window_seconds is None and self.min_records > self.window_records:
            raise ValueError(f"min_records ({self.min_records}) is larger than window_records "
                             f"({self.window_records}): the rule could never decide")
        return self


class DriftCondition(_Frozen):
    """The drift flag of a detector on a stream, in K consecutive windows."""

    kind: Literal["drift"]
    # new_error_class: each class new to the segment fires once (decides drift.new_error_class;
    # `any` leaves it out, `consecutive` does not apply).
    detector: Literal["embedding", "feature", "change", "new_error_class", "any"] = "embedding"
    stream: str = "any"  # prompt | response | a feature name (latency_seconds, outcome...) | any
    consecutive: int = Field(default=1, ge=1, le=1_000)
    # The condition clears after this many records of the segment without a detection.
    clear_after_records: int = Field(default=1_000, ge=1)


class RateCondition(_Window):
    """A share of records (toxic, ungrounded, refusal, error, dead letter...) risen above the
    segment's own reference rate, or above an absolute bound.

    Without `above`: a one-sided sequential test (detectors.rate_shift, a CUSUM) against the
    rate of the segment's first `reference_records` values, tuned to a rise of
    `above_reference_by`, with `ert` records between false decisions on average. With `above`:
    the share over a window (`window_records` or `window_seconds`, from `min_records`)."""

    kind: Literal["rate"]
    signal: RateSignal
    above: float | None = Field(default=None, ge=0, lt=1)
    above_reference_by: float = Field(default=0.03, gt=0, lt=1)
    reference_records: int = Field(default=1_000, ge=100, le=10_000_000)
    ert: float = Field(default=100_000, ge=100, le=1e9)

    @model_validator(mode="after")
    def _one_form(self) -> RateCondition:
        relative = {"above_reference_by", "reference_records", "ert"} & self.model_fields_set
        window = {"window_records", "window_seconds", "min_records"} & self.model_fields_set
        if self.above is not None and relative:
            raise ValueError(f"{sorted(relative)} belong to a rule against the reference rate; "
                             f"with an absolute bound (above: {self.above}) drop them")
        if self.above is None and window:
            raise ValueError(f"{sorted(window)} belong to a rule with an absolute bound; add "
                             f"`above: <share>` or drop them (against the reference rate the "
                             f"test is sequential, with no window)")
        return self

    @property
    def relative(self) -> bool:
        return self.above is None


class LatencyCondition(_Window):
    """A latency quantile above a bound (seconds)."""

    kind: Literal["latency"]
    quantile: float = Field(default=0.99, gt=0, lt=1)
    above_seconds: float = Field(gt=0)


class LabelledCondition(_Frozen):
    """The label-corrected rate of a flag (from the review queue's labels) above a bound."""

    kind: Literal["labelled"]
    flag: Literal["toxic", "ungrounded", "refusal"]
    above: float = Field(ge=0, lt=1)
    min_labels: int = Field(default=30, ge=1)  # labelled records behind the estimate


Condition = Annotated[DriftCondition | RateCondition | LatencyCondition | LabelledCondition,
                      Field(discriminator="kind")]


class Rule(_Frozen):
    """A named condition, with the event it decides and the actions taken while it holds."""

    name: str = Field(pattern=NAME)
    when: Condition
    severity: Severity = "warning"
    # While the condition holds, actions repeat at most once per cooldown (event time).
    cooldown_seconds: float = Field(default=3_600.0, ge=0)
    actions: list[str] = Field(default_factory=list)  # names of entries in `actions`
    # Default: drift.detected for drift conditions, quality.regressed otherwise.
    event_type: EventType | None = None

    @property
    def decides(self) -> str:
        if self.event_type is not None:
            return self.event_type
        if isinstance(self.when, DriftCondition):
            return ("drift.new_error_class" if self.when.detector == "new_error_class"
                    else "drift.detected")
        return "quality.regressed"


def check_arms(hard: Sequence[str], soft: Sequence[str], stable: str, other: str,
               name: str) -> None:
    """A gate is hard or soft, not both; the arms are two deployments."""
    both = sorted(set(hard) & set(soft))
    if both:
        raise ValueError(f"gates {both} are both hard and soft; list each once")
    if stable == other:
        raise ValueError(f"stable and {name} are both {stable!r}")


# -- Canary gate --------------------------------------------------------------------------------

# Sized so that an identical canary is promoted within about 1,000 records per arm at usual
# rates (`driftwatch canary plan` measures it): a margin m needs about 2 p (1 - p) x 9 / m^2
# records per arm at a stable rate p (at promote_alpha 0.05), so rarer events get a tighter one.
DEFAULT_MARGINS: dict[str, float] = {
    "toxic": 0.02, "ungrounded": 0.05, "refusal": 0.03, "error": 0.02, "latency_p95": 0.04,
}


class CanarySettings(_Frozen):
    """Canary against stable on live traffic (the `deployment` field of each record)."""

    enabled: bool = False
    stable: str = "stable"
    canary: str = "canary"
    # Each gate's chance of a false rollback over an unbounded run (always-valid sequential
    # tests: peeking after every batch is allowed).
    alpha: float = Field(default=0.01, gt=0, lt=0.5)
    # Hard gates (safety) roll back as soon as the canary is shown worse; soft gates need
    # `min_records` per arm first.
    hard_gates: list[GateName] = ["toxic", "ungrounded"]
    soft_gates: list[GateName] = ["refusal", "error", "latency_p95", "embedding_drift"]
    min_records: int = Field(default=500, ge=10)
    # Promote once every gate has its minimum and its interval at `promote_alpha` shows the
    # canary worse by no more than the gate's margin (absolute difference in rates; for
    # latency_p95, in the share of requests slower than stable's p95, 5% on stable). A
    # promotion of a canary worse by more than that has a chance of at most promote_alpha.
    promote_alpha: float = Field(default=0.05, gt=0, lt=0.5)
    margins: dict[GateName, float] = Field(default_factory=dict)
    margin: float | None = Field(default=None, gt=0, lt=1)  # every gate not in `margins`
    actions: list[str] = Field(default_factory=list)  # targets of canary.* decisions

    @model_validator(mode="after")
    def _margins_in_range(self) -> CanarySettings:
        bad = {g: v for g, v in self.margins.items() if not 0 < v < 1}
        if bad:
            raise ValueError(f"margins {bad}: each must be in (0, 1)")
        if "embedding_drift" in self.margins:
            raise ValueError("margins.embedding_drift: the embedding gate is a two-sample test "
                             "with no margin; leave it out")
        return self

    def margin_of(self, gate: str) -> float:
        """The gate's margin: `margins`, else `margin`, else the default for that gate."""
        if gate in self.margins:
            return self.margins[gate]  # type: ignore[index]
        return self.margin if self.margin is not None else DEFAULT_MARGINS.get(gate, 0.02)

    @model_validator(mode="after")
    def _gates_disjoint(self) -> CanarySettings:
        check_arms(self.hard_gates, self.soft_gates, self.stable, self.canary, "canary")
        return self


# -- Shadow comparison --------------------------------------------------------------------------

ShadowGate = Literal["toxic", "ungrounded", "refusal", "error", "latency_p95"]


class ShadowSettings(_Frozen):
    """A shadow model's answers (never shown; `deployment: shadow` on the wire) against the
    stable answers to the same requests, compared pair by pair."""

    enabled: bool = False
    stable: str = "stable"
    shadow: str = "shadow"
    # How long, in event time, and how many, records wait for their other half; a shadow
    # record whose stable one never comes is counted as unpaired, not compared.
    window_seconds: float = Field(default=600.0, gt=0, le=86_400)
    max_pending: int = Field(default=20_000, ge=100, le=10_000_000)
    # Always-valid tests on the paired differences, as the canary's on two arms: a gate fails
    # when the shadow is shown worse at `alpha` (hard gates at once, soft ones from
    # `min_pairs`); the shadow is ready when every gate has `min_pairs` and is within its
    # margin at `promote_alpha`.
    alpha: float = Field(default=0.01, gt=0, lt=0.5)
    promote_alpha: float = Field(default=0.05, gt=0, lt=0.5)
    hard_gates: list[ShadowGate] = ["toxic", "ungrounded"]
    soft_gates: list[ShadowGate] = ["refusal", "error", "latency_p95"]
    min_pairs: int = Field(default=300, ge=10)
    margins: dict[ShadowGate, float] = Field(default_factory=dict)
    actions: list[str] = Field(default_factory=list)  # targets of shadow.* decisions

    @model_validator(mode="after")
    def _consistent(self) -> ShadowSettings:
        check_arms(self.hard_gates, self.soft_gates, self.stable, self.shadow, "shadow")
        bad = {g: v for g, v in self.margins.items() if not 0 < v < 1}
        if bad:
            raise ValueError(f"margins {bad}: each must be in (0, 1)")
        return self

    def margin_of(self, gate: str) -> float:
        return self.margins.get(gate, DEFAULT_MARGINS.get(gate, 0.02))  # type: ignore[call-overload]


# -- Human review ---------------------------------------------------------------------------------

class ReviewSettings(_Frozen):
    """Records sampled for people to label (`review.file` and/or `review.topic`), and their
    labels fed back on `review.labels_topic` (see monitor/acting/review.py)."""

    enabled: bool = False
    file: Path | None = None  # JSON lines, appended
    topic: Topic | None = None  # on the daemon's Kafka cluster
    labels_topic: Topic | None = None  # {request_id, label, reviewer} JSON messages
    store: Path = Path("state/review.sqlite3")  # what was sampled, the frame, the labels
    max_per_hour: int = Field(default=100, ge=1, le=1_000_000)
    # A toxicity or groundedness score this close to its flag threshold is borderline.
    borderline_width: float = Field(default=0.1, gt=0, lt=1)
    borderline_rate: float = Field(default=0.2, gt=0, le=1)  # of borderline records
    uniform_rate: float = Field(default=0.01, gt=0, le=1)  # of the rest: the control

    @model_validator(mode="after")
    def _somewhere(self) -> ReviewSettings:
        if self.enabled and self.file is None and self.topic is None:
            raise ValueError("review.enabled needs review.file or review.topic (or both): "
                             "somewhere to put the records to review")
        return self
