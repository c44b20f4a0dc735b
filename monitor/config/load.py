"""driftwatch.yaml: validated by pydantic; every setting can be overridden from the environment.

`DRIFTWATCH_KAFKA__BOOTSTRAP_SERVERS='["broker:9092"]'` overrides `kafka.bootstrap_servers`:
prefix DRIFTWATCH_, sections joined by a double underscore, lists and maps as JSON.
"""

from __future__ import annotations

import json
import os
import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from consumers.settings import (
    TOPIC,
    BatchSettings,
    JoinSettings,
    KafkaClientSettings,
    KafkaSettings,
    ValidationSettings,
    WireSettings,
    any_case,
    shared_topic,
)
from monitor.config.acting import (
    URL,
    Action,
    CanarySettings,
    Condition,
    DriftCondition,
    OutboxSettings,
    ReviewSettings,
    Rule,
    ShadowSettings,
    shown_url,
)
from monitor.config.checkpoint import CheckpointSettings
from monitor.config.drift import DriftSettings
from monitor.config.names import (
    ENV_NAME,
    HOST,
    MODEL_SCORERS,
    NAME,
    SIGNAL_SCORERS,
    ScorerName,
)
from monitor.config.scoring import DEVICE, ScoringSettings
from monitor.config.telemetry import MetricsSettings

ENV_PREFIX = "DRIFTWATCH_"


class ConfigError(ValueError):
    """A config that cannot run; the message names each bad field, its value and what is allowed."""


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


# `debug` as DEBUG (LOG_LEVEL=debug is how most tools take it), `warn` as WARNING.
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"],
                     any_case("DEBUG", "INFO", "WARNING", "ERROR", WARN="WARNING")]


class Config(_EnvBeatsFile):
    """The whole driftwatch config, from driftwatch.yaml with environment overrides."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True,
        allow_inf_nan=False,
    )

    kafka: KafkaSettings
    join: JoinSettings = JoinSettings()
    batch: BatchSettings = BatchSettings()
    validation: ValidationSettings = ValidationSettings()
    wire: WireSettings = WireSettings()
    metrics: MetricsSettings = MetricsSettings()
    scorers: list[ScorerName] = [
        "latency", "tokens", "cost", "status", "length", "toxicity", "groundedness", "sanity"
    ]
    scoring: ScoringSettings = ScoringSettings()
    drift: DriftSettings = DriftSettings()
    log_level: LogLevel = "INFO"
    # json: one object a line (time, level, logger, message, and exc_info with a traceback).
    log_format: Literal["text", "json"] = "text"
    # JSON lines of every scored record's request_id and Kafka positions, for reconciliation.
    audit_log: Path | None = None
    actions: dict[str, Action] = {}
    rules: list[Rule] = []
    outbox: OutboxSettings = OutboxSettings()
    canary: CanarySettings = CanarySettings()
    shadow: ShadowSettings = ShadowSettings()
    review: ReviewSettings = ReviewSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()

    @model_validator(mode="after")
    def _wire_topics_read(self) -> Config:
        inputs = self.kafka.topics
        for topic in self.wire.topics:
            if topic not in inputs:
                raise ValueError(
                    f"wire.topics names {topic!r}, which is no input topic of this config; "
                    f"the input topics: {', '.join(inputs)}")
        if self.kafka.topic is None:  # halves to join: one record a message
            for topic in inputs:
                settings, where = self.wire.for_topic(topic)
                if settings.format != "json":
                    raise ValueError(f"{where}.format = {settings.format!r}: a request or "
                                     "response topic holds one half a message; OTLP "
                                     "reads whole calls from kafka.topic")
        return self

    @model_validator(mode="after")
    def _rules_fit(self) -> Config:
        check_rules(self.rules, self.actions, self.canary, self.scorers, self.drift,
                    self.shadow, self.review)
        if self.review.enabled:
            review = [(f"review.{name}", topic) for name in ("topic", "labels_topic")
                      if (topic := getattr(self.review, name))]
            shared = shared_topic([*self.kafka.topic_roles(), *review])
            if shared is not None:
                raise ValueError(shared)
        return self


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping. YAML says keys are unique,
    yet PyYAML keeps the last one silently: a second `kafka:` section (two files pasted
    together) replaced the first without a word. Keys from a merge (`<<: *base`) may still
    be overridden."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    lines: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # construct_mapping merges these
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = key in lines
        except TypeError:
            continue  # unhashable: construct_mapping says so
        if seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"{key!r} is set twice in one mapping (lines {lines[key]} and "
                f"{key_node.start_mark.line + 1}): keep one", key_node.start_mark)
        lines[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _read_yaml(path: str | Path | None) -> tuple[dict[str, Any], Path | None]:
    if path is None:
        return {}, None
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as text:  # a stream: errors name the file
            loaded = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
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
    except SettingsError as exc:
        raise ConfigError(_env_not_json(Config, exc)) from None


class OfflineConfig(_EnvBeatsFile):
    """The parts of the config that `driftwatch score` and `backtest` use (no Kafka needed)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore", frozen=True,
        allow_inf_nan=False,
    )

    scorers: list[ScorerName] = Config.model_fields["scorers"].default
    scoring: ScoringSettings = ScoringSettings()
    drift: DriftSettings = DriftSettings()
    metrics: MetricsSettings = MetricsSettings()
    actions: dict[str, Action] = {}
    rules: list[Rule] = []
    canary: CanarySettings = CanarySettings()
    shadow: ShadowSettings = ShadowSettings()
    review: ReviewSettings = ReviewSettings()
    kafka: KafkaClientSettings = KafkaClientSettings()  # for reading a topic, if one is read
    # What a record must hold, as the daemon reads it: the same records valid offline.
    validation: ValidationSettings = ValidationSettings()
    wire: WireSettings = WireSettings()  # the producer's field names, as the daemon reads them

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
        check_rules(self.rules, self.actions, self.canary, self.scorers, self.drift,
                    self.shadow, self.review)
        return self


