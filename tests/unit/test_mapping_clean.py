"""Mappers that return a ``Clean`` entity skip build_entity's pruning pass: they must really be
free of empty values, and give exactly what pruning their output would give."""

from __future__ import annotations

import pytest

from worker.events import DecodeError, decode
from worker.mapping import MAPPERS, MappingContext, MappingError, prune
from worker.mapping.context import Clean
from worker.tools.samples import generate_samples

CONTEXTS = [
    MappingContext(),
    MappingContext(
        hashed_identities=frozenset({"email", "phone"}),
        primary_identity="email",
        external_id_namespace="ExternalId",
        card_number_namespace="Card",
        source_timezone="Asia/Kolkata",
        tier_names={1: "Silver", 2: "Gold"},
    ),
]


def _has_empty(value: object) -> bool:
    if value is None or value == "" or value == {} or value == []:
        return True
    if isinstance(value, dict):
        return any(_has_empty(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_empty(v) for v in value)
    return False


@pytest.mark.parametrize("ctx", CONTEXTS, ids=["default", "hashed-email-primary"])
def test_clean_entities_hold_no_empty_value_and_equal_their_pruned_form(
    ctx: MappingContext,
) -> None:
    clean_by_mapper: dict[str, int] = {}
    for sample in generate_samples(3000, seed=11, invalid_share=0.05):
        try:
            event = decode(sample.value)
        except DecodeError:
            continue
        for (name, family), mapper in MAPPERS.items():
            if name != event.name:
                continue
            try:
                entity = mapper(event, ctx)
            except MappingError:
                continue
            if type(entity) is not Clean:
                continue
            key = f"{name}/{family}"
            clean_by_mapper[key] = clean_by_mapper.get(key, 0) + 1
            assert not _has_empty(dict(entity)), key
            pruned = prune(dict(entity))
            assert pruned == entity, key
            assert list(pruned) == list(entity), key  # same key order, so same bytes
            assert entity["identityMap"], key
    # The mappers converted so far (the bulk of real traffic) did produce Clean entities.
    for key in (
        "transactionAdded/experience_event",
        "pointsIssued/experience_event",
        "pointsIssued/profile_points",
        "pointsRedeemed/experience_event",
        "customerAdded/profile_customer",
        "customerUpdated/profile_customer",
        "tierUpgraded/profile_tier",
        "tierUpgraded/experience_event",
        "transactionUpdated/experience_event",
        "pointsExpired/experience_event",
        "pointsExpiryReminder/experience_event",
        "promotionEarned/experience_event",
        "rewardIssued/experience_event",
    ):
        assert clean_by_mapper.get(key, 0) > 0, key
