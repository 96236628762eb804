"""XDM schemas under schemas/xdm: fixtures, offline compilation, and how the files are written.

Fixtures live in ``schemas/xdm/fixtures/{valid,invalid}/<schema file stem>/*.json``. Each
invalid folder has a ``_reasons.json`` naming, per file, the violation it must produce
(JSON pointer + keyword), so an invalid fixture cannot pass the test by failing for another
reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from worker.schemas import DEFAULT_ROOT, SchemaLoadError, SchemaStore

XDM = DEFAULT_ROOT / "xdm"
FIXTURES = XDM / "fixtures"
DRAFT_06 = "http://json-schema.org/draft-06/schema#"
TENANT_SCHEMAS = [
    "https://ns.adobe.com/capillary/schemas/loyalty-experience-event",
    "https://ns.adobe.com/capillary/schemas/loyalty-profile",
]
# Keywords that may sit next to "$ref": draft-06 ignores every sibling of "$ref", so a
# validation keyword there would silently do nothing.
_REF_SIBLINGS_OK = {"title", "description", "examples", "default"}


def _schema_files() -> list[Path]:
    return sorted(p for p in XDM.rglob("*.json") if "fixtures" not in p.relative_to(XDM).parts)


def _stem(path: Path) -> str:
    return path.name.removesuffix(".json").removesuffix(".schema")


def _load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore()


def _id_by_stem() -> dict[str, str]:
    return {_stem(p): _load(p)["$id"] for p in _schema_files()}


def _fixtures(kind: str) -> list[tuple[str, Path]]:
    out = []
    for folder in sorted((FIXTURES / kind).iterdir()):
        for path in sorted(folder.glob("*.json")):
            if not path.name.startswith("_"):
                out.append((folder.name, path))
    return out


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


# -- the files --------------------------------------------------------------------------------


def test_schema_files_are_draft_06_with_adobe_ids_and_unique_stems() -> None:
    files = _schema_files()
    assert len(files) >= 20
    stems = [_stem(p) for p in files]
    assert len(stems) == len(set(stems)), "fixture folders are named by file stem"
    for path in files:
        doc = _load(path)
        assert doc["$schema"] == DRAFT_06, path
        assert doc["$id"].startswith("https://ns.adobe.com/"), path
        assert doc.get("type") == "object", path


def test_refs_are_absolute_local_and_have_no_ignored_siblings() -> None:
    ids = {_load(p)["$id"] for p in _schema_files()}
    for path in _schema_files():
        for node in _walk(_load(path)):
            ref = node.get("$ref")
            if ref is None:
                continue
            assert ref.startswith("https://ns.adobe.com/"), f"{path}: relative $ref {ref}"
            assert ref.split("#")[0] in ids, f"{path}: $ref {ref} is not a local schema"
            ignored = set(node) - {"$ref"} - _REF_SIBLINGS_OK
            ignored = {k for k in ignored if not k.startswith("meta:")}
            assert not ignored, f"{path}: draft-06 ignores {ignored} next to $ref"


def test_every_schema_compiles_offline(store: SchemaStore) -> None:
    assert set(store.xdm_schema_ids) == {_load(p)["$id"] for p in _schema_files()}
    for schema_id in store.xdm_schema_ids:
        store.xdm(schema_id)  # raises SchemaLoadError if anything would need the network


def test_an_unknown_ref_is_refused_not_fetched(tmp_path: Path) -> None:
    (tmp_path / "xdm").mkdir()
    (tmp_path / "xdm" / "a.schema.json").write_bytes(
        orjson.dumps(
            {
                "$id": "https://ns.adobe.com/test/a",
                "$schema": DRAFT_06,
                "type": "object",
                "properties": {"x": {"$ref": "https://ns.adobe.com/xdm/not-here"}},
            }
        )
    )
    with pytest.raises(SchemaLoadError):
        SchemaStore(tmp_path).xdm("https://ns.adobe.com/test/a")


def _top_level_names(doc: dict[str, Any], docs: dict[str, dict[str, Any]]) -> set[str]:
    names = set(doc.get("properties", {}))
    for member in doc.get("allOf", []):
        target = docs[member["$ref"]] if "$ref" in member else member
        names |= _top_level_names(target, docs)
    return names


@pytest.mark.parametrize("schema_id", TENANT_SCHEMAS)
def test_closed_top_level_lists_exactly_the_composed_fields(
    store: SchemaStore, schema_id: str
) -> None:
    docs = {sid: store.xdm_document(sid) for sid in store.xdm_schema_ids}
    doc = docs[schema_id]
    composed = set()
    for member in doc["allOf"]:
        composed |= _top_level_names(docs[member["$ref"]], docs)
    assert set(doc["propertyNames"]["enum"]) == composed
    assert set(doc["required"]) <= composed


@pytest.mark.parametrize("schema_id", TENANT_SCHEMAS)
def test_tenant_fields_live_under_capillary_and_are_closed(
    store: SchemaStore, schema_id: str
) -> None:
    doc = store.xdm_document(schema_id)
    tenant_groups = [m["$ref"] for m in doc["allOf"] if "/capillary/mixins/" in m["$ref"]]
    assert len(tenant_groups) == 1
    group = store.xdm_document(tenant_groups[0])
    assert set(group["properties"]) == {"_capillary"}
    assert group["properties"]["_capillary"]["additionalProperties"] is False


# -- fixtures ---------------------------------------------------------------------------------


def test_every_fixture_folder_names_a_schema() -> None:
    stems = _id_by_stem()
    for kind in ("valid", "invalid"):
        for folder in (FIXTURES / kind).iterdir():
            assert folder.name in stems, f"{kind}/{folder.name} is not a schema file stem"
    assert {f for f, _ in _fixtures("valid")} >= {"loyalty-experience-event", "loyalty-profile"}
    assert {f for f, _ in _fixtures("invalid")} >= {"loyalty-experience-event", "loyalty-profile"}


@pytest.mark.parametrize(
    ("folder", "path"), _fixtures("valid"), ids=lambda v: v.name if isinstance(v, Path) else v
)
def test_valid_fixture_passes(store: SchemaStore, folder: str, path: Path) -> None:
    validator = store.xdm(_id_by_stem()[folder])
    instance = _load(path)
    assert validator.violations(instance) == []
    assert validator.is_valid(instance)


@pytest.mark.parametrize(
    ("folder", "path"), _fixtures("invalid"), ids=lambda v: v.name if isinstance(v, Path) else v
)
def test_invalid_fixture_fails_for_its_stated_reason(
    store: SchemaStore, folder: str, path: Path
) -> None:
    reasons = _load(path.parent / "_reasons.json")
    assert path.name in reasons, f"{path.name}: say why it is invalid in _reasons.json"
    expected = reasons[path.name]
    validator = store.xdm(_id_by_stem()[folder])
    instance = _load(path)
    assert not validator.is_valid(instance)
    found = validator.violations(instance, limit=50)
    assert any(v.path == expected["path"] and v.keyword == expected["keyword"] for v in found), (
        f"{path.name}: expected {expected['path']!r} {expected['keyword']}, got "
        f"{[str(v) for v in found]}"
    )


def test_reasons_files_list_only_existing_fixtures() -> None:
    for reasons_file in (FIXTURES / "invalid").glob("*/_reasons.json"):
        names = {p.name for p in reasons_file.parent.glob("*.json") if not p.name.startswith("_")}
        assert set(_load(reasons_file)) == names, reasons_file


def test_violations_never_quote_the_value(store: SchemaStore) -> None:
    secret = "ada.lovelace@example.com"
    for folder, path in _fixtures("valid"):
        if folder != "loyalty-profile":
            continue
        instance = _load(path)
        instance["loyalty"] = {"points": secret, "tierExpiryDate": secret}
        instance["identityMap"]["Email"] = [{"id": 1, "authenticatedState": secret}]
        found = store.xdm(_id_by_stem()[folder]).violations(instance, limit=50)
        assert found
        assert all(secret not in str(v) for v in found)