def check_rules(rules: list[Rule], actions: dict[str, Action], canary: CanarySettings,
                scorers: list[str], drift: DriftSettings,
                shadow: ShadowSettings | None = None,
                review: ReviewSettings | None = None) -> None:
    """Cross-field checks: unique rule names, every named action defined, and every signal
    a rule watches produced by an enabled scorer or detector."""
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
        if when.kind == "drift" and not (drift.enabled and set(scorers) & MODEL_SCORERS):
            problems.append(f"rule {rule.name!r}: when.kind: 'drift' needs drift.enabled: true "
                            f"and a model scorer ({sorted(MODEL_SCORERS)}) for embeddings")
        if when.kind == "labelled" and not (review is not None and review.enabled
                                            and review.labels_topic):
            problems.append(f"rule {rule.name!r}: when.kind: 'labelled' needs "
                            f"review.enabled: true and review.labels_topic (where labels come)")
        if (isinstance(when, DriftCondition) and when.detector == "new_error_class"
                and not drift.new_error_classes.enabled):
            problems.append(f"rule {rule.name!r}: when.detector: 'new_error_class' needs "
                            f"drift.new_error_classes.enabled: true")
        for name in rule.actions:
            if name not in actions:
                problems.append(f"rule {rule.name!r}: actions: {name!r} is not defined; "
                                f"defined actions: {sorted(actions)}")
    for section, names in (("canary", canary.actions),
                           ("shadow", shadow.actions if shadow is not None else [])):
        for name in names:
            if name not in actions:
                problems.append(f"{section}.actions: {name!r} is not defined; defined "
                                f"actions: {sorted(actions)}")
    if problems:
        raise ValueError("; ".join(problems))


def load_offline_config(path: str | Path | None) -> OfflineConfig:
    data, path = _read_yaml(path)
    try:
        return OfflineConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, data.get("rules"))) from None
    except SettingsError as exc:
        raise ConfigError(_env_not_json(OfflineConfig, exc)) from None


