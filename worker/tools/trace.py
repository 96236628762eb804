"""``capillary-aep trace``: where did an event go? Receipts, dead letters, AEP's failed batches.

* ``trace EVENT_ID``: the event's delivery receipts (``receipts.topic``: one per target AEP
  accepted) and its dead letters (``kafka.dlq_topic``) within ``--since`` (default 7 days).
* ``trace --failed-batches``: AEP's failed Catalog batches of every route's dataset (or
  ``--dataset``) since ``--since`` and, with receipts on, the source records they contained
  (each failed row's XDM ``_id`` matched to a receipt), with a side-replay command to redrive.

Topics are read by assignment under a throwaway group (never the worker's), every partition
from the offset of ``--since`` to the end offsets taken at start; a record is decoded only
after a cheap test on its raw bytes. Emails and phone numbers are masked unless --show-pii.
Exit codes: 0 found, 1 nothing found (or the cluster or AEP refused), 2 usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click

from worker.config import Settings
from worker.events import DecodeError, decode
from worker.logs import configure
from worker.receipts import decode as decode_receipt
from worker.tools.common_options import EXIT_REFUSED, config_option, json_option, load
from worker.tools.console import Output
from worker.tools.dlq.reader import plan_scan, scan
from worker.tools.dlq.record import DlqRecord
from worker.tools.dlq.render import render
from worker.tools.groups import Cluster, ToolError
from worker.tools.pii import mask_text
from worker.tools.timespec import TimeSpecError, format_ms, parse_instant, to_ms

DEFAULT_SINCE = "P7D"
_ID_MARK = b'"_id":"'


# -- reading the topics (pure but for the cluster) -------------------------------------------------


def _read(
    cluster: Cluster, topic: str, since_ms: int,
    accept: Callable[[bytes | None, bytes | None], bool],
) -> Iterable[DlqRecord]:
    plan = plan_scan(cluster, topic, since_ms)
    return scan(cluster.consumer(), plan, accept=accept)


def _receipt_doc(rec: DlqRecord) -> dict[str, Any] | None:
    doc = decode_receipt(rec.value)
    if doc is None:
        return None
    doc["receipt"] = {"partition": rec.partition, "offset": rec.offset}
    return doc


def find_receipts(
    cluster: Cluster, topic: str, event_id: str, since_ms: int
) -> list[dict[str, Any]]:
    """Receipts of ``event_id`` (keyed by it; the value must say so too)."""
    key = event_id.encode()
    out = []
    for rec in _read(cluster, topic, since_ms, lambda k, v: k == key and v is not None):
        doc = _receipt_doc(rec)
        if doc is not None and doc["eventId"] == event_id:
            out.append(doc)
    return out


def find_dead_letters(
    cluster: Cluster, topic: str, event_id: str, since_ms: int
) -> list[DlqRecord]:
    """Dead letters whose payload is the event: its eventId in the raw bytes, confirmed by
    decoding when the payload decodes (an undecodable one counts on the bytes alone)."""
    needle = event_id.encode()
    out = []
    for rec in _read(cluster, topic, since_ms, lambda _k, v: v is not None and needle in v):
        assert rec.value is not None
        try:
            if decode(rec.value).event_id != event_id:
                continue  # the id appears elsewhere in another event (a refId, a note)
        except DecodeError:
            pass
        out.append(rec)
    return out


def raw_xdm_id(value: bytes) -> str | None:
    """A receipt's ``_id`` read off its raw bytes (no JSON parsing). Strings before it are
    JSON-escaped, so the first ``"_id":"`` is the key itself."""
    at = value.find(_ID_MARK)
    if at < 0:
        return None
    start = at + len(_ID_MARK)
    end = value.find(b'"', start)
    return value[start:end].decode(errors="replace") if end > 0 else None


def receipts_by_xdm_id(
    cluster: Cluster, topic: str, ids: set[str], since_ms: int
) -> dict[str, list[dict[str, Any]]]:
    """Receipts whose ``_id`` is one of ``ids`` (the ``_id`` is read off the raw bytes first)."""

    def accept(_k: bytes | None, v: bytes | None) -> bool:
        return v is not None and raw_xdm_id(v) in ids

    out: dict[str, list[dict[str, Any]]] = {}
    for rec in _read(cluster, topic, since_ms, accept):
        doc = _receipt_doc(rec)
        if doc is not None and doc.get("_id") in ids:
            out.setdefault(doc["_id"], []).append(doc)
    return out


