"""Kafka TLS and SASL settings: passed through to kafka-python, secrets only from the
environment or a file, clear errors when they are missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from consumers.settings import KafkaSecretError, KafkaSecurity
from monitor.config import ConfigError, load_config


def test_sasl_ssl_options_reach_kafka_python_with_the_password_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("KAFKA_PASSWORD", "s3cret-value")
    security = KafkaSecurity(protocol="SASL_SSL", ssl_cafile=ca, sasl_mechanism="SCRAM-SHA-512",
                             sasl_username="driftwatch", sasl_password_env="KAFKA_PASSWORD")
    assert security.client_options() == {
        "security_protocol": "SASL_SSL", "ssl_check_hostname": True, "ssl_cafile": str(ca),
        "ssl_certfile": None, "ssl_keyfile": None, "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "driftwatch", "sasl_plain_password": "s3cret-value"}
    assert "s3cret-value" not in repr(security)  # the config holds where, never what


def test_the_password_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                             sasl_username="u", sasl_password_file=secret)
    assert security.client_options()["sasl_plain_password"] == "from-a-file"
    assert "ssl_cafile" not in security.client_options()


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert KafkaSecurity().client_options() == {"security_protocol": "PLAINTEXT"}


def test_a_missing_password_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                             sasl_username="u", sasl_password_env="NOT_SET_ANYWHERE")
    with pytest.raises(KafkaSecretError, match="NOT_SET_ANYWHERE is not set"):
        security.client_options()


@pytest.mark.parametrize(("security", "message"), [
    ({"protocol": "SASL_SSL"}, "protocol SASL_SSL needs sasl_mechanism and sasl_username"),
    ({"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
     "needs exactly one of sasl_password_env or sasl_password_file"),
    ({"protocol": "SSL", "ssl_cafile": "/nowhere/ca.pem"}, "ssl_cafile '/nowhere/ca.pem': no "
                                                            "such file"),
    ({"protocol": "TLS"}, "kafka.security.protocol = 'TLS'"),
])
def test_bad_security_settings_name_the_field(tmp_path: Path, security: dict[str, object],
                                              message: str) -> None:
    path = tmp_path / "dw.yaml"
    path.write_text(yaml.safe_dump({"kafka": {"topic": "t", "security": security}}))
    with pytest.raises(ConfigError, match=r"kafka\.security") as err:
        load_config(path)
    assert message in str(err.value)


def _sasl_without_password(path: Path, **rest: object) -> Path:
    """A config whose SASL password comes from an environment variable that is not set."""
    path.write_text(yaml.safe_dump({
        "kafka": {"topic": "t", "bootstrap_servers": ["127.0.0.1:1"],
                  "security": {"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                               "sasl_username": "u", "sasl_password_env": "DW_NO_SUCH_VAR"}},
        **rest}))
    return path


def test_the_daemon_refuses_to_start_without_its_sasl_password(tmp_path: Path) -> None:
    path = _sasl_without_password(tmp_path / "dw.yaml", metrics={"port": 0},
                                  scorers=["latency"])
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "DW_NO_SUCH_VAR is not set" in done.stderr


def test_reference_build_from_a_topic_uses_the_configs_security(tmp_path: Path) -> None:
    path = _sasl_without_password(tmp_path / "dw.yaml", scorers=["sanity"])
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "reference", "build", "--topic", "t",
         "--config", str(path), "--store", str(tmp_path / "refs")],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "DW_NO_SUCH_VAR is not set" in done.stderr