def _field_name(loc: tuple[int | str, ...], rules: object) -> str:
    """rules.2.when.above -> rule 'toxic-share' (rules[2]): when.above."""
    # pydantic puts a discriminated union's tag in the path (rules.0.when.rate.signal,
    # actions.hook.webhook.url): the user's file has no such level.
    loc = tuple(p for i, p in enumerate(loc) if not (
        (i >= 1 and loc[i - 1] == "when" and p in _TAGS["kind"])
        or (i == 2 and loc[0] == "actions" and p in _TAGS["type"])))
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rule = rules[loc[1]] if isinstance(rules, list) and loc[1] < len(rules) else None
        name = rule.get("name") if isinstance(rule, dict) else None
        rest = ".".join(str(p) for p in loc[2:]) or "(the rule)"
        return f"rule {name!r} (rules[{loc[1]}]): {rest}" if name else f"rules[{loc[1]}]: {rest}"
    return ".".join(str(p) for p in loc) or "(top level)"


def _tags(union: Any, discriminator: str) -> tuple[str, ...]:
    """The values a discriminated union's discriminator takes (`kind` of a rule's `when`)."""
    members = get_args(get_args(union)[0])
    return tuple(tag for model in members
                 for tag in get_args(model.model_fields[discriminator].annotation))


_TAGS = {"kind": _tags(Condition, "kind"), "type": _tags(Action, "type")}
# What a pattern asks for, in words (pydantic quotes the regular expression).
_PATTERNS = {
    URL: "an http:// or https:// URL with a host",
    ENV_NAME: "an environment variable's name (letters, digits and _, not first a digit)",
    NAME: "a name of letters, digits, '_', '.' and '-', at most 64, first a letter or digit",
    DEVICE: "auto, cpu, cuda or cuda:N",
    HOST: "a host name or address to listen on, without scheme, port or brackets (127.0.0.1, "
          "0.0.0.0, ::)",
    TOPIC: "a Kafka topic's name: letters, digits, '.', '_' and '-', at most 249",
}


def _environment() -> dict[str, str]:
    """driftwatch's variables by upper-case name (pydantic-settings matches them in any case)."""
    return {k.upper(): v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)}


def environment_warnings() -> list[str]:
    """DRIFTWATCH_* variables that look meant for a setting and set none: pydantic-settings
    passes over them in silence, so DRIFTWATCH_KAFKA_TOPIC (one underscore) left kafka.topic
    unset, and DRIFTWATCH_METRIC__PORT the port as it was. Warnings, not errors: other
    variables share the prefix (a secret a config names, Kubernetes' DRIFTWATCH_*_PORT for
    a Service named driftwatch-...)."""
    warnings = []
    fields = Config.model_fields
    for variable, value in sorted(_environment().items()):
        if re.match(r"(tcp|udp|sctp)://", value):  # DRIFTWATCH_METRICS_PORT of a Service
            continue
        name = variable.removeprefix(ENV_PREFIX).lower()
        section, nested, _ = name.partition("__")
        if nested:
            if section not in fields:
                warnings.append(f"{variable} sets nothing: there is no setting {section!r} "
                                f"(the top level: {', '.join(fields)})")
            continue
        if name in fields:
            continue
        for known, model in _sections():
            field = name.removeprefix(known + "_")
            if field != name and field in model.model_fields:
                warnings.append(f"{variable} sets nothing: {known}.{field} is "
                                f"{ENV_PREFIX}{known.upper()}__{field.upper()} (two "
                                "underscores between a section and its setting)")
    return warnings


def _sections() -> Iterator[tuple[str, type[BaseModel]]]:
    """The top-level settings that are sections (a model of settings), by name."""
    for name, field in Config.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield name, field.annotation


def _env_source(loc: tuple[int | str, ...], env: dict[str, str]) -> str | None:
    """The variable that set the setting at `loc` (or the list or map holding it), if any: a
    value from the environment is not in the file the user is reading."""
    names = []
    for part in loc:
        if not isinstance(part, str):
            break
        names.append(part.upper())
    while names:
        name = ENV_PREFIX + "__".join(names)
        if name in env:
            return name
        names.pop()
    return None