# -- the command -----------------------------------------------------------------------------------


@dataclass
class _Context:
    settings: Settings
    cluster: Cluster
    out: Output
    since_ms: int
    since_text: str
    receipts_topic: str | None  # None: receipts are off and no --receipts-topic
    dlq_topic: str
    show_pii: bool
    notes: list[str] = field(default_factory=list)


@click.command("trace")
@click.argument("event_id", required=False)
@click.option("--failed-batches", is_flag=True,
              help="List AEP's failed batches (Catalog) and the source records they held.")
@click.option("--since", default=DEFAULT_SINCE, show_default=True, metavar="TIME",
              help="Look back to this time (ISO 8601, or a duration ago such as PT6H).")
@click.option("--dataset", "datasets", multiple=True,
              help="--failed-batches: this dataset id only; repeatable (default: every route's).")
@click.option("--receipts-topic", help="Receipts topic (default: receipts.topic).")
@click.option("--dlq-topic", help="Dead-letter topic (default: kafka.dlq_topic).")
@click.option("--show-pii", is_flag=True, help="Do not mask emails and phone numbers.")
@config_option
@json_option
def trace_command(
    event_id: str | None, failed_batches: bool, since: str, datasets: tuple[str, ...],
    receipts_topic: str | None, dlq_topic: str | None, show_pii: bool,
    config_file: Any, json_output: bool,
) -> None:
    """Find an event's delivery receipts and dead letters, or AEP's failed batches.

    \b
    capillary-aep trace 5f1c...e2            # receipts (one per target) and dead letters
    capillary-aep trace 5f1c...e2 --since PT6H --json
    capillary-aep trace --failed-batches --since P1D
    """
    if failed_batches == (event_id is not None):
        raise click.UsageError("give an EVENT_ID or --failed-batches (one of them)")
    if datasets and not failed_batches:
        raise click.UsageError("--dataset goes with --failed-batches")
    if event_id is not None and not event_id.strip():
        raise click.UsageError("EVENT_ID must not be empty")
    try:
        since_ms = to_ms(parse_instant(since, datetime.now(UTC)))
    except TimeSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    settings = load(config_file, "trace")
    r_topic = receipts_topic or (settings.receipts.topic if settings.receipts.enabled else None)
    ctx = _Context(
        settings, Cluster(settings.kafka.client_config()), Output(json_output), since_ms, since,
        r_topic, dlq_topic or settings.kafka.dlq_topic, show_pii,
    )
    try:
        if event_id is not None:
            found = _trace_event(ctx, event_id)
        else:
            found = _trace_failed_batches(ctx, datasets)
    except ToolError as exc:
        click.echo(f"capillary-aep trace: {exc}", err=True)
        raise SystemExit(EXIT_REFUSED) from None
    finally:
        ctx.cluster.close()
    if not found:
        raise SystemExit(EXIT_REFUSED)


def _try(ctx: _Context, what: str, fn: Callable[[], Any], default: Any) -> Any:
    """A topic that does not exist is a note, not a failure (the other may hold the answer)."""
    try:
        return fn()
    except ToolError as exc:
        if "no such topic" not in str(exc):
            raise
        ctx.notes.append(f"{what}: {exc}")
        return default


# -- trace EVENT_ID --------------------------------------------------------------------------------


def _dead_letter_row(rec: DlqRecord, show_pii: bool) -> dict[str, Any]:
    reason = rec.get("reason")
    return {
        "dlq": {"partition": rec.partition, "offset": rec.offset,
                "time": format_ms(rec.timestamp_ms)},
        "source": {"topic": rec.source_topic, "partition": rec.source_partition,
                   "offset": rec.source_offset},
        "stage": rec.stage,
        "error_class": rec.get("error-class") or None,
        "error_kind": rec.get("error-kind") or None,
        "reason": reason if show_pii else mask_text(reason),
        "event": rec.get("event-name") or None,
        "target": rec.get("target") or None,
        "aep_status": rec.get("aep-status") or None,
        "aep_batch_id": rec.get("aep-batch-id") or None,
        "record": render(rec, show_pii),
    }


