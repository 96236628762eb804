"""``capillary-aep check-schemas``: compile every schema offline and run its fixtures.

Run it after editing anything under schemas/: valid fixtures must pass, invalid ones must fail,
and every valid Capillary fixture must map, for each target its event feeds by default, to XDM
that the bundled dataset schemas accept. Exit 1 on any surprise.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.table import Table

from worker.events import DecodeError, decode
from worker.schemas import DEFAULT_ROOT, SchemaLoadError, SchemaStore


def _xdm_ids_by_stem(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in (root / "xdm").rglob("*.json"):
        if "fixtures" in path.relative_to(root / "xdm").parts:
            continue
        doc = orjson.loads(path.read_bytes())
        if isinstance(doc, dict) and isinstance(doc.get("$id"), str):
            out[path.name.removesuffix(".json").removesuffix(".schema")] = doc["$id"]
    return out


Row = tuple[str, str, str, bool]


def _check_capillary(store: SchemaStore, root: Path, rows: list[Row]) -> None:
    base = root / "capillary" / "fixtures"
    for expect_valid in (True, False):
        folder = base / ("valid" if expect_valid else "invalid")
        for path in sorted(folder.glob("*/*.json")):
            name = path.parent.name
            try:
                event = decode(path.read_bytes())
                validator = store.capillary(event.name)
                violation = None if validator is None else validator.first_violation(event.data)
                ok = validator is not None and violation is None
                detail = "valid" if ok else str(violation or "no schema")
            except DecodeError as exc:
                ok, detail = False, f"decode: {exc.kind}"
            rows.append((f"capillary/{name}", path.name, detail, ok == expect_valid))


_DATASET_SCHEMAS = {
    "experience_event": "https://ns.adobe.com/capillary/schemas/loyalty-experience-event",
    "profile": "https://ns.adobe.com/capillary/schemas/loyalty-profile",
}


def _check_mapping(store: SchemaStore, root: Path, rows: list[Row]) -> None:
    """Valid fixtures -> every default target -> XDM valid against the bundled schemas."""
    from worker.mapping import DEFAULT_FAMILIES, MappingContext, MappingError, build_entity

    ids = set(store.xdm_schema_ids)
    if not set(_DATASET_SCHEMAS.values()) <= ids:
        return  # a schemas directory without the bundled dataset schemas: nothing to map to
    ctx = MappingContext()
    for name in store.capillary_event_names:
        if name not in DEFAULT_FAMILIES:
            rows.append((f"mapping/{name}", "-", "input schema without a mapping", False))
    for path in sorted((root / "capillary" / "fixtures" / "valid").glob("*/*.json")):
        try:
            event = decode(path.read_bytes())
        except DecodeError:
            continue  # reported by the fixture check
        for family in DEFAULT_FAMILIES.get(event.name, ()):
            kind = "experience_event" if family == "experience_event" else "profile"
            schema = _DATASET_SCHEMAS[kind]
            try:
                entity = build_entity(event, family, family, ctx)
            except MappingError as exc:
                rows.append((f"mapping/{event.name}", path.name, f"{family}: {exc}", False))
                continue
            violation = store.xdm(schema).first_violation(entity)
            detail = f"{family}: " + ("valid" if violation is None else str(violation))
            rows.append((f"mapping/{event.name}", path.name, detail, violation is None))


def _check_xdm(store: SchemaStore, root: Path, rows: list[Row]) -> None:
    ids = _xdm_ids_by_stem(root)
    base = root / "xdm" / "fixtures"
    for expect_valid in (True, False):
        folder = base / ("valid" if expect_valid else "invalid")
        for path in sorted(folder.glob("*/*.json")):
            if path.name.startswith("_"):
                continue
            stem = path.parent.name
            schema_id = ids.get(stem)
            if schema_id is None:
                rows.append((f"xdm/{stem}", path.name, "no schema with this name", False))
                continue
            violation = store.xdm(schema_id).first_violation(orjson.loads(path.read_bytes()))
            detail = "valid" if violation is None else str(violation)
            rows.append((f"xdm/{stem}", path.name, detail, (violation is None) == expect_valid))


@click.command("check-schemas")
@click.option(
    "--schemas-dir", type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=DEFAULT_ROOT, show_default=True, help="Folder holding capillary/ and xdm/.",
)
@click.option("--all", "show_all", is_flag=True, help="List passing fixtures too.")
def check_schemas_command(schemas_dir: Path, show_all: bool) -> None:
    """Compile all schemas (offline) and check their valid/invalid fixtures."""
    console = Console(soft_wrap=True)
    try:
        store = SchemaStore(schemas_dir)
        for schema_id in store.xdm_schema_ids:
            store.xdm(schema_id)
    except SchemaLoadError as exc:
        console.print(f"[red]schema error:[/red] {exc}")
        sys.exit(1)
    rows: list[Row] = []
    _check_capillary(store, schemas_dir, rows)
    _check_xdm(store, schemas_dir, rows)
    _check_mapping(store, schemas_dir, rows)
    table = Table(title="schema fixtures")
    for col in ("schema", "fixture", "result", "as expected"):
        table.add_column(col)
    for schema, fixture, detail, good in rows:
        if show_all or not good:
            table.add_row(schema, fixture, detail, "yes" if good else "[red]NO[/red]")
    bad = sum(1 for r in rows if not r[3])
    if table.row_count:
        console.print(table)
    console.print(
        f"{len(store.capillary_event_names)} Capillary schemas, {len(store.xdm_schema_ids)} XDM "
        f"schemas compiled; {len(rows)} fixtures checked, {bad} not as expected"
    )
    sys.exit(1 if bad else 0)
