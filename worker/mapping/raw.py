"""Raw-format payloads: the source-shaped JSON Adobe's Capillary source sends (SPEC 5).

A ``raw`` route does not send XDM: it sends the JSON that the Capillary source connector
sends to its streaming inlet, and a Data Prep mapping on the dataflow (``x-adobe-flow-id``)
turns it into XDM. The two shapes of Adobe's source documentation:

* profile: ``{identityMap, loyalty{tier, points, lifetimePoints, expiredPoints,
  pointsRedeemed, program, status}}``;
* transaction event: ``{_id, timestamp, identityMap, commerce{commerceScope{storeCode},
  order{priceTotal}}, productLineItems[]}``.

The payload is derived from the route's mapped and validated XDM entity, so raw and XDM routes
apply the same identity, time and value rules and the same event always gives the same bytes.
The one difference from the entity: ``productListItems`` travels as ``productLineItems`` (the
source's name; its Data Prep mapping maps it back). Fields beyond the source's samples
(``_id``, ``eventType``, the ``_<tenant>`` block with the tier number, ``extSourceSystemAudit``,
``person``) ride along: Data Prep maps what its mapping names and ignores the rest.

With ``upsert`` (profile families only), the body goes inside the streaming-upsert envelope
``{"header": {flowId, imsOrgId, datasetId, operations: {data: "merge"}}, "body": {...}}``
(Data Prep "partial row updates"): Profile merges the attributes instead of replacing the
fragment; the data lake does not consume such rows.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

__all__ = ["RAW_RENAMES", "raw_body", "upsert_prefix"]

# XDM path (top level) -> the Capillary source's name for it.
RAW_RENAMES: Final = {"productListItems": "productLineItems"}


def raw_body(entity: dict[str, Any]) -> dict[str, Any]:
    """The source-shaped payload for a mapped XDM entity (a shallow, renamed copy)."""
    out: dict[str, Any] = {}
    for key, value in entity.items():
        out[RAW_RENAMES.get(key, key)] = value
    return out


def upsert_prefix(flow_id: str, ims_org_id: str, dataset_id: str) -> tuple[bytes, bytes]:
    """(prefix, suffix) around a serialized body for a Data Prep streaming upsert (merge)."""
    header = {
        "flowId": flow_id,
        "imsOrgId": ims_org_id,
        "datasetId": dataset_id,
        "operations": {"data": "merge"},
    }
    return b'{"header":' + orjson.dumps(header) + b',"body":', b"}"