def _explain(exc: ValidationError, path: Path | None, rules: object = None) -> str:
    where = f" in {path}" if path else " (no config file: the environment and the defaults)"
    lines = [f"invalid configuration{where} ({exc.error_count()} problem(s)):"]
    env = _environment()
    for err in exc.errors():
        field = _field_name(err["loc"], rules)
        if field.endswith("url") and isinstance(err["input"], str):
            err["input"] = shown_url(err["input"])  # check-config's output ends up in CI logs
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown setting (value {err['input']!r}); check the spelling")
        elif err["type"] == "missing":
            lines.append(f"  {field}: required setting is missing")
        elif err["type"] == "value_error":
            lines.append(f"  {field}: {msg}")
        elif err["type"] == "string_pattern_mismatch" and err["ctx"]["pattern"] in _PATTERNS:
            lines.append(f"  {field} = {err['input']!r}: should be "
                         f"{_PATTERNS[err['ctx']['pattern']]}")
        elif err["type"] in ("union_tag_not_found", "union_tag_invalid"):
            # pydantic names the section, not the field that picks its kind
            tag = str(err["ctx"]["discriminator"]).strip("'")
            choices = ", ".join(map(repr, _TAGS.get(tag, ())))
            if err["type"] == "union_tag_not_found":
                lines.append(f"  {field}.{tag}: required setting is missing; one of {choices}")
            else:
                lines.append(f"  {field}.{tag} = {err['ctx']['tag']!r}: one of {choices}")
        else:
            lines.append(f"  {field} = {err['input']!r}: {msg}")
        if source := _env_source(err["loc"], env):
            lines[-1] += f" (set by the environment: {source})"
    lines.append(
        f"  (any setting can also come from the environment, e.g. {ENV_PREFIX}KAFKA__GROUP_ID)"
    )
    lines += [f"  (note: {warning})" for warning in environment_warnings()]
    return "\n".join(lines)


def _json_kind(annotation: Any) -> str | None:
    """"list" or "map" when pydantic-settings reads a setting of this type from the
    environment as JSON (a section reads as a map); None when it takes the text as it is."""
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = get_args(annotation)
        return None if NoDecode in metadata else _json_kind(inner)
    if origin in (Union, types.UnionType):
        kinds = {_json_kind(a) for a in get_args(annotation) if a is not type(None)}
        return "list" if "list" in kinds else "map" if "map" in kinds else None
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple, set):
        return "list"
    if origin is dict or annotation is dict or (
            isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return "map"
    return None


def _setting(model: type[BaseModel], path: list[str]) -> Any:
    """The field behind `path` (lower-case names), or None where the path leaves the models."""
    for depth, name in enumerate(path):
        field = model.model_fields.get(name)
        if field is None:
            return None
        if depth == len(path) - 1:
            return field
        if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return None


def _env_not_json(model: type[BaseModel], exc: SettingsError) -> str:
    """pydantic-settings' error for a list or map in the environment that is not JSON names
    only the top-level section; this names the variable, its value and how to write it."""
    lines = []
    for name, value in sorted(_environment().items()):
        field = _setting(model, name.removeprefix(ENV_PREFIX).lower().split("__"))
        if field is None or NoDecode in field.metadata:
            continue
        kind = _json_kind(field.annotation)
        if kind is None:
            continue
        try:
            json.loads(value)
        except ValueError:
            if kind == "list":
                example = json.dumps([p.strip() for p in value.split(",") if p.strip()])
                lines.append(f"  {name} = {value!r}: a list from the environment is JSON, "
                             f"e.g. {name}='{example}'")
            else:
                lines.append(f"  {name} = {value!r}: a map from the environment is JSON, "
                             f"e.g. {name}='{{\"name\": \"value\"}}'")
    if not lines:
        return f"invalid configuration from the environment: {exc}"
    return "\n".join([f"invalid configuration from the environment ({len(lines)} problem(s)):",
                      *lines])
