"""Sandbox pieces without HTTP: settings files, fault settings, the null/empty scan, tokens."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from worker.sandbox.config import (
    DEFAULT_CLIENT_ID,
    SandboxConfig,
    SandboxConfigError,
    parse_store,
)
from worker.sandbox.dcs import find_empty
from worker.sandbox.faults import FaultConfig, FaultConfigError, FaultState
from worker.sandbox.ims import ImsError, TokenIssuer, expires_in


def test_defaults_are_the_names_the_project_relies_on() -> None:
    c = SandboxConfig()
    assert c.org_id == "EXAMPLEORG0123456789@AdobeOrg"
    assert [(i.client_id, i.client_secret) for i in c.ims_clients] == [
        ("sandbox-client", "sandbox-secret")
    ]
    assert [d.id for d in c.datasets] == [
        "ds-loyalty-events",
        "ds-commerce-events",
        "ds-profile-customer",
        "ds-profile-points",
        "ds-profile-tier",
    ]
    assert all(d.profile_enabled for d in c.datasets)
    assert [(i.id, i.auth_required, i.datasets) for i in c.inlets] == [
        ("capillary-inlet", True, None),
        ("open-inlet", False, None),
    ]
    assert c.max_body_bytes == 1_000_000
    assert "sandbox-secret" not in repr(c)


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.toml"
    path.write_text(
        """
token_lifetime_seconds = 5
store = "jsonl:out/accepted.jsonl"

[[inlets]]
id = "only-profiles"
auth_required = false
datasets = ["ds-profile-tier"]
failure_key = "status"

[faults]
share_503 = 0.25
message_faults = [{contains = "x", status = 500, times = 1}]
"""
    )
    c = SandboxConfig.from_file(path)
    assert c.token_lifetime_s == 5
    assert c.store == "jsonl" and c.jsonl_path == Path("out/accepted.jsonl")
    inlet = c.inlet("only-profiles")
    assert inlet is not None and inlet.datasets == ("ds-profile-tier",)
    assert inlet.allows("ds-profile-tier") and not inlet.allows("ds-loyalty-events")
    assert c.faults.share_503 == 0.25 and c.faults.message_faults[0].times == 1
    assert c.ims_clients[0].client_id == DEFAULT_CLIENT_ID  # defaults kept for the rest


@pytest.mark.parametrize(
    "settings",
    [
        {"bogus": 1},
        {"org_id": "NOT-AN-ORG"},
        {"inlets": [{"id": "a", "datasets": ["ds-nowhere"]}]},
        {"inlets": [{"id": "a", "failure_key": "code"}]},
        {"store": "disk"},
        {"inlets": [{"id": "a", "color": "red"}]},
        {"faults": {"share_429": 0.7, "share_503": 0.7}},
    ],
)
def test_bad_settings_name_the_setting(settings: dict[str, object]) -> None:
    with pytest.raises((SandboxConfigError, FaultConfigError)):
        SandboxConfig.from_mapping(settings)


def test_parse_store() -> None:
    assert parse_store("memory") == ("memory", None)
    assert parse_store("count") == ("count", None)
    assert parse_store("jsonl:/tmp/x.jsonl") == ("jsonl", Path("/tmp/x.jsonl"))
    with pytest.raises(SandboxConfigError):
        parse_store("jsonl:")


def test_find_empty_reports_the_first_null_or_empty_in_document_order() -> None:
    assert find_empty({"a": 1, "b": [1, {"c": "x"}], "d": False, "e": 0}) is None
    assert find_empty({"a": {"b": [1, None]}, "z": ""}) == ("/a/b/1", "null")
    assert find_empty({"a": "", "b": None}) == ("/a", "empty string")
    assert find_empty({"a/b": {}}) == ("/a~1b", "empty object")
    assert find_empty({"a": [[]]}) == ("/a/0", "empty array")
    assert find_empty({}) == ("/", "empty object")


def test_fault_queue_outage_and_counters() -> None:
    now = [1000.0]
    state = FaultState(FaultConfig(), clock=lambda: now[0], rng=random.Random(1))
    state.update({"next": [{"status": 503}, {"reset": True}, {"delay_ms": 50}]})
    first = state.request_fault("dcs")
    assert first is not None and first.status == 503
    second = state.request_fault("dcs")
    assert second is not None and second.reset
    third = state.request_fault("dcs")
    assert third is not None and third.status is None and third.delay_s == pytest.approx(0.05)
    assert state.request_fault("dcs") is None
    assert state.request_fault("ims") is None
    state.update({"outage_seconds": 10})
    fault = state.request_fault("dcs")
    assert fault is not None and fault.status == 503
    now[0] += 10.5
    assert state.request_fault("dcs") is None
    assert state.injected == {"503": 2, "reset": 1}


def test_retry_after_forms() -> None:
    state = FaultState(FaultConfig(retry_after_seconds=2.5), clock=lambda: 0.0)
    assert state.retry_after_value() == "3"
    state.update({"retry_after_format": "http-date"})
    assert state.retry_after_value() == "Thu, 01 Jan 1970 00:00:03 GMT"
    state.update({"next": [{"status": 429}]})
    fault = state.request_fault("dcs")
    assert fault is not None and fault.retry_after == "Thu, 01 Jan 1970 00:00:03 GMT"


def test_message_faults_count_down() -> None:
    state = FaultState()
    state.update({"message_faults": [{"contains": "abc", "status": 503, "times": 2}]})
    assert state.message_fault(b'{"id":"abc"}') == (503, "Injected per-message fault (status 503)")
    assert state.message_fault(b'{"id":"xyz"}') is None
    assert state.message_fault(b'{"id":"abc"}') is not None
    assert state.message_fault(b'{"id":"abc"}') is None
    assert not state.has_message_faults


@pytest.mark.parametrize(
    "patch",
    [
        {"next": [{}]},
        {"next": [{"status": 700}]},
        {"message_faults": [{"contains": "", "status": 500}]},
        {"message_faults": [{"contains": "x", "status": 200}]},
        {"targets": ["kafka"]},
        {"outage_mode": "fire"},
        {"latency_ms": -1},
    ],
)
def test_bad_fault_settings(patch: dict[str, object]) -> None:
    with pytest.raises(FaultConfigError):
        FaultState().update(patch)


def test_token_issuer_expiry_on_its_clock() -> None:
    now = [0.0]
    issuer = TokenIssuer(SandboxConfig().ims_clients, lifetime_s=10, clock=lambda: now[0])
    form = {
        "client_id": "sandbox-client",
        "client_secret": "sandbox-secret",
        "grant_type": "client_credentials",
    }
    token, lifetime = issuer.issue(form)
    assert lifetime == 10 and issuer.check(token) == "valid"
    now[0] = 9.99
    assert issuer.check(token) == "valid"
    now[0] = 10.0
    assert issuer.check(token) == "expired"
    assert issuer.check("nope") == "unknown"
    with pytest.raises(ImsError) as err:
        issuer.issue({**form, "client_secret": "x"})
    assert err.value.status == 401 and err.value.error == "invalid_client"
    assert expires_in(86399, legacy=False) == 86399
    assert expires_in(86399, legacy=True) == 86_399_000
    assert expires_in(1.5, legacy=False) == 1
