"""Tests for monitor.config and `driftwatch check-config`: every bad setting is named with its
value and what is allowed; the environment beats the file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.cli import main
from monitor.config import ENV_PREFIX, Config, ConfigError, load_config

GOOD: dict[str, Any] = {"kafka": {"topic": "traffic"}}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No DRIFTWATCH_* variable from the outer environment leaks into these tests."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    yield


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _with(section: str, **values: object) -> dict[str, Any]:
    base = {k: dict(v) for k, v in GOOD.items()}
    base.setdefault(section, {}).update(values)
    return base


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(_with("kafka", max_poll_interval_ms=-5),
                     ["kafka.max_poll_interval_ms", "-5", "greater than or equal to 1000"],
                     id="max_poll_interval_ms"),
        pytest.param(_with("kafka", auto_offset_reset="middle"),
                     ["kafka.auto_offset_reset", "'middle'", "'earliest' or 'latest'"],
                     id="auto_offset_reset"),
        pytest.param({"kafka": {"group_id": "g"}},
                     ["kafka", "no input topic", "kafka.topic", "kafka.request_topic",
                      "kafka.response_topic"],
                     id="no-topics"),
        pytest.param({"kafka": {"request_topic": "req"}},
                     ["kafka", "no input topic", "kafka.response_topic"],
                     id="request-topic-without-response-topic"),
        pytest.param(_with("kafka", request_topic="req", response_topic="resp"),
                     ["kafka.topic", "kafka.request_topic", "not both"],
                     id="topic-and-request-topic"),
        pytest.param(_with("kafka", heartbeat_interval_ms=10_000, session_timeout_ms=10_000),
                     ["kafka.heartbeat_interval_ms=10000", "kafka.session_timeout_ms=10000",
                      "below"],
                     id="heartbeat-not-below-session-timeout"),
        pytest.param(_with("join", unmatched="drop"),
                     ["join.unmatched", "'drop'", "'score' or 'dead_letter'"], id="unmatched"),
        pytest.param(_with("join", window_seconds=0),
                     ["join.window_seconds", "= 0", "greater than 0"], id="window_seconds"),
        pytest.param(_with("batch", max_records=0),
                     ["batch.max_records", "= 0", "greater than or equal to 1"],
                     id="max_records"),
        pytest.param(_with("batch", decide_max_records=0),
                     ["batch.decide_max_records", "= 0", "greater than or equal to 1"],
                     id="decide_max_records"),
        pytest.param(_with("metrics", port=70_000),
                     ["metrics.port", "70000", "less than or equal to 65535"], id="port"),
        pytest.param(_with("metrics", labels=["model", "request_id"]),
                     ["metrics.labels.1", "'request_id'",
                      "'model', 'model_version', 'deployment' or 'route'"],
                     id="labels"),
        pytest.param({**GOOD, "kafak": {"topic": "x"}},
                     ["kafak", "unknown setting", "check the spelling"], id="unknown-top-level"),
        pytest.param(_with("kafka", bootstrap="broker:9092"),
                     ["kafka.bootstrap", "unknown setting", "'broker:9092'"],
                     id="unknown-nested"),
        pytest.param({**GOOD, "log_level": "LOUD"},
                     ["log_level", "'LOUD'", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"],
                     id="log_level"),
        pytest.param({**GOOD, "scorers": ["latency", "vibes"]},
                     ["scorers.1", "'vibes'", "'latency', 'tokens', 'cost', 'status', 'length', "
                      "'toxicity', 'groundedness', 'sanity' or 'tokenization'"],
                     id="scorers"),
        pytest.param({}, ["kafka", "required setting is missing"], id="no-kafka-section"),
        pytest.param({**GOOD, "checkpoint": {"interval_seconds": 0}},
                     ["checkpoint.interval_seconds", "= 0", "greater than 0"],
                     id="checkpoint-interval"),
        pytest.param({**GOOD, "checkpoint": {"every": 5}},
                     ["checkpoint.every", "unknown setting"], id="checkpoint-unknown"),
        pytest.param({**GOOD, "drift": {"embedding": {"window_size": 50, "scales": [5, 80]}}},
                     ["drift.embedding", "scales: [5, 80]", "window_size: 50",
                      "allowed: 2 .. window_size"], id="drift-scales-too-long"),
        pytest.param({**GOOD, "drift": {"embedding": {"scales": [1, 10]}}},
                     ["drift.embedding.scales.0", "= 1", "greater than or equal to 2"],
                     id="drift-scales-too-short"),
        pytest.param(_with("kafka", dead_letter_max_bytes=100),
                     ["kafka.dead_letter_max_bytes", "= 100", "greater than or equal to 4096"],
                     id="dead-letter-max-bytes"),
        pytest.param(_with("kafka", dead_letter_attempts=0),
                     ["kafka.dead_letter_attempts", "= 0", "greater than or equal to 1"],
                     id="dead-letter-attempts"),
        pytest.param({**GOOD, "validation": {"max_future_seconds": -1}},
                     ["validation.max_future_seconds", "= -1", "greater than or equal to 0"],
                     id="max-future-seconds"),
        pytest.param({**GOOD, "validation": {"not_before": "2000-01-01T00:00:00"}},
                     ["validation.not_before", "'2000-01-01T00:00:00'", "timezone"],
                     id="not-before-without-offset"),
        pytest.param({**GOOD, "validation": {"epoch_unit": "seconds"}},
                     ["validation.epoch_unit", "'seconds'", "'auto', 's', 'ms', 'us' or 'ns'"],
                     id="epoch-unit"),
        pytest.param({**GOOD, "wire": {"fields": {"requestid": "id"}}},
                     ["wire.fields", "'requestid' is no field of the wire", "request_id"],
                     id="wire-fields-unknown"),
        pytest.param({**GOOD, "wire": {"latency_unit": "us"}},
                     ["wire.latency_unit", "'us'", "'ms' or 's'"], id="wire-latency-unit"),
        pytest.param({**GOOD, "wire": {"topics": {"responses": {"fields": {"id": "x"}}}}},
                     ["wire.topics.responses.fields", "'id' is no field of the wire"],
                     id="wire-topic-fields-unknown"),
        pytest.param({**GOOD, "wire": {"topics": {"responses": {"topics": {}}}}},
                     ["wire.topics.responses.topics", "unknown setting"],
                     id="wire-topic-nested"),
        pytest.param({"kafka": {"request_topic": "req", "response_topic": "resp"},
                      "wire": {"topics": {"resp": {"format": "otlp_json"}}}},
                     ["wire.topics.resp.format = 'otlp_json'", "one half a message",
                      "kafka.topic"], id="wire-otlp-on-a-half"),
        pytest.param({**GOOD, "wire": {"format": "otlp_json", "latency_unit": "s"}},
                     ["wire: format otlp_json: a span's latency is its end less its start"],
                     id="wire-otlp-latency-unit"),
        pytest.param({**GOOD, "wire": {"format": "otlp"}},
                     ["wire.format", "'otlp'", "'json', 'otlp_json' or 'otlp_proto'"],
                     id="wire-format"),
        pytest.param({**GOOD, "wire": {"topics": {"responses": {"latency_unit": "s"}}}},
                     ["wire.topics names 'responses', which is no input topic",
                      "the input topics: traffic"], id="wire-topic-not-read"),
        pytest.param({**GOOD, "scoring": {"max_batch_seconds": 0}},
                     ["scoring.max_batch_seconds", "= 0", "greater than 0"],
                     id="max-batch-seconds"),
        pytest.param(_with("metrics", max_body_bytes=-1),
                     ["metrics.max_body_bytes", "= -1", "greater than or equal to 0"],
                     id="max-body-bytes"),
        pytest.param(_with("metrics", admin_token_env="not a name"),
                     ["metrics.admin_token_env", "'not a name'", "an environment variable's name"],
                     id="admin-token-env"),
    ],
)
def test_invalid_setting_names_field_value_and_what_is_allowed(
    tmp_path: Path, data: dict[str, Any], expected: list[str]
) -> None:
    path = _write(tmp_path / "driftwatch.yaml", data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, (fragment, message)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    data = {"kafka": {"topic": "t", "max_poll_records": 0}, "metrics": {"port": -1},
            "log_level": "LOUD"}
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path / "c.yaml", data))
    message = str(info.value)
    assert "(3 problem(s))" in message
    assert all(f in message for f in ("kafka.max_poll_records", "metrics.port", "log_level"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("- kafka\n- metrics\n", "the top level must be a mapping, got list",
                     id="list"),
        pytest.param("just a string\n", "the top level must be a mapping, got str", id="str"),
        pytest.param("kafka: {topic: [unclosed\n", "not valid YAML", id="invalid-yaml"),
        pytest.param("kafka:\n  topic: t\n\tgroup_id: g\n", "not valid YAML", id="tab-indent"),
        pytest.param("kafka: {topic: t}\nmetrics: {port: 1}\nkafka: {topic: u}\n",
                     "'kafka' is set twice in one mapping (lines 1 and 3): keep one",
                     id="duplicate-section"),
        pytest.param("kafka:\n  topic: t\n  group_id: g\n  topic: u\n",
                     "'topic' is set twice in one mapping (lines 2 and 4): keep one",
                     id="duplicate-key"),
    ],
)
def test_unusable_yaml_file_is_a_config_error_naming_the_path(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_a_key_merged_in_may_be_overridden(tmp_path: Path) -> None:
    """Keys merged in (`<<: *base`) are not duplicates: the mapping's own key wins."""
    from monitor.config.load import _read_yaml

    path = tmp_path / "c.yaml"
    path.write_text("base: &b {topic: t, group_id: g}\nkafka:\n  <<: *b\n  group_id: h\n",
                    encoding="utf-8")
    assert _read_yaml(path)[0]["kafka"] == {"topic": "t", "group_id": "h"}


