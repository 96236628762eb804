"""Routes: Capillary orgId and event matching (wildcards), raw targets, per-route AEP settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from worker.config import ConfigError, Settings, load_settings
from worker.mapping import DEFAULT_FAMILIES, MAPPERS
from worker.routing import RouteTable, RoutingError, build_routes
from worker.schemas import SchemaStore

EE = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
PROFILE = "https://ns.adobe.com/capillary/schemas/loyalty-profile"
INLET = "https://dcs.adobedc.net/collection/inlet-a"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CAPILLARY_AEP_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def schemas() -> SchemaStore:
    return SchemaStore()


def route(name: str, family: str = "experience_event", **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "family": family, "inlet_url": extra.pop("inlet_url", INLET),
        "dataset_id": f"ds-{name}", "schema_id": EE if family == "experience_event" else PROFILE,
        "flow_id": f"flow-{name}", **extra,
    }


def settings(*routes: dict[str, Any], **sections: Any) -> Settings:
    return Settings(
        kafka={"topics": ["in"]},
        aep={"org_id": "DEFAULT@AdobeOrg", "client_id": "cid", "client_secret": "sec",
             "sandbox_name": "prod"},
        routes=list(routes),
        **sections,
    )


def table(s: Settings, schemas: SchemaStore) -> RouteTable:
    return build_routes(s, schemas, MAPPERS.keys(), DEFAULT_FAMILIES)[1]


def names(targets: Any) -> list[str]:
    return [t.name for t in targets or ()]


def test_org_specific_routes_add_to_wildcard_routes_in_route_order(schemas: SchemaStore) -> None:
    s = settings(
        route("all-orgs", events=["pointsIssued"]),
        route("org-7", events=["pointsIssued", "transactionAdded"], capillary_org_ids=[7]),
        route("org-8", events=["*"], capillary_org_ids=[8]),
    )
    t = table(s, schemas)
    assert names(t.lookup(7, "pointsIssued")) == ["all-orgs", "org-7"]
    assert names(t.lookup(7, "transactionAdded")) == ["org-7"]
    assert names(t.lookup(9, "pointsIssued")) == ["all-orgs"]
    assert t.lookup(9, "transactionAdded") is None
    every_event = {n for n, fam in MAPPERS if fam == "experience_event"}
    assert {n for n in every_event if names(t.lookup(8, n))[-1:] == ["org-8"]} == every_event
    assert t.org_ids() == [7, 8]
    assert "transactionAdded" in t.event_names()


def test_restricted_table_keeps_routed_events_with_no_target(schemas: SchemaStore) -> None:
    s = settings(route("tier", "profile_tier", events=["tierUpgraded"]),
                 route("events", events=["tierUpgraded"]))
    only_events = table(s, schemas).restricted(lambda t: t.family == "experience_event")
    assert names(only_events.lookup(1, "tierUpgraded")) == ["events"]
    no_profiles = table(s, schemas).restricted(lambda t: t.family == "nothing")
    assert no_profiles.lookup(1, "tierUpgraded") == ()
    assert no_profiles.lookup(1, "pointsIssued") is None


def test_unknown_event_for_a_family_is_a_routing_error(schemas: SchemaStore) -> None:
    s = settings(route("cust", "profile_customer", events=["transactionAdded"]))
    with pytest.raises(RoutingError, match=r"routes\[cust\]\.events"):
        table(s, schemas)


def test_xdm_target_header_names_the_routes_org_dataset_and_sandbox(schemas: SchemaStore) -> None:
    s = settings(
        route("a"),
        route("b", inlet_url="https://dcs.adobedc.net/collection/inlet-b",
              ims_org_id="OTHER@AdobeOrg", sandbox_name="dev",
              credentials={"client_id": "other", "client_secret": "x"}),
    )
    targets, _ = build_routes(s, schemas, MAPPERS.keys(), DEFAULT_FAMILIES)
    a, b = targets["a"], targets["b"]
    msg = orjson.loads(a.message(b'{"_id":"1"}'))
    assert msg["header"]["imsOrgId"] == "DEFAULT@AdobeOrg"
    assert msg["header"]["datasetId"] == "ds-a" and msg["body"]["xdmEntity"] == {"_id": "1"}
    assert orjson.loads(b.message(b"{}"))["header"]["imsOrgId"] == "OTHER@AdobeOrg"
    assert a.headers == {"x-adobe-flow-id": "flow-a", "x-sandbox-name": "prod"}
    assert b.headers["x-sandbox-name"] == "dev"
    assert a.url == "https://dcs.adobedc.net/collection/batch/inlet-a" and not a.raw
    assert b.credentials is not None and b.credentials.client_id == "other"


def test_raw_target_posts_the_body_alone_or_inside_the_upsert_header(
    schemas: SchemaStore,
) -> None:
    s = settings(
        route("raw-events", format="raw"),
        route("raw-tier", "profile_tier", format="raw", upsert=True,
              inlet_url="https://dcs.adobedc.net/collection/batch/inlet-a"),
    )
    targets, _ = build_routes(s, schemas, MAPPERS.keys(), DEFAULT_FAMILIES)
    ev, tier = targets["raw-events"], targets["raw-tier"]
    assert ev.raw and ev.url == INLET  # the single-message endpoint
    assert ev.message(b'{"a":1}') == b'{"a":1}'
    assert tier.url == INLET and tier.ordered and not ev.ordered
    upsert = orjson.loads(tier.message(b'{"a":1}'))
    assert upsert == {
        "header": {"flowId": "flow-raw-tier", "imsOrgId": "DEFAULT@AdobeOrg",
                   "datasetId": "ds-raw-tier", "operations": {"data": "merge"}},
        "body": {"a": 1},
    }


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"upsert": True}, "upsert needs format 'raw'"),
        ({"format": "raw", "upsert": True}, "upsert needs format 'raw' and a profile family"),
        ({"ims_org_id": "nope"}, "ims_org_id must look like"),
        ({"events": ["*", "pointsIssued"]}, "'\\*' stands alone"),
        ({"credentials": {"client_id": "x"}}, "client_secret or client_secret_file"),
    ],
)
def test_route_setting_errors_name_the_route(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings(route("r", **bad))


def test_routes_sharing_an_inlet_must_share_credentials() -> None:
    with pytest.raises(ValueError, match="must share credentials"):
        settings(route("a"), route("b", credentials={"client_id": "x", "client_secret": "y"}))
    with pytest.raises(ValueError, match="and authenticated"):
        settings(route("a"), route("b", authenticated=False))


def test_routes_with_own_credentials_need_no_aep_client(tmp_path: Path) -> None:
    toml = tmp_path / "w.toml"
    toml.write_text(f"""
