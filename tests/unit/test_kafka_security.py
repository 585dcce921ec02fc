"""Kafka TLS/SASL settings become the same options for Faust and for every plain aiokafka client."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest

from spendwarden.exceptions import ConfigError
from spendwarden.kafka_security import aiokafka_options, faust_credentials
from spendwarden.settings import load_settings

TEST_CA = Path(__file__).with_name("data") / "test-ca.pem"  # a self-signed certificate, no key


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("SPENDWARDEN_"):
            monkeypatch.delenv(name)


def test_plaintext_by_default() -> None:
    settings = load_settings()
    assert aiokafka_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None


def test_sasl_over_tls_with_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text("s3cret\n")
    settings = load_settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-256",
                             kafka_sasl_username="worker", kafka_sasl_password_file=secret,
                             kafka_ssl_cafile=TEST_CA)
    options = aiokafka_options(settings)
    assert isinstance(options.pop("ssl_context"), ssl.SSLContext)
    assert options == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
                       "sasl_plain_username": "worker", "sasl_plain_password": "s3cret"}
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password, credentials.mechanism.value) == ("worker", "s3cret",
                                                                                         "SCRAM-SHA-256")
    assert credentials.ssl_context is not None
    assert "s3cret" not in repr(settings)


def test_sasl_without_a_username_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="SASL_PLAINTEXT needs SPENDWARDEN_KAFKA_SASL_USERNAME"):
        load_settings(kafka_security_protocol="SASL_PLAINTEXT")


def test_unreadable_tls_file_is_a_config_error(tmp_path: Path) -> None:
    settings = load_settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="Kafka TLS files"):
        aiokafka_options(settings)