def test_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "driftwatch.yaml"
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "content",  # None: the path is a directory
    [
        pytest.param(None, id="directory"),
        pytest.param(b"kafka:\n  topic: caf\xe9\n", id="not-utf8"),
        pytest.param(b"kafka: {topic: t}\n1: x\n", id="non-string-top-level-key"),
    ],
)
def test_unreadable_config_file_is_a_config_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "driftwatch.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_empty_file_means_defaults_and_still_needs_a_topic(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="kafka: required setting is missing"):
        load_config(path)


def test_minimal_file_gets_the_documented_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path / "c.yaml", GOOD))
    assert isinstance(config, Config)
    assert config.kafka.topics == ("traffic",)
    assert config.kafka.group_id == "driftwatch"
    assert config.metrics.host == "127.0.0.1"
    assert config.metrics.labels == ["model", "model_version", "deployment"]
    assert config.scorers == ["latency", "tokens", "cost", "status", "length", "toxicity",
                              "groundedness", "sanity"]
    assert config.join.unmatched == "score"
    # The decide stage takes bigger batches; everything else about them is the same.
    assert (config.batch.max_records, config.batch.decide_max_records) == (512, 4_096)
    assert config.batch.for_decide() == config.batch.model_copy(
        update={"max_records": 4_096})


