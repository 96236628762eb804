"""``capillary-aep transform``: Capillary events in, the XDM each would produce out (offline).

Reads events from a file or stdin: one JSON event, a JSON array of events, or JSON Lines (one
Kafka message value per line). Each event goes through the worker's own steps: decode (both
envelopes, the quirks), the input schema, then for each target the mapping, XDM validation and
size check. Writes one JSON line per outcome to stdout:

* ``{"input", "event", "eventId", "target", "family", "entity"}`` (no ``--config``: the
  default targets, one per family the event feeds, validated against the bundled schemas);
* ``{"input", "event", "eventId", "target", "family", "message"}`` (``--config``: the
  configured routes, and the exact DCS message, or raw body, the worker would send);
* ``{"input", "event", "target", "error": {"stage", "kind", "path", "reason"}}``: why not.

``input`` is the 1-based position of the event (the line, for JSON Lines). Emails, phone
numbers, names, non-customerId identities and voucher codes are masked unless ``--show-pii``.
Exit 0 when every event transforms, 1 when any fails (a summary on stderr), 2 on misuse or a
configuration error.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import click
import orjson

from worker.events import DecodeError, decode
from worker.mapping import DEFAULT_FAMILIES, MAPPERS, MappingContext, MappingError, build_entity
from worker.tools.pii import mask, mask_email, mask_phone

EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_SCHEMAS = {
    "experience_event": "https://ns.adobe.com/capillary/schemas/loyalty-experience-event",
    "profile_customer": "https://ns.adobe.com/capillary/schemas/loyalty-profile",
    "profile_points": "https://ns.adobe.com/capillary/schemas/loyalty-profile",
    "profile_tier": "https://ns.adobe.com/capillary/schemas/loyalty-profile",
}


# --------------------------------------------------------------------------- input


def read_events(raw: bytes) -> Iterator[tuple[int, bytes]]:
    """(1-based position, message value) for one JSON event, a JSON array, or JSON Lines.

    Items of an array are re-serialized; a JSON Lines line is passed as it is, so a broken
    line is reported by the decoder, like a broken Kafka message.
    """
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, list):
        for position, item in enumerate(doc, 1):
            yield position, orjson.dumps(item)
        return
    if isinstance(doc, dict | str):  # one event (a string: a double-encoded one)
        yield 1, raw
        return
    for position, line in enumerate(raw.splitlines(), 1):
        if line.strip():
            yield position, line


# --------------------------------------------------------------------------- masking


def _mask_name(value: Any) -> Any:
    return f"{value[:1]}***" if isinstance(value, str) and value else value


def mask_entity(entity: dict[str, Any], ctx: MappingContext) -> dict[str, Any]:
    """An XDM entity with personal data masked; the customerId (a Capillary key) stays."""
    out = dict(entity)
    idmap = entity.get("identityMap")
    if isinstance(idmap, dict):
        out["identityMap"] = {
            ns: items if ns == ctx.customer_namespace else [
                {**item, "id": mask_phone(str(item.get("id", "")))} if isinstance(item, dict)
                else item
                for item in items
            ]
            for ns, items in idmap.items()
        }  # fmt: skip
    person = entity.get("person")
    if isinstance(person, dict) and isinstance(person.get("name"), dict):
        out["person"] = {**person, "name": {k: _mask_name(v) for k, v in person["name"].items()}}
    email = entity.get("personalEmail")
    if isinstance(email, dict) and isinstance(email.get("address"), str):
        out["personalEmail"] = {**email, "address": mask_email(email["address"])}
    phone = entity.get("mobilePhone")
    if isinstance(phone, dict) and isinstance(phone.get("number"), str):
        out["mobilePhone"] = {**phone, "number": mask_phone(phone["number"])}
    details = entity.get(ctx.tenant)
    if isinstance(details, dict) and "voucherCode" in details:
        out[ctx.tenant] = {**details, "voucherCode": "***"}
    return out


def _mask_message(message: dict[str, Any], ctx: MappingContext) -> Any:
    body = message.get("body")
    if isinstance(body, dict) and isinstance(body.get("xdmEntity"), dict):
        return {**message, "body": {**body, "xdmEntity": mask_entity(body["xdmEntity"], ctx)}}
    return mask(message)  # a raw (source-shaped) body: masked by field name and pattern


# --------------------------------------------------------------------------- transform


@dataclass(slots=True)
class Outcome:
    events: int = 0
    outputs: int = 0
    failures: int = 0


class Transformer:
    """Writes one JSON line per (event, target) outcome to ``out``."""

    def __init__(
        self, out: BinaryIO, *, config: Path | None, show_pii: bool
    ) -> None:
        from worker.schemas import SchemaStore

        self.out = out
        self.show_pii = show_pii
        self.outcome = Outcome()
        self.settings: Any = None
        if config is None:
            self.schemas = SchemaStore()
            self.ctx = MappingContext()
            return
        from worker.config import load_settings
        from worker.routing import build_routes

        self.settings = settings = load_settings(config)  # ConfigError: the caller's business
        self.schemas = SchemaStore(user_xdm=settings.xdm.schemas_dir)
        self.ctx = MappingContext.from_settings(settings.mapping)
        _, self.routes = build_routes(settings, self.schemas, MAPPERS.keys(), DEFAULT_FAMILIES)

    def transform(self, position: int, value: bytes) -> None:
        self.outcome.events += 1
        try:
            event = decode(value)
        except DecodeError as exc:
            self._error(position, None, None, "decode", exc.kind, exc.path, exc.message)
            return
        validator = self.schemas.capillary(event.name)
        if validator is None:
            self._error(position, event.name, None, "validate", "unknown-event", "",
                        "no input schema (and no mapping) for this event name")  # fmt: skip
            return
        violation = validator.first_violation(event.data)
        if violation is not None:
            self._error(position, event.name, None, "validate", violation.keyword,
                        "/data" + violation.path, str(violation))  # fmt: skip
            return
        if self.settings is None:
            self._defaults(position, event)
        else:
            self._configured(position, event)

    def _defaults(self, position: int, event: Any) -> None:
        for family in DEFAULT_FAMILIES[event.name]:
            try:
                entity = build_entity(event, family, family, self.ctx)
            except MappingError as exc:
                self._error(position, event.name, family, "transform", exc.kind, exc.path,
                            exc.message)  # fmt: skip
                continue
            violation = self.schemas.xdm(DEFAULT_SCHEMAS[family]).first_violation(entity)
            if violation is not None:
                self._error(position, event.name, family, "validate", violation.keyword,
                            violation.path, str(violation))  # fmt: skip
                continue
            shown = entity if self.show_pii else mask_entity(entity, self.ctx)
            self._write({"input": position, "event": event.name, "eventId": event.event_id,
                         "target": family, "family": family, "entity": shown})  # fmt: skip

    def _configured(self, position: int, event: Any) -> None:
        from worker.rendering import RenderError, render

        allowed = self.settings.policy.allowed_org_ids
        if allowed is not None and event.org_id not in allowed:
            self._error(position, event.name, None, "route", "org-not-allowed", "",
                        "the orgId is not in policy.allowed_org_ids (the worker filters it)")
            return
        targets = self.routes.lookup(event.org_id, event.name)
        if not targets:
            self._error(position, event.name, None, "route", "unknown-event", "",
                        "no route for this orgId and event name")  # fmt: skip
            return
        for target in targets:
            try:
                payload = render(event, target, self.ctx)
            except RenderError as exc:
                why = exc.why
                self._error(position, event.name, target.name, why.stage, why.error_kind,
                            why.path or "", why.reason)  # fmt: skip
                continue
            message: Any = orjson.Fragment(payload)
            if not self.show_pii:
                message = _mask_message(orjson.loads(payload), self.ctx)
            self._write({"input": position, "event": event.name, "eventId": event.event_id,
                         "target": target.name, "family": target.family, "message": message})

    def _error(
        self, position: int, event: str | None, target: str | None, stage: str, kind: str,
        path: str, reason: str,
    ) -> None:
        self.outcome.failures += 1
        self._write({"input": position, "event": event, "target": target, "error": {
            "stage": stage, "kind": kind, "path": path or None, "reason": reason}})  # fmt: skip

    def _write(self, doc: dict[str, Any]) -> None:
        if "error" not in doc:
            self.outcome.outputs += 1
        self.out.write(orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE))


@click.command("transform")
@click.argument("source", type=click.File("rb"), default="-")
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
    help="Worker TOML: use its [mapping], [xdm] and [[routes]] and print the exact messages.",
)  # fmt: skip
@click.option("--show-pii", is_flag=True, help="Print personal data unmasked.")
def transform_command(source: BinaryIO, config_file: Path | None, show_pii: bool) -> None:
    """Print the XDM each Capillary event in SOURCE (a file, or - for stdin) would produce.

    SOURCE holds one JSON event, a JSON array of events, or JSON Lines. One JSON line per
    message (or error) goes to stdout; exit 1 if any event fails.
    """
    from worker.config import ConfigError
    from worker.routing import RoutingError
    from worker.schemas import SchemaLoadError

    if source.isatty():
        raise click.UsageError("no input: give a file, or pipe events to stdin")
    raw = source.read()
    stdout = sys.stdout.buffer
    try:
        transformer = Transformer(stdout, config=config_file, show_pii=show_pii)
    except (ConfigError, RoutingError, SchemaLoadError) as exc:
        click.echo(f"capillary-aep transform: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    for position, value in read_events(raw):
        transformer.transform(position, value)
    stdout.flush()
    done = transformer.outcome
    click.echo(
        f"transform: {done.events} events, {done.outputs} messages, {done.failures} errors",
        err=True,
    )
    if done.events == 0:
        click.echo("capillary-aep transform: no event in the input", err=True)
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_FAILED if done.failures else 0)
