"""Delivery receipts: encoding, the raw-bytes fast paths of ``trace``, settings, CLI misuse."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from tests.integration.fixture_events import valid_events
from worker.cli import main
from worker.config import ConfigError, load_settings
from worker.events import decode
from worker.mapping import xdm_id
from worker.receipts import FIELDS, encode, receipt_id
from worker.receipts import decode as decode_receipt
from worker.tools.trace import _redrive_hint, raw_xdm_id

ROOT = Path(__file__).resolve().parents[2]


def _receipt(**over: object) -> tuple[bytes, bytes]:
    args: dict[str, object] = {
        "topic": "capillary.loyalty", "partition": 3, "offset": 1234, "event_id": "evt-1",
        "event": "pointsIssued", "org_id": 1655, "target": "loyalty-events",
        "dataset": "ds-loyalty-events", "batch_id": "1700000000000:7:ab",
        "xaction_id": "1700000000000:7:ab:4", "accepted_ms": 1_700_000_000_500,
        "kafka_ts_ms": 1_700_000_000_000,
    }
    args.update(over)
    return encode(**args)  # type: ignore[arg-type]


def test_encoding_is_compact_keyed_by_event_id_and_complete() -> None:
    key, value = _receipt()
    assert key == b"evt-1"
    assert b" " not in value  # compact JSON
    doc = orjson.loads(value)
    assert list(doc) == list(FIELDS)
    assert doc == {
        "eventId": "evt-1", "event": "pointsIssued",
        "_id": receipt_id(1655, "pointsIssued", "evt-1", "loyalty-events"),
        "target": "loyalty-events", "dataset": "ds-loyalty-events",
        "batchId": "1700000000000:7:ab", "xactionId": "1700000000000:7:ab:4",
        "acceptedMs": 1_700_000_000_500, "latencyMs": 500, "topic": "capillary.loyalty",
        "partition": 3, "offset": 1234, "kafkaTs": 1_700_000_000_000,
    }
    assert len(value) < 450  # one small record per delivered target


def test_no_kafka_timestamp_means_no_latency_and_single_endpoint_has_no_batch() -> None:
    doc = orjson.loads(_receipt(kafka_ts_ms=None, batch_id=None)[1])
    assert doc["latencyMs"] is None and doc["kafkaTs"] is None and doc["batchId"] is None


def test_receipt_id_is_the_xdm_id_the_worker_sends() -> None:
    for event_id, _key, value in valid_events(8):
        event = decode(value)
        for target in ("loyalty-events", "profile-tier"):
            assert receipt_id(event.org_id, event.name, event_id, target) == xdm_id(event, target)


def test_decode_accepts_receipts_only() -> None:
    _, value = _receipt()
    assert decode_receipt(value) == orjson.loads(value)
    for other in (None, b"", b"not json", b"[1,2]", b'{"eventId": 5, "_id": "x"}',
                  b'{"eventId": "e"}'):
        assert decode_receipt(other) is None


@given(
    event_id=st.text(min_size=1, max_size=60),
    event=st.text(min_size=1, max_size=30),
    target=st.text(min_size=1, max_size=30),
)
def test_the_raw_id_fast_path_reads_the_real_id_whatever_the_strings(
    event_id: str, event: str, target: str
) -> None:
    key, value = _receipt(event_id=event_id, event=event, target=target)
    doc = orjson.loads(value)
    assert key == event_id.encode()
    assert raw_xdm_id(value) == doc["_id"] == receipt_id(1655, event, event_id, target)
    assert decode_receipt(value) == doc


def test_redrive_hint_covers_the_source_window_per_topic_partitions() -> None:
    sources = [
        {"topic": "in", "partition": 2, "kafkaTs": 1_700_000_000_000},
        {"topic": "in", "partition": 0, "kafkaTs": 1_700_000_005_000},
        {"topic": "other", "partition": 1, "kafkaTs": 1_700_000_001_000},
    ]
    hint = _redrive_hint(sources)
    assert hint is not None
    assert hint.startswith("capillary-aep replay --topic in:0,2 --topic other:1 ")
    assert "--from 2023-11-14T22:13:20.000Z --to 2023-11-14T22:13:25.001Z" in hint
    assert _redrive_hint([]) is None


@pytest.fixture
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CAPILLARY_AEP_"):
            monkeypatch.delenv(key)


@pytest.mark.usefixtures("_clean_env")
@pytest.mark.parametrize(
    ("topic", "enabled", "says"),
    [
        ("has space", False, "receipts.topic"),
        ("x" * 250, False, "receipts.topic"),
        ("..", False, "receipts.topic"),
        ("capillary.loyalty.dlq", True, "receipts.topic must differ"),
        ("capillary.loyalty.events", True, "receipts.topic must differ"),
    ],
)
def test_bad_receipts_topic_fails_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, topic: str, enabled: bool, says: str
) -> None:
    monkeypatch.setenv("CAPILLARY_AEP_RECEIPTS__TOPIC", topic)
    monkeypatch.setenv("CAPILLARY_AEP_RECEIPTS__ENABLED", str(enabled).lower())
    with pytest.raises(ConfigError) as err:
        load_settings(ROOT / "deploy" / "worker.example.toml")
    assert says in str(err.value)


@pytest.mark.usefixtures("_clean_env")
def test_example_config_documents_receipts_off_by_default() -> None:
    settings = load_settings(ROOT / "deploy" / "worker.example.toml")
    assert settings.receipts.enabled is False
    assert settings.receipts.topic == "capillary.loyalty.receipts"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "EVENT_ID or --failed-batches"),
        (["e1", "--failed-batches"], "EVENT_ID or --failed-batches"),
        (["e1", "--since", "yesterday"], "--since"),
        (["e1", "--dataset", "ds"], "--dataset goes with --failed-batches"),
        ([" "], "must not be empty"),
    ],
)
def test_trace_misuse_prints_usage_and_exits_2_before_connecting(
    args: list[str], says: str
) -> None:
    env = {"CAPILLARY_AEP_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    result = CliRunner().invoke(main, ["trace", *args], env=env)
    assert result.exit_code == 2, (args, result.output)
    assert "Usage:" in result.output and says in result.output


def test_trace_help() -> None:
    result = CliRunner().invoke(main, ["trace", "--help"])
    assert result.exit_code == 0 and "--failed-batches" in result.output


def test_unwritable_receipts_make_the_worker_not_ready() -> None:
    from worker.health import HealthState

    state = HealthState(member=True, token_ok=True)
    assert state.ready() == (True, "ok")
    state.receipts_down = True
    assert state.ready() == (False, "receipts topic unwritable")