[kafka]
topics = ["in"]
[aep]
org_id = "X@AdobeOrg"
[policy]
allowed_org_ids = [1, 2]
[profile_order]
max_identities = 5000
[[routes]]
name = "a"
family = "experience_event"
inlet_url = "{INLET}"
dataset_id = "ds"
schema_id = "{EE}"
flow_id = "f"
[routes.credentials]
client_id = "own"
client_secret = "own-secret-value"
""")
    s = load_settings(toml)
    assert s.policy.allowed_org_ids == [1, 2] and s.profile_order.max_identities == 5000
    assert "own-secret-value" not in repr(s)
    toml.write_text(toml.read_text().replace("[routes.credentials]\nclient_id = \"own\"\n"
                                             "client_secret = \"own-secret-value\"\n", ""))
    with pytest.raises(ConfigError, match=r"aep\.client_id is required"):
        load_settings(toml)


def test_tenant_id_expands_short_schema_ids_and_names_the_tenant_object(
    tmp_path: Path,
) -> None:
    s = Settings(
        kafka={"topics": ["in"]},
        aep={"org_id": "X@AdobeOrg", "client_id": "c", "client_secret": "s"},
        routes=[route("a", schema_id="abc123")],
        xdm={"tenant_id": "acme", "schemas_dir": str(tmp_path)},
    )
    assert s.xdm.schema_id("abc123") == "https://ns.adobe.com/acme/schemas/abc123"
    assert s.xdm.schema_id(EE) == EE
    assert s.mapping.tenant == "_acme"
    with pytest.raises(ValueError, match=r"mapping\.tenant must be _acme"):
        Settings(
            kafka={"topics": ["in"]},
            aep={"org_id": "X@AdobeOrg", "client_id": "c", "client_secret": "s"},
            routes=[route("a")], xdm={"tenant_id": "acme"}, mapping={"tenant": "_other"},
        )
    with pytest.raises(ValueError, match=r"xdm\.schemas_dir: directory not found"):
        Settings(
            kafka={"topics": ["in"]},
            aep={"org_id": "X@AdobeOrg", "client_id": "c", "client_secret": "s"},
            routes=[route("a")], xdm={"schemas_dir": str(tmp_path / "missing")},
        )


_EVENTS = ["pointsIssued", "transactionAdded", "tierUpgraded"]
_route_specs = st.lists(
    st.tuples(
        st.one_of(st.none(), st.lists(st.sampled_from([1, 2, 3]), min_size=1, unique=True)),
        st.lists(st.sampled_from(_EVENTS), min_size=1, unique=True),
    ),
    min_size=1, max_size=5,
)


@settings_(max_examples=60, deadline=None)
@given(specs=_route_specs, org=st.sampled_from([1, 2, 3, 4]), name=st.sampled_from(_EVENTS))
def test_lookup_is_every_matching_route_in_route_order(
    schemas: SchemaStore, specs: list[tuple[list[int] | None, list[str]]], org: int, name: str
) -> None:
    routes = [
        route(f"r{i}", capillary_org_ids=orgs, events=events)
        for i, (orgs, events) in enumerate(specs)
    ]
    expected = [
        f"r{i}" for i, (orgs, events) in enumerate(specs)
        if name in events and (orgs is None or org in orgs)
    ]
    found = table(settings(*routes), schemas).lookup(org, name)
    assert names(found) == expected
    assert (found is None) == (not expected)