def test_split_topics_are_listed_request_then_response(tmp_path: Path) -> None:
    data = {"kafka": {"request_topic": "req", "response_topic": "resp"}}
    assert load_config(_write(tmp_path / "c.yaml", data)).kafka.topics == ("req", "resp")


# -- environment -------------------------------------------------------------------------------

@pytest.fixture
def file_config(tmp_path: Path) -> Path:
    return _write(tmp_path / "driftwatch.yaml", {
        "kafka": {"topic": "traffic", "group_id": "from-file",
                  "bootstrap_servers": ["file:9092"], "max_poll_records": 123},
        "metrics": {"port": 9200, "labels": ["model"]},
        "log_level": "WARNING",
    })


def test_environment_overrides_the_file_and_keeps_its_other_nested_fields(
    file_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTWATCH_KAFKA__GROUP_ID", "from-env")
    config = load_config(file_config)
    assert config.kafka.group_id == "from-env"
    assert config.kafka.topic == "traffic"
    assert config.kafka.bootstrap_servers == ["file:9092"]
    assert config.kafka.max_poll_records == 123
    assert config.metrics.port == 9200
    assert config.log_level == "WARNING"


def test_json_list_in_the_environment_sets_a_list_setting(
    file_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTWATCH_METRICS__LABELS", '["route", "deployment"]')
    monkeypatch.setenv("DRIFTWATCH_KAFKA__BOOTSTRAP_SERVERS", '["a:9092", "b:9092"]')
    config = load_config(file_config)
    assert config.metrics.labels == ["route", "deployment"]
    assert config.kafka.bootstrap_servers == ["a:9092", "b:9092"]
    assert config.metrics.port == 9200


def test_environment_alone_can_supply_the_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTWATCH_KAFKA__TOPIC", "env-topic")
    monkeypatch.setenv("DRIFTWATCH_LOG_LEVEL", "DEBUG")
    config = load_config(None)
    assert config.kafka.topics == ("env-topic",)
    assert config.log_level == "DEBUG"


def test_invalid_environment_value_is_named_like_a_file_value(
    file_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTWATCH_METRICS__PORT", "70000")
    with pytest.raises(ConfigError) as info:
        load_config(file_config)
    assert "metrics.port = '70000'" in str(info.value)
    assert "less than or equal to 65535" in str(info.value)


def test_an_environment_value_names_its_variable(
    file_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad value set by the environment is not in the file the user reads: the line says
    which variable set it (matched in any case, as pydantic-settings matches them)."""
    monkeypatch.setenv("driftwatch_metrics__port", "70000")
    with pytest.raises(ConfigError) as info:
        load_config(file_config)
    assert "(set by the environment: DRIFTWATCH_METRICS__PORT)" in str(info.value)


def test_a_file_value_names_no_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path / "c.yaml", _with("metrics", port=70_000)))
    assert "set by the environment" not in str(info.value)


@pytest.mark.parametrize(("value", "servers"), [
    ("kafka:9092", ["kafka:9092"]),
    ("kafka-1:9092, kafka-2:9092,", ["kafka-1:9092", "kafka-2:9092"]),
    ('["a:9092", "b:9092"]', ["a:9092", "b:9092"]),
    # An IPv6 broker starts with "[" too: it was read as a JSON list that did not parse.
    ("[::1]:9092,[fe80::1]:9093", ["[::1]:9092", "[fe80::1]:9093"]),
    ("PLAINTEXT://kafka:9092", ["PLAINTEXT://kafka:9092"]),
    ("kafka", ["kafka"]),
])
def test_brokers_may_be_kafkas_comma_separated_string(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, servers: list[str]
) -> None:
    """`bootstrap.servers` as Kafka writes it, in the file and in the environment."""
    config = load_config(_write(tmp_path / "c.yaml", _with("kafka", bootstrap_servers=value)))
    assert config.kafka.bootstrap_servers == servers
    monkeypatch.setenv("DRIFTWATCH_KAFKA__BOOTSTRAP_SERVERS", value)
    assert load_config(_write(tmp_path / "d.yaml", GOOD)).kafka.bootstrap_servers == servers


@pytest.mark.parametrize("broker", ["kafka:abc", "kafka:0", "kafka:99999", "kafka 1:9092",
                                    "http://kafka:9092/x", "[kafka:9092"])
def test_a_broker_kafka_python_cannot_read_is_refused(tmp_path: Path, broker: str) -> None:
    """`kafka:abc` passed the config, then failed in the daemon's connect thread at every
    try, a traceback each, for good."""
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path / "c.yaml", _with("kafka", bootstrap_servers=[
            "kafka-1:9092", broker])))
    assert str(info.value).splitlines()[1] == (
        f"  kafka.bootstrap_servers: {broker!r} is not a broker's address: HOST:PORT (a port "
        "from 1 to 65535), e.g. kafka-1:9092")


def test_an_empty_broker_string_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kafka.bootstrap_servers = ' , ': .*at least 1"):
        load_config(_write(tmp_path / "c.yaml", _with("kafka", bootstrap_servers=" , ")))


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("DRIFTWATCH_SCORERS", "latency, tokens",
     """DRIFTWATCH_SCORERS = 'latency, tokens': a list from the environment is JSON, e.g. """
     """DRIFTWATCH_SCORERS='["latency", "tokens"]'"""),
    ("DRIFTWATCH_METRICS__LABELS", "model",
     "DRIFTWATCH_METRICS__LABELS = 'model': a list from the environment is JSON"),
    ("DRIFTWATCH_ACTIONS", "retrain",
     "DRIFTWATCH_ACTIONS = 'retrain': a map from the environment is JSON"),
])
def test_a_list_or_map_in_the_environment_that_is_not_json_is_named(
    file_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    name: str, value: str, expected: str,
) -> None:
    """pydantic-settings raises its own error naming only the section (a traceback from
    check-config before); the variable, its value and how to write it are named instead."""
    monkeypatch.setenv(name, value)
    monkeypatch.setenv("DRIFTWATCH_KAFKA__GROUP_ID", "not-json-but-a-string")  # not named
    with pytest.raises(ConfigError) as info:
        load_config(file_config)
    message = str(info.value)
    assert message.startswith("invalid configuration from the environment (1 problem(s)):")
    assert expected in message
    assert "GROUP_ID" not in message
    assert main(["check-config", "--config", str(file_config)]) == 2
    assert expected in capsys.readouterr().err


def test_a_rule_or_action_without_its_kind_names_the_field_and_the_choices(
        tmp_path: Path) -> None:
    """pydantic says "Unable to extract tag using discriminator 'kind'" of the whole section."""
    bad = _write(tmp_path / "c.yaml", {
        **GOOD,
        "rules": [{"name": "errs", "when": {"signal": "error_rate", "above": 0.5}},
                  {"name": "errs2", "when": {"kind": "rates", "signal": "error_rate"}}],
        "actions": {"hook": {"url": "http://127.0.0.1:1/x"}, "page": {"type": "webhok"}}})
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    lines = str(info.value).splitlines()
    assert "  rule 'errs' (rules[0]): when.kind: required setting is missing; one of 'drift', " \
           "'rate', 'latency', 'labelled'" in lines
    assert "  rule 'errs2' (rules[1]): when.kind = 'rates': one of 'drift', 'rate', " \
           "'latency', 'labelled'" in lines
    assert "  actions.hook.type: required setting is missing; one of 'webhook', " \
           "'alertmanager', 'reference_rollover'" in lines
    assert "  actions.page.type = 'webhok': one of 'webhook', 'alertmanager', " \
           "'reference_rollover'" in lines


def test_a_pattern_is_said_in_words_not_as_its_regular_expression(tmp_path: Path) -> None:
    bad = _write(tmp_path / "c.yaml", {
        **GOOD, "scoring": {"device": "gpu"},
        "actions": {"h": {"type": "webhook", "url": "hooks.example.com/x", "secret_env": "S"}}})
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    lines = str(info.value).splitlines()
    assert "  scoring.device = 'gpu': should be auto, cpu, cuda or cuda:N" in lines
    # Cut after its host: a hook's path is often its secret, and this output reaches CI logs.
    assert "  actions.h.url = 'hooks.example.com/…': should be an http:// or https:// URL " \
           "with a host" in lines
    assert "should match pattern" not in str(info.value)


def test_a_topic_name_kafka_refuses_is_refused_in_words(tmp_path: Path) -> None:
    """kafka-python only logs an invalid topic name and reads nothing: a space or a slash in
    kafka.topic left the daemon running, idle."""
    bad = _write(tmp_path / "c.yaml", {
        "kafka": {"topic": "llm logs", "dead_letter_topic": "dlq/x", "scored_topic": "s" * 250},
        "review": {"enabled": True, "topic": "review:lines", "labels_topic": "ok.labels-1_2"}})
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    allowed = "should be a Kafka topic's name: letters, digits, '.', '_' and '-', at most 249"
    lines = str(info.value).splitlines()
    for setting, value in [("kafka.topic", "llm logs"), ("kafka.dead_letter_topic", "dlq/x"),
                           ("review.topic", "review:lines")]:
        assert f"  {setting} = {value!r}: {allowed}" in lines
    assert any(line.startswith("  kafka.scored_topic = 'sss") and line.endswith(allowed)
               for line in lines)
    assert "labels_topic" not in str(info.value)
    assert load_config(_write(tmp_path / "ok.yaml", {"kafka": {
        "topic": "LLM.traffic_v2-eu", "scored_topic": "s" * 249}})).kafka.topic == (
        "LLM.traffic_v2-eu")


@pytest.mark.parametrize(("sections", "says"), [
    ({"kafka": {"topic": "llm", "dead_letter_topic": "llm"}},
     "kafka: kafka.topic and kafka.dead_letter_topic are both 'llm': each needs a topic of "
     "its own (what the daemon writes there it would read back: dead letters dead-lettered "
     "again, without end)"),
    ({"kafka": {"topic": "t", "scored_topic": "t"}},
     "kafka: kafka.topic and kafka.scored_topic are both 't'"),
    ({"kafka": {"request_topic": "a", "response_topic": "a"}},
     "kafka: kafka.request_topic and kafka.response_topic are both 'a': whole records on one "
     "topic are kafka.topic"),
    ({"kafka": {"topic": "t"}, "review": {"enabled": True, "topic": "t"}},
     "kafka.topic and review.topic are both 't'"),
    ({"kafka": {"topic": "t"}, "review": {"enabled": True, "topic": "r", "labels_topic": "r"}},
     "review.topic and review.labels_topic are both 'r'"),
    # One group for both stages: one assignment, the input's partitions given to no scoring
    # process, and every /readyz green.
    ({"kafka": {"topic": "t", "group_id": "g", "decide_group_id": "g"}},
     "kafka: kafka.decide_group_id and kafka.group_id are both 'g': the decide stage's group "
     "reads the scored topic, the score stage's the input"),
])
def test_a_topic_in_two_roles_is_refused(tmp_path: Path, sections: dict[str, Any],
                                         says: str) -> None:
    """A dead-letter topic that is also the input read its own letters back and wrote them
    again, without end."""
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path / "c.yaml", sections))
    assert says in str(info.value)


def test_without_a_config_file_the_environment_and_the_defaults_make_the_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """As a container configured by DRIFTWATCH_* variables runs: no driftwatch.yaml here and
    no --config is no error; a --config that names a missing file still is."""
    monkeypatch.chdir(tmp_path)
    assert main(["check-config"]) == 2
    assert capsys.readouterr().err.startswith(
        "driftwatch: invalid configuration (no config file: the environment and the "
        "defaults) (1 problem(s)):\n  kafka: required setting is missing")
    monkeypatch.setenv("DRIFTWATCH_KAFKA__TOPIC", "from-env")
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out.startswith(
        "the environment (no config file): OK (topics from-env, group driftwatch)")
    assert main(["check-config", "--config", "missing.yaml"]) == 2
    assert "config file not found: missing.yaml" in capsys.readouterr().err
    _write(tmp_path / "driftwatch.yaml", {"kafka": {"topic": "from-file"}})
    monkeypatch.delenv("DRIFTWATCH_KAFKA__TOPIC")
    assert main(["check-config"]) == 0  # the file here is the default again
    assert capsys.readouterr().out.startswith("driftwatch.yaml: OK (topics from-file")


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path / "c.yaml", GOOD))
    with pytest.raises(ValueError, match="frozen"):
        config.kafka.group_id = "other"  # type: ignore[misc]


# -- CLI ---------------------------------------------------------------------------------------

def test_check_config_on_a_bad_file_exits_2_and_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write(tmp_path / "bad.yaml", _with("metrics", port=70_000))
    assert main(["check-config", "--config", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("driftwatch: invalid configuration in " + str(bad))
    assert "metrics.port = 70000" in err


def test_check_config_on_a_missing_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.yaml"
    assert main(["check-config", "--config", str(missing)]) == 2
    assert f"config file not found: {missing}" in capsys.readouterr().err


def test_check_config_on_a_good_file_exits_0_and_prints_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write(tmp_path / "good.yaml",
                  {"kafka": {"request_topic": "req", "response_topic": "resp", "group_id": "g1"}})
    assert main(["check-config", "--config", str(good)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"{good}: OK (topics req, resp, group g1)"
    assert err == ""


def test_the_shipped_example_config_is_valid() -> None:
    root = Path(__file__).resolve().parents[3]
    config = load_config(root / "driftwatch.yaml")
    assert config.kafka.topics == ("llm-traffic",)
    assert [r.name for r in config.rules] == ["prompt-drift", "toxic-share", "slow-p99",
                                              "dead-letters"]
    assert {n: a.type for n, a in config.actions.items()} == {
        "retrain-hook": "webhook", "pager": "alertmanager"}
    assert config.metrics.host == "127.0.0.1"


def test_the_admin_token_is_read_at_start_with_errors_that_name_the_setting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.config import AdminTokenError, MetricsSettings

    monkeypatch.delenv("DW_TEST_ADMIN", raising=False)
    with pytest.raises(AdminTokenError, match=r"metrics\.admin_token_env: .* DW_TEST_ADMIN"):
        MetricsSettings(admin_token_env="DW_TEST_ADMIN").admin_token()
    monkeypatch.setenv("DW_TEST_ADMIN", " tok-1 \n")
    assert MetricsSettings(admin_token_env="DW_TEST_ADMIN").admin_token() == "tok-1"
    token_file = tmp_path / "token"
    with pytest.raises(AdminTokenError, match=r"metrics\.admin_token_file: cannot read"):
        MetricsSettings(admin_token_file=token_file).admin_token()
    token_file.write_text("tok-2\n")
    assert MetricsSettings(admin_token_file=token_file).admin_token() == "tok-2"
    assert MetricsSettings().admin_token() is None


@pytest.mark.parametrize(("section", "says"), [
    ({"canary": {"alpha": float("nan")}}, "canary.alpha = nan"),
    ({"validation": {"max_future_seconds": float("inf")}}, "validation.max_future_seconds = inf"),
    ({"scoring": {"toxicity": {"threshold": float("nan")}}}, "scoring.toxicity.threshold = nan"),
])
def test_a_setting_that_is_no_finite_number_is_refused_as_such(
        tmp_path: Path, section: dict[str, Any], says: str) -> None:
    """Before: NaN was "Input should be less than 0.5" (every comparison with it is false),
    and infinity the bound it passed."""
    from monitor.config import load_offline_config

    path = tmp_path / "dw.yaml"
    path.write_text(yaml.safe_dump(section))
    with pytest.raises(ConfigError) as info:
        load_offline_config(path)
    assert f"{says}: Input should be a finite number" in str(info.value), info.value


@pytest.mark.parametrize("key", ["rulez", "drfit"])
def test_offline_use_refuses_a_misspelled_section_and_needs_no_kafka(
        tmp_path: Path, key: str) -> None:
    from monitor.config import load_offline_config

    path = tmp_path / "dw.yaml"
    path.write_text(yaml.safe_dump({key: [{"name": "x"}]}))
    with pytest.raises(ConfigError) as info:
        load_offline_config(path)
    assert key in str(info.value) and "check the spelling" in str(info.value)
    path.write_text(yaml.safe_dump({"scorers": ["latency"], "outbox": {"path": "x.db"},
                                    "checkpoint": {"enabled": False}}))
    assert load_offline_config(path).scorers == ["latency"]  # daemon sections: ignored


@pytest.mark.slow  # starts a process or runs many examples
def test_check_config_offline_validates_without_a_kafka_section(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "dw.yaml"
    path.write_text(yaml.safe_dump({"scorers": ["latency"], "rulez": []}))
    run = [sys.executable, "-m", "monitor.cli", "check-config", "--offline", "--config",
           str(path)]
    bad = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "rulez" in bad.stderr
    path.write_text(yaml.safe_dump({"scorers": ["latency"]}))
    good = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert good.returncode == 0 and "OK for score and backtest" in good.stdout


def test_a_variable_meant_for_a_setting_that_sets_none_is_warned_of(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic-settings passes over them in silence: DRIFTWATCH_KAFKA_TOPIC (one underscore)
    left kafka.topic unset, DRIFTWATCH_METRIC__PORT the port as it was. Variables of other
    uses that share the prefix (a secret, Kubernetes' service variables) are left alone."""
    from monitor.config import environment_warnings

    for name in list(os.environ):
        if name.upper().startswith("DRIFTWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DRIFTWATCH_KAFKA_TOPIC", "llm")
    monkeypatch.setenv("DRIFTWATCH_METRIC__PORT", "9100")
    monkeypatch.setenv("DRIFTWATCH_WEBHOOK_SECRET", "whsec_x")
    monkeypatch.setenv("DRIFTWATCH_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("DRIFTWATCH_METRICS_PORT", "tcp://10.0.0.1:9108")  # a Service's
    monkeypatch.setenv("DRIFTWATCH_SCORERS", '["latency"]')
    monkeypatch.setenv("DRIFTWATCH_LOG_LEVEL", "INFO")
    assert environment_warnings() == [
        "DRIFTWATCH_KAFKA_TOPIC sets nothing: kafka.topic is DRIFTWATCH_KAFKA__TOPIC (two "
        "underscores between a section and its setting)",
        "DRIFTWATCH_METRIC__PORT sets nothing: there is no setting 'metric' (the top level: "
        + ", ".join(Config.model_fields) + ")"]
    with pytest.raises(ConfigError) as info:
        load_config(None)
    assert str(info.value).splitlines()[1:2] == ["  kafka: required setting is missing"]
    assert ("  (note: DRIFTWATCH_KAFKA_TOPIC sets nothing: kafka.topic is "
            "DRIFTWATCH_KAFKA__TOPIC (two underscores between a section and its setting))"
            ) in str(info.value).splitlines()


@pytest.mark.parametrize(("given", "level"), [
    ("debug", "DEBUG"), ("Info", "INFO"), ("warn", "WARNING"), (" error ", "ERROR")])
def test_a_log_level_in_any_case_is_taken(tmp_path: Path, given: str, level: str) -> None:
    """LOG_LEVEL=debug is how most tools take it; `debug` was refused."""
    config = load_config(_write(tmp_path / "c.yaml", {**GOOD, "log_level": given}))
    assert config.log_level == level


def test_the_security_protocol_in_any_case_as_kafka_takes_it() -> None:
    from pydantic import ValidationError

    from consumers.settings import KafkaSecurity

    security = KafkaSecurity(protocol="sasl_plaintext", sasl_mechanism="PLAIN",
                             sasl_username="u", sasl_password_env="P")
    assert security.protocol == "SASL_PLAINTEXT"
    with pytest.raises(ValidationError, match="'sasl-ssl'"):  # refused as written
        KafkaSecurity(protocol="sasl-ssl")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1", "fe80::1%eth0",
                                  "localhost", "metrics.internal"])
def test_a_host_to_listen_on_is_a_name_or_an_address(tmp_path: Path, host: str) -> None:
    assert load_config(_write(tmp_path / "c.yaml", _with("metrics", host=host))).metrics.host \
        == host


@pytest.mark.parametrize("host", ["http://0.0.0.0", "0.0.0.0:9108", "[::]", "", "a b"])
def test_a_url_or_a_port_in_metrics_host_is_refused_in_words(tmp_path: Path, host: str) -> None:
    """They passed the config and failed at start, as "Name or service not known"."""
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path / "c.yaml", _with("metrics", host=host)))
    assert str(info.value).splitlines()[1] == (
        f"  metrics.host = {host!r}: should be a host name or address to listen on, without "
        "scheme, port or brackets (127.0.0.1, 0.0.0.0, ::)")
