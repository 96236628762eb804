"""Load and compile the JSON Schemas under schemas/, offline.

Capillary input schemas (draft-07) live in ``schemas/capillary/<eventName>.schema.json``.
XDM schemas (draft-06, like Adobe's) live anywhere under ``schemas/xdm/`` and reference each
other by absolute ``https://ns.adobe.com/...`` ids; every such ``$ref`` is resolved from the
local files and never fetched over the network.

A user's own XDM schemas, exported from their Schema Registry (``xdm.schemas_dir``), load the
same way from their directory, after ours: their ``$id``s win over ours, so an exported
standard class or field group replaces our copy, and their tenant schemas can refer to ours.

Violations are reported without the offending value: validator messages quote the instance,
and instance values can be emails or phone numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "schemas"

# Keywords whose details come from the schema (or are property names), never instance values.
_SAFE_DETAIL_KEYS = ("property", "types", "limit", "unexpected", "format", "pattern")


class SchemaLoadError(RuntimeError):
    """A schema file is missing, unparsable, or refers to a schema we do not have."""


@dataclass(frozen=True, slots=True)
class SchemaViolation:
    """One validation failure: where, which keyword, and a value-free detail."""

    path: str  # JSON pointer into the instance, e.g. "/data/amount"
    keyword: str  # e.g. "required", "type", "minimum"
    detail: str

    def __str__(self) -> str:
        where = self.path or "/"
        return f"{where}: {self.keyword}" + (f" ({self.detail})" if self.detail else "")


def _pointer(parts: list[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _violation(err: Any) -> SchemaViolation:
    kind = err.kind
    keyword = str(kind.name)
    try:
        info = kind.as_dict()
    except Exception:  # pragma: no cover - defensive: unknown kind shapes
        info = {}
    details = [f"{k}={info[k]}" for k in _SAFE_DETAIL_KEYS if k in info]
    return SchemaViolation(_pointer(list(err.instance_path)), keyword, ", ".join(details))


class Validator:
    """A compiled schema. ``is_valid`` is the fast path; ``violations`` explains a failure."""

    __slots__ = ("_compiled", "schema_id")

    def __init__(self, schema_id: str, compiled: Any) -> None:
        self.schema_id = schema_id
        self._compiled = compiled

    def is_valid(self, instance: Any) -> bool:
        return bool(self._compiled.is_valid(instance))

    def violations(self, instance: Any, limit: int = 5) -> list[SchemaViolation]:
        out: list[SchemaViolation] = []
        for err in self._compiled.iter_errors(instance):
            out.append(_violation(err))
            if len(out) >= limit:
                break
        return out

    def first_violation(self, instance: Any) -> SchemaViolation | None:
        """None when valid; otherwise the first violation (one pass, no extra work when valid)."""
        if self._compiled.is_valid(instance):
            return None
        found = self.violations(instance, limit=1)
        return found[0] if found else SchemaViolation("", "unknown", "")


def _refuse_network(uri: str) -> Any:
    raise SchemaLoadError(f"schema {uri!r} is not in the local schemas directory (no network)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SchemaLoadError(f"cannot read schema {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise SchemaLoadError(f"schema {path} is not a JSON object")
    return doc


class SchemaStore:
    """Every schema under a root directory, compiled once."""

    def __init__(self, root: Path = DEFAULT_ROOT, user_xdm: Path | None = None) -> None:
        self.root = root
        self._capillary: dict[str, Validator] = {}
        self._xdm_docs: dict[str, dict[str, Any]] = {}
        self._xdm: dict[str, Validator] = {}
        self.user_schema_ids: list[str] = []
        self._load_capillary(root / "capillary")
        self._load_xdm(root / "xdm", user_xdm)

    def _load_capillary(self, folder: Path) -> None:
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("*.schema.json")):
            name = path.name.removesuffix(".schema.json")
            doc = _read_json(path)
            try:
                compiled = jsonschema_rs.validator_for(doc, retriever=_refuse_network)
            except Exception as exc:
                raise SchemaLoadError(f"cannot compile {path}: {exc}") from exc
            self._capillary[name] = Validator(str(doc.get("$id", name)), compiled)

    def _load_xdm(self, folder: Path, user_folder: Path | None = None) -> None:
        if folder.is_dir():
            self._xdm_docs.update(self._read_xdm_folder(folder))
        if user_folder is not None:
            if not user_folder.is_dir():
                raise SchemaLoadError(f"XDM schemas directory {user_folder} not found")
            user = self._read_xdm_folder(user_folder)
            if not user:
                raise SchemaLoadError(f"no XDM schema (*.json with an $id) in {user_folder}")
            self._xdm_docs.update(user)
            self.user_schema_ids = sorted(user)
        if not self._xdm_docs:
            return
        try:
            registry = jsonschema_rs.Registry(
                list(self._xdm_docs.items()), retriever=_refuse_network
            )
        except Exception as exc:  # jsonschema-rs raises ValueError for an unresolvable $ref
            raise SchemaLoadError(f"cannot resolve XDM schema references: {exc}") from exc
        self._registry = registry

    @staticmethod
    def _read_xdm_folder(folder: Path) -> dict[str, dict[str, Any]]:
        docs: dict[str, dict[str, Any]] = {}
        for path in sorted(folder.rglob("*.json")):
            if "fixtures" in path.relative_to(folder).parts:
                continue
            doc = _read_json(path)
            schema_id = doc.get("$id")
            if not isinstance(schema_id, str):
                raise SchemaLoadError(f"XDM schema {path} has no $id")
            if schema_id in docs:
                raise SchemaLoadError(f"XDM schema id {schema_id} defined twice ({path})")
            docs[schema_id] = doc
        return docs

    @property
    def capillary_event_names(self) -> list[str]:
        return sorted(self._capillary)

    def capillary(self, event_name: str) -> Validator | None:
        """The input schema for an event name, or None when we have none."""
        return self._capillary.get(event_name)

    @property
    def xdm_schema_ids(self) -> list[str]:
        return sorted(self._xdm_docs)

    def xdm_document(self, schema_id: str) -> dict[str, Any]:
        try:
            return self._xdm_docs[schema_id]
        except KeyError:
            raise SchemaLoadError(f"unknown XDM schema {schema_id!r}") from None

    def xdm(self, schema_id: str) -> Validator:
        """The compiled XDM schema with this ``$id`` (compiled on first use, then cached)."""
        found = self._xdm.get(schema_id)
        if found is not None:
            return found
        doc = self.xdm_document(schema_id)
        try:
            compiled = jsonschema_rs.validator_for(
                doc, registry=self._registry, retriever=_refuse_network
            )
        except Exception as exc:
            raise SchemaLoadError(f"cannot compile XDM schema {schema_id}: {exc}") from exc
        validator = Validator(schema_id, compiled)
        self._xdm[schema_id] = validator
        return validator
