"""Data Prep for raw dataflows: the mapping of Adobe's Capillary source, and upsert headers.

A raw message arrives on the single endpoint with ``x-adobe-flow-id`` naming a raw flow. It is
either the source-shaped JSON itself (an insert) or Data Prep's streaming-upsert envelope
``{"header": {flowId, imsOrgId, datasetId, operations: {data: create|merge|delete}},
"body": {...}}``. The Capillary source's mapping is the identity on the XDM-like paths its
payloads use, except ``productLineItems`` → ``productListItems`` (the source's name for the
line items). The result is then checked like any XDM entity of the flow's dataset.

Written independently of the worker's ``worker.mapping.raw`` on purpose: the sandbox checks
the worker, not itself.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["OPERATIONS", "SOURCE_MAPPING", "RawMessage", "map_source", "parse_raw"]

SOURCE_MAPPING: Final = {"productLineItems": "productListItems"}
OPERATIONS: Final = ("create", "merge", "delete")


class RawMessage:
    __slots__ = ("body", "header", "operation")

    def __init__(self, body: dict[str, Any], operation: str, header: dict[str, Any] | None):
        self.body = body
        self.operation = operation
        self.header = header


def parse_raw(doc: Any) -> RawMessage | str:
    """The raw message, or why it is not one (a value-free message)."""
    if not isinstance(doc, dict):
        return "raw message is not a JSON object"
    header = doc.get("header")
    if isinstance(header, dict) and "body" in doc:
        body = doc["body"]
        if not isinstance(body, dict):
            return "upsert message: body is not an object"
        ops = header.get("operations")
        operation = ops.get("data", "create") if isinstance(ops, dict) else "create"
        if operation not in OPERATIONS:
            return "upsert message: header.operations.data must be create, merge or delete"
        return RawMessage(body, operation, header)
    return RawMessage(doc, "create", None)


def map_source(body: dict[str, Any]) -> dict[str, Any]:
    """The Capillary source's Data Prep mapping: source-shaped JSON -> XDM entity."""
    return {SOURCE_MAPPING.get(key, key): value for key, value in body.items()}
