"""Settings: env + TOML, clear errors naming the setting, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
[kafka]
topics = ["in"]
[aep]
org_id = "X@AdobeOrg"
client_id = "cid"
client_secret = "s3cr3t-value"
[[routes]]
name = "events"
family = "experience_event"
inlet_url = "https://dcs.adobedc.net/collection/abc"
dataset_id = "ds"
schema_id = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
flow_id = "f"
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CAPILLARY_AEP_"):
            monkeypatch.delenv(key)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "worker.toml"
    path.write_text(text)
    return path


def test_example_config_in_deploy_parses() -> None:
    settings = load_settings(ROOT / "deploy" / "worker.example.toml")
    assert settings.kafka.start_position == "earliest"
    assert {r.family for r in settings.routes} >= {"experience_event", "profile_customer"}


def test_env_overrides_file_and_nested_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPILLARY_AEP_KAFKA__GROUP_ID", "from-env")
    monkeypatch.setenv("CAPILLARY_AEP_BATCHING__LINGER_S", "1.5")
    settings = load_settings(_write(tmp_path, MINIMAL))
    assert settings.kafka.group_id == "from-env"
    assert settings.kafka.topics == ["in"]
    assert settings.batching.linger_s == 1.5
    assert settings.policy.unknown_event == "dlq" and settings.policy.tombstone == "filter"


@pytest.mark.parametrize(
    ("env", "value", "names"),
    [
        ("CAPILLARY_AEP_KAFKA__CONSUME_BATCH_SIZE", "0", "kafka.consume_batch_size"),
        ("CAPILLARY_AEP_BATCHING__MAX_BYTES", "2000000", "batching.max_bytes"),
        ("CAPILLARY_AEP_POLICY__UNKNOWN_EVENT", "drop", "policy.unknown_event"),
        ("CAPILLARY_AEP_AEP__ORG_ID", "nope", "aep.org_id"),
        ("CAPILLARY_AEP_KAFKA__START_POSITION", "middle", "kafka.start_position"),
        ("CAPILLARY_AEP_MAPPING__SOURCE_TIMEZONE", "Mars/Base", "mapping.source_timezone"),
    ],
)
def test_bad_value_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str, value: str, names: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, MINIMAL))
    assert names in str(info.value)


def test_errors_and_reprs_never_show_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = MINIMAL.replace('topics = ["in"]', 'topics = ["in"]\n[kafka.properties]\n'
                           '"sasl.password" = "kafka-pass-123"')
    settings = load_settings(_write(tmp_path, text))
    for shown in (repr(settings), str(settings), repr(settings.kafka), repr(settings.aep)):
        assert "s3cr3t-value" not in shown and "kafka-pass-123" not in shown
    assert settings.aep.secret_value() == "s3cr3t-value"
    # An error elsewhere must not echo the secret either.
    monkeypatch.setenv("CAPILLARY_AEP_AEP__CLIENT_SECRET", "another-secret-xyz")
    monkeypatch.setenv("CAPILLARY_AEP_AEP__SCOPES", "")
    monkeypatch.setenv("CAPILLARY_AEP_KAFKA__COMMIT_INTERVAL_S", "-1")
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text))
    assert "another-secret-xyz" not in str(info.value)
    assert "kafka.commit_interval_s" in str(info.value)


def test_reserved_librdkafka_keys_are_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace('topics = ["in"]', 'topics = ["in"]\n[kafka.properties]\n'
                           '"enable.auto.commit" = "true"')
    with pytest.raises(ConfigError, match=r"enable\.auto\.commit"):
        load_settings(_write(tmp_path, text))


def test_secret_file_is_read_on_every_call(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("first\n")
    text = MINIMAL.replace('client_secret = "s3cr3t-value"', f'client_secret_file = "{secret}"')
    settings = load_settings(_write(tmp_path, text))
    assert settings.aep.secret_value() == "first"
    secret.write_text("rotated")
    assert settings.aep.secret_value() == "rotated"


def test_missing_config_file_and_missing_routes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "absent.toml")
    no_routes = MINIMAL.split("[[routes]]")[0]
    with pytest.raises(ConfigError, match="routes"):
        load_settings(_write(tmp_path, no_routes))


def test_sasl_requires_credentials(tmp_path: Path) -> None:
    text = MINIMAL.replace('topics = ["in"]', 'topics = ["in"]\nsecurity_protocol = "SASL_SSL"')
    with pytest.raises(ConfigError, match="sasl"):
        load_settings(_write(tmp_path, text))
