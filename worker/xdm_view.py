"""XDM schemas as the Schema Registry serves them (``xed-full``) and a comparable view of them.

``resolve(schema_id, lookup)`` inlines every ``$ref`` and merges every ``allOf`` into one
object schema with ``properties`` and ``required``, the shape of a Schema Registry answer for
``Accept: application/vnd.adobe.xed-full+json; version=1``. The sandbox serves its schemas this
way, and ``capillary-aep preflight`` resolves the local files the same way before comparing.

``fields(resolved)`` flattens a resolved schema to ``{path: Field}``: a path per property
(``/loyalty/pointsGained[]/value``; a map's values are ``/identityMap/*``), its type (with the
``format`` for strings, e.g. ``string(date-time)``) and whether it is required where it sits.

``diff(local, registry)`` names the paths that differ, never values. What counts as drift:
a local field the registry does not have (AEP would reject records carrying it), a type or
required flag that differs, and a field the registry *requires* that the local schema lacks.
Optional registry-only fields are not drift: the registry's classes carry hundreds of standard
fields the worker never sends (``extra`` counts them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Lookup = Callable[[str], Mapping[str, Any]]

# Keys whose values are schemas (merged/recursed); everything else is an annotation.
_MAX_DEPTH = 64


class ResolveError(ValueError):
    """A ``$ref`` names a schema the lookup does not have, or refers back to itself."""


def _merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    """Merge one resolved object schema into another (``allOf`` semantics for XDM)."""
    for key, value in other.items():
        if key == "properties" and isinstance(value, Mapping):
            props = into.setdefault("properties", {})
            for name, sub in value.items():
                if name in props and isinstance(props[name], dict) and isinstance(sub, Mapping):
                    _merge(props[name], sub)
                else:
                    props[name] = dict(sub) if isinstance(sub, Mapping) else sub
        elif key == "required" and isinstance(value, list):
            have = into.setdefault("required", [])
            have.extend(v for v in value if v not in have)
        elif key not in into:
            into[key] = value


def resolve(schema_id: str, lookup: Lookup) -> dict[str, Any]:
    """The schema with this ``$id``, every ``$ref`` inlined and every ``allOf`` merged."""
    return _expand(lookup(schema_id), lookup, (schema_id,), 0)


def resolve_document(doc: Mapping[str, Any], lookup: Lookup) -> dict[str, Any]:
    """Like ``resolve`` for a document in hand (its own ``$id``, if any, guards cycles)."""
    own = doc.get("$id")
    return _expand(doc, lookup, (own,) if isinstance(own, str) else (), 0)


def _expand(
    node: Mapping[str, Any], lookup: Lookup, stack: tuple[str, ...], depth: int
) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        raise ResolveError("schema nesting too deep")
    out: dict[str, Any] = {}
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = ref.split("#", 1)[0]
        if target in stack:
            raise ResolveError(f"$ref cycle through {target}")
        try:
            doc = lookup(target)
        except KeyError:
            raise ResolveError(f"$ref to an unknown schema {target}") from None
        _merge(out, _expand(doc, lookup, (*stack, target), depth + 1))
    for part in node.get("allOf") or ():
        if isinstance(part, Mapping):
            _merge(out, _expand(part, lookup, stack, depth + 1))
    own: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("$ref", "allOf", "definitions"):
            continue
        if key == "properties" and isinstance(value, Mapping):
            own[key] = {
                name: _expand(sub, lookup, stack, depth + 1) if isinstance(sub, Mapping) else sub
                for name, sub in value.items()
            }
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            own[key] = _expand(value, lookup, stack, depth + 1)
        else:
            own[key] = value
    # The node's own keys come first (its $id, title, meta:*), then what it extends.
    merged: dict[str, Any] = {}
    _merge(merged, own)
    _merge(merged, out)
    if "properties" in merged and "type" not in merged:
        merged["type"] = "object"
    return merged


@dataclass(frozen=True, slots=True)
class Field:
    type: str
    required: bool


def _type_of(node: Mapping[str, Any]) -> str:
    raw = node.get("type")
    if isinstance(raw, list):
        base = "|".join(sorted(str(t) for t in raw))
    elif isinstance(raw, str):
        base = raw
    elif "properties" in node:
        base = "object"
    else:
        base = "any"
    fmt = node.get("format")
    if base == "string" and isinstance(fmt, str):
        return f"string({fmt})"
    return base


def fields(resolved: Mapping[str, Any]) -> dict[str, Field]:
    """Every property path of a resolved schema with its type and required flag."""
    out: dict[str, Field] = {}
    _walk(resolved, "", out, 0)
    return out


def _walk(node: Mapping[str, Any], prefix: str, out: dict[str, Field], depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    required = set(node.get("required") or ())
    props = node.get("properties")
    if isinstance(props, Mapping):
        for name, sub in props.items():
            if not isinstance(sub, Mapping):
                continue
            path = f"{prefix}/{name}"
            out[path] = Field(_type_of(sub), name in required)
            _descend(sub, path, out, depth)
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping):
        path = f"{prefix}/*"
        out[path] = Field(_type_of(extra), False)
        _descend(extra, path, out, depth)


def _descend(node: Mapping[str, Any], path: str, out: dict[str, Field], depth: int) -> None:
    _walk(node, path, out, depth + 1)
    items = node.get("items")
    if isinstance(items, Mapping):
        item_path = f"{path}[]"
        if _type_of(items) not in ("object", "any"):
            out[item_path] = Field(_type_of(items), False)
        _walk(items, item_path, out, depth + 1)


@dataclass(slots=True)
class SchemaDiff:
    """Paths (never values) where a local schema and the registry's disagree."""

    only_local: list[str] = field(default_factory=list)
    required_only_in_registry: list[str] = field(default_factory=list)
    type_differs: list[str] = field(default_factory=list)  # "path: local != registry"
    required_differs: list[str] = field(default_factory=list)
    extra: int = 0  # optional registry-only fields (not drift)

    @property
    def drift(self) -> bool:
        return bool(
            self.only_local
            or self.required_only_in_registry
            or self.type_differs
            or self.required_differs
        )

    def problems(self) -> list[str]:
        """One line per differing path, for tables and log lines."""
        return (
            [f"{p}: not in the registry" for p in self.only_local]
            + [f"{p}: required by the registry, not in the local schema"
               for p in self.required_only_in_registry]
            + self.type_differs
            + self.required_differs
        )

    def paths(self) -> list[str]:
        return sorted(
            {line.split(":", 1)[0] for line in self.problems()}
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "only_local": self.only_local,
            "required_only_in_registry": self.required_only_in_registry,
            "type_differs": self.type_differs,
            "required_differs": self.required_differs,
            "registry_only_optional": self.extra,
        }


def diff(local: Mapping[str, Field], registry: Mapping[str, Field]) -> SchemaDiff:
    result = SchemaDiff()
    for path in sorted(set(local) | set(registry)):
        mine, theirs = local.get(path), registry.get(path)
        if theirs is None:
            if not _under(path, result.only_local):  # a missing object's fields: once
                result.only_local.append(path)
        elif mine is None:
            if theirs.required and _parent_known(path, local):
                result.required_only_in_registry.append(path)
            else:
                result.extra += 1
        else:
            if mine.type != theirs.type:
                result.type_differs.append(f"{path}: type {mine.type} != {theirs.type}")
            if mine.required != theirs.required:
                result.required_differs.append(
                    f"{path}: required {'yes' if mine.required else 'no'} != "
                    f"{'yes' if theirs.required else 'no'}"
                )
    return result


def _under(path: str, reported: list[str]) -> bool:
    return any(path.startswith((parent + "/", parent + "[]")) for parent in reported)


def _parent_known(path: str, local: Mapping[str, Field]) -> bool:
    """A registry-required field matters when the worker sends its parent (or it is top-level):
    a required field inside an object the worker never sends is not a problem."""
    parent = path.rsplit("/", 1)[0].removesuffix("[]")
    return parent == "" or parent in local