def _trace_event(ctx: _Context, event_id: str) -> bool:
    receipts: list[dict[str, Any]] = []
    if ctx.receipts_topic is None:
        ctx.notes.append("receipts are off (receipts.enabled = false): only the dead-letter "
                         "topic was searched; --receipts-topic reads a receipts topic anyway")
    else:
        topic = ctx.receipts_topic
        receipts = _try(ctx, "receipts", lambda: find_receipts(
            ctx.cluster, topic, event_id, ctx.since_ms), [])
    dead = _try(ctx, "dead letters", lambda: find_dead_letters(
        ctx.cluster, ctx.dlq_topic, event_id, ctx.since_ms), [])
    dead_rows = [_dead_letter_row(rec, ctx.show_pii) for rec in dead]
    out = ctx.out
    found = bool(receipts or dead_rows)
    if out.json:
        out.emit_json({
            "eventId": event_id, "since": format_ms(ctx.since_ms), "found": found,
            "receipts_topic": ctx.receipts_topic, "dlq_topic": ctx.dlq_topic,
            "receipts": receipts, "dead_letters": dead_rows, "notes": ctx.notes,
        })
    else:
        for note in ctx.notes:
            out.note(note)
        out.line(f"event {event_id} since {format_ms(ctx.since_ms)}: {len(receipts)} receipt(s), "
                 f"{len(dead_rows)} dead letter(s)")
        for n, r in enumerate(receipts, 1):
            out.table(
                f"delivered {n}/{len(receipts)}: {r['target']} ({ctx.receipts_topic})",
                ("field", "value"),
                [("event", r["event"]), ("dataset", r["dataset"]), ("_id", r["_id"]),
                 ("source", f"{r['topic']}[{r['partition']}]@{r['offset']}"),
                 ("AEP batchId", r["batchId"]), ("AEP xactionId", r["xactionId"]),
                 ("accepted", format_ms(r["acceptedMs"])),
                 ("latency", None if r["latencyMs"] is None else f"{r['latencyMs']} ms")],
            )
        for n, d in enumerate(dead_rows, 1):
            out.table(
                f"dead-lettered {n}/{len(dead_rows)} ({ctx.dlq_topic})",
                ("field", "value"),
                [("dlq", f"[{d['dlq']['partition']}]@{d['dlq']['offset']} {d['dlq']['time']}"),
                 ("source", f"{d['source']['topic']}[{d['source']['partition']}]"
                            f"@{d['source']['offset']}"),
                 ("event", d["event"]), ("target", d["target"]), ("stage", d["stage"]),
                 ("error", f"{d['error_class']}/{d['error_kind']}"),
                 ("AEP status", d["aep_status"]), ("AEP batchId", d["aep_batch_id"]),
                 ("reason", d["reason"])],
            )
        if dead_rows:
            out.note("capillary-aep dlq show --source-topic T --source-partition P "
                     "--source-offset O shows a dead letter in full (payload masked).")
        if not found:
            out.line(f"nothing found for {event_id} since {format_ms(ctx.since_ms)} "
                     "(not yet consumed, filtered, or older: try a longer --since)")
    return found


# -- trace --failed-batches -----------------------------------------------------------------------


async def _failed(
    settings: Settings, datasets: list[str], since_ms: int
) -> list[tuple[Any, list[dict[str, Any]]]]:
    from worker.aep.platform import PlatformClient, PlatformError

    out: list[tuple[Any, list[dict[str, Any]]]] = []
    try:
        async with PlatformClient.from_settings(settings) as pc:
            for ds in datasets:
                for batch in await pc.failed_batches(ds, since_ms):
                    out.append((batch, await pc.failed_rows(batch.batch_id)))
    except PlatformError as exc:
        raise ToolError(f"AEP Platform API: {exc}") from None
    return out


