"""worker.xdm_view: resolving XDM schemas like the Schema Registry's xed-full, and the diff
preflight and the drift check report (paths, never values)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.config import ConfigError, load_settings
from worker.schemas import SchemaStore
from worker.xdm_view import Field, ResolveError, diff, fields, resolve

EE = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
PROFILE = "https://ns.adobe.com/capillary/schemas/loyalty-profile"


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore()


def test_resolve_inlines_refs_and_merges_allof(store: SchemaStore) -> None:
    doc = resolve(EE, store.xdm_document)
    text = repr(doc)
    assert "$ref" not in text and "'allOf'" not in text
    assert doc["$id"] == EE and doc["type"] == "object"
    props = doc["properties"]
    assert {"_id", "timestamp", "identityMap", "commerce", "productListItems", "loyalty",
            "_capillary"} <= set(props)
    assert set(doc["required"]) >= {"_id", "timestamp", "identityMap"}
    # A datatype referenced by a field group is inlined (measure: value required).
    assert props["commerce"]["properties"]["purchases"]["required"] == ["value"]


def test_fields_paths_types_required(store: SchemaStore) -> None:
    f = fields(resolve(EE, store.xdm_document))
    assert f["/_id"] == Field("string", True)
    assert f["/timestamp"] == Field("string(date-time)", True)
    assert f["/identityMap/*[]/id"] == Field("string", True)
    assert f["/productListItems[]/quantity"] == Field("integer", False)
    assert f["/productListItems[]/SKU"].required
    p = fields(resolve(PROFILE, store.xdm_document))
    assert p["/loyalty/tierExpiryDate"].type == "string(date)"


def test_identical_schemas_have_no_drift(store: SchemaStore) -> None:
    for schema_id in (EE, PROFILE):
        f = fields(resolve(schema_id, store.xdm_document))
        result = diff(f, f)
        assert not result.drift and result.problems() == [] and result.extra == 0


def test_diff_names_paths_once_and_ignores_optional_registry_extras(store: SchemaStore) -> None:
    local_doc = resolve(EE, store.xdm_document)
    remote = copy.deepcopy(local_doc)
    del remote["properties"]["loyalty"]
    remote["properties"]["_capillary"]["properties"]["orgId"]["type"] = "string"
    remote["properties"]["eventType"]["format"] = "uri"
    remote["required"] = [r for r in remote["required"] if r != "identityMap"]
    remote["properties"]["web"] = {"type": "object", "properties": {"url": {"type": "string"}}}
    remote["properties"]["channel"] = {"type": "string"}
    remote["properties"]["_capillary"]["properties"]["mustHave"] = {"type": "string"}
    remote["properties"]["_capillary"]["required"] = ["mustHave"]
    result = diff(fields(local_doc), fields(remote))
    assert result.drift
    assert result.only_local == ["/loyalty"]  # its fields are not repeated
    assert result.type_differs == [
        "/_capillary/orgId: type integer != string",
        "/eventType: type string != string(uri)",
    ]
    assert result.required_differs == ["/identityMap: required yes != no"]
    assert result.required_only_in_registry == ["/_capillary/mustHave"]
    assert result.extra == 3  # /web, /web/url, /channel: optional, never sent
    assert result.paths() == sorted(
        ["/loyalty", "/_capillary/orgId", "/eventType", "/identityMap", "/_capillary/mustHave"]
    )
    # No values anywhere, only paths, types and flags.
    assert all(line.startswith("/") for line in result.problems())


def test_required_field_under_an_object_never_sent_is_not_drift() -> None:
    local = {"/a": Field("string", True)}
    remote = {"/a": Field("string", True), "/b": Field("object", False),
              "/b/c": Field("string", True)}
    result = diff(local, remote)
    assert not result.drift and result.extra == 2


def test_unknown_ref_and_cycles_raise() -> None:
    docs: dict[str, Any] = {
        "a": {"$id": "a", "allOf": [{"$ref": "b"}]},
        "b": {"$id": "b", "properties": {"x": {"$ref": "a"}}},
        "c": {"$id": "c", "allOf": [{"$ref": "missing"}]},
    }
    with pytest.raises(ResolveError, match="cycle"):
        resolve("a", docs.__getitem__)
    with pytest.raises(ResolveError, match="unknown schema missing"):
        resolve("c", docs.__getitem__)


_types = st.sampled_from(["string", "integer", "number", "boolean"])


@st.composite
def schemas(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    names = draw(st.lists(st.text("abcdefgh", min_size=1, max_size=3), min_size=1, max_size=4,
                          unique=True))
    props: dict[str, Any] = {}
    for name in names:
        if depth < 2 and draw(st.booleans()):
            props[name] = draw(schemas(depth + 1))
        else:
            props[name] = {"type": draw(_types)}
    required = draw(st.lists(st.sampled_from(names), unique=True))
    return {"type": "object", "properties": props, "required": required}


@settings(max_examples=200, deadline=None)
@given(schemas(), st.data())
def test_removing_any_field_is_reported_by_its_path(doc: dict[str, Any], data: st.DataObject) -> None:
    local = fields(doc)
    assert not diff(local, local).drift
    path = data.draw(st.sampled_from(sorted(local)))
    remote_doc = copy.deepcopy(doc)
    node = remote_doc
    parts = path.strip("/").split("/")
    for part in parts[:-1]:
        node = node["properties"][part]
    del node["properties"][parts[-1]]
    result = diff(local, fields(remote_doc))
    assert result.drift and path in result.only_local
    assert path in result.paths()


def test_platform_settings_bounds() -> None:
    with pytest.raises(ConfigError, match="schema_drift_interval_s"):
        load_settings(None, aep={"org_id": "X@AdobeOrg", "schema_drift_interval_s": 0.5},
                      routes=[])
    with pytest.raises(ConfigError, match="platform_url"):
        load_settings(None, aep={"org_id": "X@AdobeOrg", "platform_url": "ftp://x"}, routes=[])
