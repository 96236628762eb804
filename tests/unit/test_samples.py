"""worker.tools.samples: deterministic, realistic samples; valid ones flow, invalid ones fail."""

from __future__ import annotations

from collections import Counter

import pytest
from click.testing import CliRunner

from worker.events import DecodeError, decode
from worker.mapping import DEFAULT_FAMILIES, MappingContext, build_entity
from worker.schemas import SchemaStore
from worker.tools.samples import (
    INVALID_KINDS,
    SUPPORTED_EVENTS,
    Sample,
    generate_samples,
    produce_samples_command,
)

EVENT_SCHEMA = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
PROFILE_SCHEMA = "https://ns.adobe.com/capillary/schemas/loyalty-profile"


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore()


def test_deterministic_for_a_seed() -> None:
    first = list(generate_samples(300, seed=7, invalid_share=0.1))
    second = list(generate_samples(300, seed=7, invalid_share=0.1))
    assert first == second
    other = list(generate_samples(300, seed=8, invalid_share=0.1))
    assert [s.value for s in other] != [s.value for s in first]


def test_prefix_is_stable_whatever_the_count() -> None:
    assert list(generate_samples(50, seed=3)) == list(generate_samples(200, seed=3))[:50]
    endless = generate_samples(None, seed=3)
    assert [next(endless) for _ in range(50)] == list(generate_samples(50, seed=3))


def test_valid_samples_decode_validate_and_map(store: SchemaStore) -> None:
    ctx = MappingContext()
    names: Counter[str] = Counter()
    envelopes: Counter[str] = Counter()
    quirky = 0
    for sample in generate_samples(1500, seed=11):
        assert sample.valid and sample.kind == "valid"
        event = decode(sample.value)
        assert (event.name, event.event_id) == (sample.event_name, sample.event_id)
        validator = store.capillary(event.name)
        assert validator is not None
        assert validator.first_violation(event.data) is None
        for family in DEFAULT_FAMILIES[event.name]:
            entity = build_entity(event, family, "t", ctx)
            schema = EVENT_SCHEMA if family == "experience_event" else PROFILE_SCHEMA
            assert store.xdm(schema).violations(entity) == []
        assert sample.key == str(event.data["customerIdentifiers"]["customerId"]).encode()
        names[event.name] += 1
        envelopes[event.envelope] += 1
        quirky += b'" timeStamp"' in sample.value or b'"email "' in sample.value
    assert set(names) == set(SUPPORTED_EVENTS)
    assert envelopes["flat"] > 300 and envelopes["wrapped"] > 300
    assert quirky > 10  # SPEC 1.2 quirks do occur in valid samples


def test_realistic_sizes() -> None:
    sizes = sorted(len(s.value) for s in generate_samples(1000, seed=5))
    assert sizes[len(sizes) // 20] >= 400  # 5th percentile
    assert sizes[len(sizes) // 2] <= 1500  # median
    inside = sum(500 <= size <= 1500 for size in sizes)
    assert inside / len(sizes) > 0.9


@pytest.mark.parametrize("share", [0.0, 0.01, 0.1, 0.5, 1.0])
def test_invalid_share_is_honoured(share: float) -> None:
    samples = list(generate_samples(1000, seed=2, invalid_share=share))
    assert sum(not s.valid for s in samples) == int(1000 * share)


def test_invalid_kinds_fail_the_way_they_say(store: SchemaStore) -> None:
    seen: Counter[str] = Counter()
    for sample in generate_samples(2000, seed=9, invalid_share=0.2):
        if sample.valid:
            continue
        assert sample.kind in INVALID_KINDS
        seen[sample.kind] += 1
        if sample.kind in ("invalid-json", "schema-registry-framed", "missing-event-id"):
            with pytest.raises(DecodeError) as info:
                decode(sample.value)
            expected = {"missing-event-id": "missing-field"}.get(sample.kind, sample.kind)
            assert info.value.kind == expected
            continue
        event = decode(sample.value)
        assert event.name == sample.event_name
        validator = store.capillary(event.name)
        if sample.kind == "unknown-event":
            assert validator is None
        else:
            assert validator is not None
            assert validator.first_violation(event.data) is not None
    assert set(seen) == set(INVALID_KINDS)


def test_event_filter_and_errors() -> None:
    samples = list(generate_samples(100, seed=1, event_names=["tierUpgraded"]))
    assert {s.event_name for s in samples} == {"tierUpgraded"}
    with pytest.raises(ValueError, match="no sample generator"):
        list(generate_samples(1, seed=1, event_names=["badgeEarned"]))
    with pytest.raises(ValueError, match="invalid_share"):
        list(generate_samples(1, seed=1, invalid_share=1.5))


def test_identifiers_are_synthetic() -> None:
    for sample in generate_samples(300, seed=4):
        if b"@" in sample.value:
            assert b"@example." in sample.value


def test_sample_shape() -> None:
    sample = next(generate_samples(1, seed=1))
    assert isinstance(sample, Sample)
    assert isinstance(sample.key, bytes) and sample.key.isdigit()


def test_command_with_librdkafka_mock_cluster() -> None:
    result = CliRunner().invoke(
        produce_samples_command,
        [
            "--bootstrap-servers", "127.0.0.1:1",
            "--topic", "samples",
            "--count", "200",
            "--invalid-share", "0.05",
            "--seed", "3",
            "-X", "test.mock.num.brokers=1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "produced 200 samples to samples" in result.output
    assert "valid    190" in result.output
    assert "invalid  10 (" in result.output
    assert "delivered 200, failed 0, undelivered 0" in result.output


def test_command_usage_errors() -> None:
    runner = CliRunner()
    base = ["--bootstrap-servers", "x:1", "--topic", "t"]
    assert runner.invoke(produce_samples_command, [*base, "--rate", "10"]).exit_code == 2
    both = [*base, "--count", "5", "--rate", "10", "--duration", "1"]
    assert runner.invoke(produce_samples_command, both).exit_code == 2
    assert runner.invoke(produce_samples_command, [*base, "-X", "nokeyvalue"]).exit_code == 2
    assert runner.invoke(produce_samples_command, [*base, "--event", "nope"]).exit_code == 2
