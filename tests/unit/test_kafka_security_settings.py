"""Kafka security settings become the librdkafka configuration every client uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.config import KafkaSettings
from worker.kafka import consumer_config


def test_ssl_with_ca_and_client_certificate(tmp_path: Path) -> None:
    s = KafkaSettings(
        topics=["t"], security_protocol="SSL", ssl_ca_location=tmp_path / "ca.pem",
        ssl_certificate_location=tmp_path / "client.pem", ssl_key_location=tmp_path / "client.key",
        ssl_key_password="key-pass",  # type: ignore[arg-type]
    )
    conf = consumer_config(s)
    assert conf["security.protocol"] == "SSL"
    assert conf["ssl.ca.location"] == str(tmp_path / "ca.pem")
    assert conf["ssl.certificate.location"] == str(tmp_path / "client.pem")
    assert conf["ssl.key.location"] == str(tmp_path / "client.key")
    assert conf["ssl.key.password"] == "key-pass"
    assert "sasl.mechanism" not in conf
    assert "key-pass" not in repr(s)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_sasl_password_file_is_read_for_each_client(
    tmp_path: Path, mechanism: str, protocol: str
) -> None:
    secret = tmp_path / "password"
    secret.write_text("first\n")
    s = KafkaSettings(
        topics=["t"], security_protocol=protocol, sasl_mechanism=mechanism,  # type: ignore[arg-type]
        sasl_username="svc", sasl_password_file=secret,
    )
    conf = s.client_config()
    assert (conf["security.protocol"], conf["sasl.mechanism"]) == (protocol, mechanism)
    assert (conf["sasl.username"], conf["sasl.password"]) == ("svc", "first")
    secret.write_text("second\n")  # rotated: the next client (e.g. a recreated producer) sees it
    assert s.client_config()["sasl.password"] == "second"
    assert "first" not in repr(s) and "second" not in repr(s)


def test_sasl_needs_mechanism_user_and_password() -> None:
    with pytest.raises(ValidationError, match=r"sasl_mechanism and kafka\.sasl_username"):
        KafkaSettings(topics=["t"], security_protocol="SASL_SSL")
    with pytest.raises(ValidationError, match=r"sasl_password or kafka\.sasl_password_file"):
        KafkaSettings(topics=["t"], security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
                      sasl_username="svc")
