"""Raw-format payloads: the source shape of SPEC 5, derived from the validated XDM entity."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from worker.config import Settings
from worker.events import decode
from worker.mapping import DEFAULT_FAMILIES, MAPPERS, MappingContext, build_entity
from worker.mapping.raw import raw_body
from worker.rendering import RenderError, render
from worker.routing import build_routes
from worker.sandbox.dataprep import map_source, parse_raw
from worker.schemas import SchemaStore

FIXTURES = Path(__file__).resolve().parents[2] / "schemas" / "capillary" / "fixtures" / "valid"
EE = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
PROFILE = "https://ns.adobe.com/capillary/schemas/loyalty-profile"
INLET = "https://dcs.example/collection/raw-inlet"
FAMILIES = ("experience_event", "profile_customer", "profile_points", "profile_tier")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CAPILLARY_AEP_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def setup() -> tuple[dict[str, Any], SchemaStore]:
    routes = []
    for family in FAMILIES:
        schema = EE if family == "experience_event" else PROFILE
        for fmt, upsert in (("xdm", False), ("raw", False), ("raw", True)):
            if upsert and family == "experience_event":
                continue
            routes.append({
                "name": f"{family}-{fmt}{'-upsert' if upsert else ''}", "family": family,
                "inlet_url": INLET, "dataset_id": f"ds-{family}", "schema_id": schema,
                "flow_id": "flow", "format": fmt, "upsert": upsert, "events": ["*"],
            })
    settings = Settings(
        kafka={"topics": ["in"]},
        aep={"org_id": "X@AdobeOrg", "client_id": "c", "client_secret": "s"},
        routes=routes,
    )
    schemas = SchemaStore()
    targets, _ = build_routes(settings, schemas, MAPPERS.keys(), DEFAULT_FAMILIES)
    return targets, schemas


def _cases() -> list[tuple[str, str, Path]]:
    return [
        (name, family, path)
        for name, family in sorted(MAPPERS)
        for path in sorted((FIXTURES / name).glob("*.json"))
    ]


@pytest.mark.parametrize(("name", "family", "path"), _cases(), ids=lambda v: str(v)[-40:])
def test_raw_body_is_the_entity_in_the_sources_names_and_maps_back_to_valid_xdm(
    setup: tuple[dict[str, Any], SchemaStore], name: str, family: str, path: Path
) -> None:
    targets, schemas = setup
    event = decode(path.read_bytes())
    ctx = MappingContext(clock=lambda: 4_000_000_000.0)
    xdm_target = targets[f"{family}-xdm"]
    try:
        xdm = orjson.loads(render(event, xdm_target, ctx))["body"]["xdmEntity"]
    except RenderError as exc:
        pytest.skip(f"fixture not mappable to {family}: {exc.why.error_kind}")
    variants = [f"{family}-raw"] + ([] if family == "experience_event" else [f"{family}-raw-upsert"])
    for variant in variants:
        target = targets[variant]
        first = render(event, target, ctx)
        assert render(event, target, ctx) == first  # deterministic bytes
        raw = orjson.loads(first)
        parsed = parse_raw(raw)
        assert not isinstance(parsed, str)
        if target.prefix:
            assert parsed.operation == "merge" and parsed.header is not None
            assert parsed.header["datasetId"] == target.dataset_id
        body = parsed.body
        assert "productListItems" not in body
        # Same _id as an XDM route of the same name would give it; Data Prep restores XDM.
        mapped = map_source(body)
        assert {k: v for k, v in mapped.items() if k != "_id"} == {
            k: v for k, v in xdm.items() if k != "_id"
        }
        assert schemas.xdm(target.schema_id).first_violation(mapped) is None
        assert mapped == build_entity(event, family, variant, ctx)


def test_line_items_travel_as_product_line_items() -> None:
    entity = {"_id": "x", "productListItems": [{"SKU": "a", "quantity": 1}], "commerce": {}}
    body = raw_body(entity)
    assert list(body) == ["_id", "productLineItems", "commerce"]
    assert body["productLineItems"] is entity["productListItems"]
    assert map_source(body) == entity