def _row_error(row: dict[str, Any]) -> str:
    errors = row.get("_errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        return " ".join(str(first.get(k)) for k in ("code", "message") if first.get(k))
    return ""


def _redrive_hint(sources: list[dict[str, Any]]) -> str | None:
    """A side replay of the window holding these source records (by Kafka timestamp)."""
    stamps = [s["kafkaTs"] for s in sources if isinstance(s.get("kafkaTs"), int)]
    if not stamps:
        return None
    parts: dict[str, set[int]] = {}
    for s in sources:
        parts.setdefault(s["topic"], set()).add(s["partition"])
    topic_args = " ".join(
        f"--topic {t}:{','.join(str(p) for p in sorted(ps))}" for t, ps in sorted(parts.items())
    )
    return (
        f"capillary-aep replay {topic_args} --from {format_ms(min(stamps))} "
        f"--to {format_ms(max(stamps) + 1)} --group capillary-aep-redrive-<name> --rate 100 "
        "--execute"
    )


def _trace_failed_batches(ctx: _Context, only: tuple[str, ...]) -> bool:
    datasets = list(dict.fromkeys(only or (r.dataset_id for r in ctx.settings.routes)))
    # The token provider logs; keep stdout for the answer (errors still show, on stderr).
    configure("debug" if ctx.settings.log_level == "debug" else "error")
    batches = asyncio.run(_failed(ctx.settings, datasets, ctx.since_ms))
    ids = {str(row["_id"]) for _, rows in batches for row in rows if "_id" in row}
    receipts: dict[str, list[dict[str, Any]]] = {}
    if ctx.receipts_topic is None:
        ctx.notes.append("receipts are off (receipts.enabled = false): failed rows cannot be "
                         "traced to their source records")
    elif ids:
        topic = ctx.receipts_topic
        receipts = _try(ctx, "receipts", lambda: receipts_by_xdm_id(
            ctx.cluster, topic, ids, ctx.since_ms), {})
    docs = []
    for batch, rows in batches:
        records: list[dict[str, Any]] = []
        for row in rows:
            xdm_id = str(row.get("_id", ""))
            error = _row_error(row)
            found = receipts.get(xdm_id, [])
            records.append({
                "_id": xdm_id,
                "error": error if ctx.show_pii else mask_text(error),
                "sources": [
                    {k: r[k] for k in ("eventId", "event", "target", "topic", "partition",
                                       "offset", "kafkaTs", "batchId", "xactionId")}
                    for r in found
                ],
            })
        sources: list[dict[str, Any]] = [s for rec in records for s in rec["sources"]]
        docs.append({
            "batch_id": batch.batch_id, "dataset_id": batch.dataset_id,
            "created": format_ms(batch.created_ms), "status": batch.status,
            "errors": [e if ctx.show_pii else mask_text(e) for e in batch.errors],
            "records": records,
            "redrive": _redrive_hint(sources),
        })
    out = ctx.out
    if out.json:
        out.emit_json({"since": format_ms(ctx.since_ms), "datasets": datasets,
                       "failed_batches": docs, "notes": ctx.notes})
        return bool(docs)
    for note in ctx.notes:
        out.note(note)
    out.line(f"{len(docs)} failed batch(es) since {format_ms(ctx.since_ms)} in "
             f"{', '.join(datasets)}")
    for doc in docs:
        out.line("")
        out.line(f"batch {doc['batch_id']}  dataset {doc['dataset_id']}  created "
                 f"{doc['created']}  {len(doc['records'])} failed record(s)")
        for err in doc["errors"]:
            out.line(f"  error: {err}")
        for n, rec in enumerate(doc["records"], 1):
            fields: list[tuple[str, Any]] = [("_id", rec["_id"]), ("error", rec["error"])]
            for src in rec["sources"]:
                fields += [("eventId", src["eventId"]), ("event", src["event"]),
                         ("target", src["target"]),
                         ("source", f"{src['topic']}[{src['partition']}]@{src['offset']}")]
            if not rec["sources"]:
                fields.append(("source", "no receipt found" if ctx.receipts_topic else
                             "unknown (receipts are off)"))
            out.table(f"failed record {n}/{len(doc['records'])}", ("field", "value"), fields)
        if doc["redrive"]:
            out.note(f"to redrive after fixing the cause (same _id, so AEP deduplicates): "
                     f"{doc['redrive']}")
    return bool(docs)
