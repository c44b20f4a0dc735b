"""driftwatch.yaml: validated by pydantic; every setting can be overridden from the environment.

`DRIFTWATCH_KAFKA__BOOTSTRAP_SERVERS='["broker:9092"]'` overrides `kafka.bootstrap_servers`:
prefix DRIFTWATCH_, sections joined by a double underscore, lists and maps as JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from consumers.settings import BatchSettings, JoinSettings, KafkaSettings

SegmentLabel = Literal["model", "model_version", "deployment", "route"]
ScorerName = Literal["latency", "tokens", "cost", "status", "length"]
ENV_PREFIX = "DRIFTWATCH_"


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


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka: KafkaSettings
    join: JoinSettings = JoinSettings()
    batch: BatchSettings = BatchSettings()
    metrics: MetricsSettings = MetricsSettings()
    scorers: list[ScorerName] = ["latency", "tokens", "cost", "status", "length"]
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # JSON lines of every scored record's request_id and Kafka positions, for reconciliation.
    audit_log: Path | None = None

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


def load_config(path: str | Path | None, **overrides: Any) -> Config:
    """Read, merge with the environment, and validate; raise ConfigError saying what to fix."""
    data: dict[str, Any] = {}
    if path is not None:
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
    data.update(overrides)
    try:
        return Config(**data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path)) from None


def _explain(exc: ValidationError, path: Path | None) -> str:
    where = f" in {path}" if path else ""
    lines = [f"invalid configuration{where} ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
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
