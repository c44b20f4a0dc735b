"""Settings types and loading only, no behaviour: driftwatch.yaml as validated values.

`load` reads the file and the environment (env beats file) and explains every bad field;
`names` is the one vocabulary of scorers, signals and gates; the other modules hold the
settings of one room each (scoring, drift, acting, checkpoint, telemetry).
"""

from monitor.config.acting import (
    DEFAULT_MARGINS,
    Action,
    AlertmanagerAction,
    CanarySettings,
    DriftCondition,
    LatencyCondition,
    OutboxSettings,
    RateCondition,
    RolloverAction,
    Rule,
    WebhookAction,
    rollover_actions,
)
from monitor.config.checkpoint import CheckpointSettings
from monitor.config.drift import (
    DriftReferenceSettings,
    DriftSettings,
    EmbeddingDriftSettings,
    FeatureDriftSettings,
)
from monitor.config.load import (
    ENV_PREFIX,
    Config,
    ConfigError,
    OfflineConfig,
    check_rules,
    environment_warnings,
    load_config,
    load_offline_config,
)
from monitor.config.names import (
    MODEL_SCORERS,
    RATE_GATES,
    SIGNAL_SCORERS,
    STATEFUL_SCORERS,
    GateName,
    ScorerName,
)
from monitor.config.scoring import (
    EmbeddingSettings,
    GroundednessSettings,
    OverloadSettings,
    SanitySettings,
    ScoringSettings,
    ToxicitySettings,
)
from monitor.config.telemetry import AdminTokenError, MetricsSettings

__all__ = [
    "DEFAULT_MARGINS", "ENV_PREFIX", "MODEL_SCORERS", "RATE_GATES", "SIGNAL_SCORERS",
    "STATEFUL_SCORERS", "Action",
    "AdminTokenError", "AlertmanagerAction", "CanarySettings", "CheckpointSettings", "Config",
    "ConfigError", "DriftCondition", "DriftReferenceSettings", "DriftSettings",
    "EmbeddingDriftSettings", "EmbeddingSettings", "FeatureDriftSettings", "GateName",
    "GroundednessSettings", "LatencyCondition", "MetricsSettings", "OfflineConfig",
    "OutboxSettings", "OverloadSettings", "RateCondition", "RolloverAction", "Rule",
    "SanitySettings", "ScorerName", "ScoringSettings", "ToxicitySettings", "WebhookAction",
    "check_rules", "environment_warnings", "load_config", "load_offline_config",
    "rollover_actions",
]
