"""``capillary-aep dlq``: summary, show, export, retest and redrive over the dead-letter topic."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import click
import orjson

from worker.config import Settings
from worker.tools.common_options import EXIT_REFUSED, config_option, json_option, load
from worker.tools.console import Output
from worker.tools.dlq.filters import RecordFilter
from worker.tools.dlq.reader import plan_scan, scan
from worker.tools.dlq.record import DlqRecord
from worker.tools.dlq.redrive import JobState, Redrive, RedriveOptions, RedriveReport
from worker.tools.dlq.render import headline, render
from worker.tools.dlq.retest import Retester, Verdict
from worker.tools.dlq.summary import summarize
from worker.tools.groups import Cluster, ToolError
from worker.tools.timespec import TimeSpecError, format_ms, parse_instant, to_ms

F = TypeVar("F", bound=Callable[..., Any])
STAGES = ("decode", "validate", "transform", "deliver")


def _offsets(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    lo, sep, hi = text.partition("-")
    try:
        start = int(lo)
        end = int(hi) if sep else start
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected an offset (120) or an inclusive range (100-200)",
            param_hint="--source-offset",
        ) from None
    if end < start:
        raise click.BadParameter(f"{text!r}: range ends before it starts",
                                 param_hint="--source-offset")
    return start, end


def _instant_ms(text: str | None, flag: str, now: datetime) -> int | None:
    if text is None:
        return None
    try:
        return to_ms(parse_instant(text, now))
    except TimeSpecError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from None


def selection_options(fn: F) -> F:
    """The filters every dlq command takes, then the settings and output options."""
    options = [
        click.option("--stage", "stages", multiple=True, type=click.Choice(STAGES),
                     help="Failure stage; repeatable."),
        click.option("--reason", help="Substring of the reason or error kind (any case)."),
        click.option("--kind", "kinds", multiple=True, help="Exact error kind; repeatable."),
        click.option("--event", "events", multiple=True, help="Event name; repeatable."),
        click.option("--target", "targets", multiple=True, help="AEP target; repeatable."),
        click.option("--source-topic", help="Topic the record came from."),
        click.option("--source-partition", type=click.IntRange(min=0)),
        click.option("--source-offset", help="Source offset, or an inclusive range: 100-200."),
        click.option("--since", metavar="TIME",
                     help="Dead-lettered at or after (ISO 8601, or a duration ago: PT6H)."),
        click.option("--until", metavar="TIME", help="Dead-lettered before."),
        click.option("--dlq-topic", help="Dead-letter topic (default: kafka.dlq_topic)."),
        config_option,
        json_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@dataclass
class Selection:
    settings: Settings
    cluster: Cluster
    topic: str
    filter: RecordFilter
    out: Output


def _selection(command: str, kw: dict[str, Any]) -> Selection:
    now = datetime.now(UTC)
    since = _instant_ms(kw.pop("since"), "--since", now)
    until = _instant_ms(kw.pop("until"), "--until", now)
    if since is not None and until is not None and since >= until:
        raise click.UsageError("--since must be before --until")
    flt = RecordFilter(
        stages=frozenset(kw.pop("stages")),
        reason=kw.pop("reason"),
        kinds=frozenset(kw.pop("kinds")),
        event_names=frozenset(kw.pop("events")),
        targets=frozenset(kw.pop("targets")),
        source_topic=kw.pop("source_topic"),
        source_partition=kw.pop("source_partition"),
        source_offsets=_offsets(kw.pop("source_offset")),
        since_ms=since,
        until_ms=until,
    )
    settings = load(kw.pop("config_file"), f"dlq {command}")
    topic = kw.pop("dlq_topic") or settings.kafka.dlq_topic
    out = Output(kw.pop("json_output"))
    return Selection(settings, Cluster(settings.kafka.client_config()), topic, flt, out)


@contextmanager
def _refusals(command: str, sel: Selection) -> Iterator[None]:
    """A ToolError ends the command with its message and exit 1; the cluster is closed."""
    try:
        yield
    except ToolError as exc:
        click.echo(f"capillary-aep dlq {command}: {exc}", err=True)
        raise SystemExit(EXIT_REFUSED) from None
    finally:
        sel.cluster.close()


def _records(sel: Selection, description: str) -> Iterator[DlqRecord]:
    """Matching records of the selection's time window, with a progress bar."""
    plan = plan_scan(sel.cluster, sel.topic, sel.filter.since_ms, sel.filter.until_ms)
    with sel.out.progress(description, plan.total) as progress:
        task = progress.task_ids[0]
        for rec in scan(sel.cluster.consumer(), plan,
                        on_progress=lambda n: progress.advance(task, n)):
            if sel.filter.matches(rec):
                yield rec


@click.group("dlq")
def dlq_group() -> None:
    """Inspect, export, retest and redrive the dead-letter topic.

    Every command reads the DLQ by assignment under its own throwaway group (redrive: under
    its job's progress group), never the worker's. Emails and phone numbers are masked unless
    --show-pii.
    """


# -- summary -------------------------------------------------------------------------------------


@dlq_group.command("summary")
@selection_options
def summary_command(**kw: Any) -> None:
    """Counts by stage, error class and kind, AEP status, target, event and source topic."""
    sel = _selection("summary", kw)
    with _refusals("summary", sel):
        summary = summarize(_records(sel, "reading the DLQ"))
        out = sel.out
        if out.json:
            out.emit_json({"topic": sel.topic, "selection": sel.filter.describe(),
                           **summary.as_json()})
            return
        out.line(f"{sel.topic}: {sel.filter.describe()}")
        out.table(
            "dead letters", ("records", "distinct", "repeats", "first", "last"),
            [(summary.records, summary.unique, summary.repeats, format_ms(summary.first_ms),
              format_ms(summary.last_ms))],
            numeric=("records", "distinct", "repeats"),
        )
        if summary.repeats:
            out.note(f"{summary.repeats} record(s) were dead-lettered again at the same stage "
                     "(a replay or a failed redrive): counted once below.")
        for name, counts in summary.counts.items():
            if set(counts) - {"-"}:  # a dimension no record has (e.g. AEP status) is left out
                out.table(f"by {name}", (name, "records"), counts.most_common(),
                          numeric=("records",))


# -- show and export -------------------------------------------------------------------------------


@dlq_group.command("show")
@selection_options
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--show-pii", is_flag=True, help="Do not mask emails and phone numbers.")
def show_command(limit: int, show_pii: bool, **kw: Any) -> None:
    """Records with their headers and decoded payload."""
    sel = _selection("show", kw)
    with _refusals("show", sel):
        out = sel.out
        shown: list[dict[str, Any]] = []
        for rec in _records(sel, "reading the DLQ"):
            doc = render(rec, show_pii)
            shown.append(doc)
            if not out.json:
                out.out.rule(headline(rec), align="left")
                out.out.print_json(data={k: doc[k] for k in (
                    "headers", "original_headers", "key", "payload")})
            if len(shown) >= limit:
                break
        if out.json:
            out.emit_json(shown)
        elif not shown:
            out.note(f"no record matches ({sel.filter.describe()})")
        if not show_pii:
            out.note("Emails and phone numbers are masked; --show-pii shows them.")


@dlq_group.command("export")
@selection_options
@click.option("--output", "-o", "output", type=click.Path(path_type=Path, dir_okay=False,
                                                           allow_dash=True),
              default="-", show_default=True, help="JSONL file, or - for stdout.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many records.")
@click.option("--show-pii", is_flag=True,
              help="Keep emails and phone numbers, and add each raw value as base64.")
def export_command(output: Path, limit: int | None, show_pii: bool, **kw: Any) -> None:
    """JSON Lines, one dead letter per line (same filters as show)."""
    kw.pop("json_output", None)
    kw["json_output"] = True  # progress and notes to stderr; the lines are the output
    sel = _selection("export", kw)
    with _refusals("export", sel):
        sink: BinaryIO
        to_stdout = str(output) == "-"
        sink = sys.stdout.buffer if to_stdout else output.open("wb")
        n = 0
        try:
            for rec in _records(sel, "exporting"):
                sink.write(orjson.dumps(render(rec, show_pii)) + b"\n")
                n += 1
                if limit is not None and n >= limit:
                    break
        finally:
            sink.flush()
            if not to_stdout:
                sink.close()
        where = "stdout" if to_stdout else str(output)
        masked = "" if show_pii else " (PII masked; --show-pii keeps it)"
        sel.out.note(f"{n} record(s) exported to {where}{masked}")


# -- retest ------------------------------------------------------------------------------------


def _verdict_text(v: Verdict) -> str:
    if v.outcome == "pass":
        return "PASS -> " + ", ".join(v.targets) + (f" ({v.note})" if v.note else "")
    if v.outcome == "filtered":
        return f"FILTERED: {v.reason}"
    where = f" [{v.target}]" if v.target else ""
    return f"FAIL {v.stage}/{v.kind}{where}: {v.reason}"


@dlq_group.command("retest")
@selection_options
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="List at most this many records (the totals cover all of them).")
def retest_command(limit: int, **kw: Any) -> None:
    """Run today's decode/validate/transform on dead letters: which would pass now, and why
    the others still fail."""
    sel = _selection("retest", kw)
    with _refusals("retest", sel):
        retester = Retester(sel.settings)
        rows: list[tuple[DlqRecord, Verdict]] = []
        outcomes: Counter[str] = Counter()
        failing: Counter[str] = Counter()
        for rec in _records(sel, "retesting"):
            verdict = retester.check(rec)
            outcomes[verdict.outcome] += 1
            if verdict.outcome == "fail":
                failing[f"{verdict.stage}/{verdict.kind}"] += 1
            if len(rows) < limit:  # memory stays bounded on a large DLQ
                rows.append((rec, verdict))
        total = sum(outcomes.values())
        out = sel.out
        if out.json:
            out.emit_json({
                "selection": sel.filter.describe(),
                "records": [
                    {"dlq": {"partition": r.partition, "offset": r.offset},
                     "source": {"topic": r.source_topic, "partition": r.source_partition,
                                "offset": r.source_offset},
                     "event": r.get("event-name"),
                     "was": {"stage": r.stage, "kind": r.get("error-kind"),
                             "target": r.get("target")},
                     "now": v.as_json()}
                    for r, v in rows
                ],
                "listed": len(rows),
                "totals": {"records": total, "pass": outcomes["pass"],
                           "filtered": outcomes["filtered"], "fail": outcomes["fail"],
                           "still_failing_by": dict(failing)},
            })
            return
        listed = f" (the first {len(rows)} listed)" if len(rows) < total else ""
        out.table(
            f"retest of {total} dead letter(s){listed}: {sel.filter.describe()}",
            ("dlq", "source", "event", "was", "now"),
            ((f"{r.partition}@{r.offset}",
              f"{r.source_topic}[{r.get('source-partition')}]@{r.get('source-offset')}",
              r.get("event-name") or "-", f"{r.stage}/{r.get('error-kind')}", _verdict_text(v))
             for r, v in rows),
        )
        out.line(f"would pass now: {outcomes['pass']}, filtered: {outcomes['filtered']}, "
                 f"still failing: {outcomes['fail']}")
        for why, n in failing.most_common():
            out.line(f"  still failing {why}: {n}")


# -- redrive -------------------------------------------------------------------------------------


@dlq_group.command("redrive")
@selection_options
@click.option("--job", required=True,
              help="Name of this redrive job: its progress and exactly-once state.")
@click.option("--to-topic", help="Publish here instead of each record's source topic.")
@click.option("--max-redrives", type=click.IntRange(min=1), default=3, show_default=True,
              help="Refuse records already redriven this many times (the loop guard).")
@click.option("--chunk-size", type=click.IntRange(1, 100_000), default=100, show_default=True,
              help="Records per transaction.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True),
              help="At most this many records per second.")
@click.option("--only-passing", is_flag=True,
              help="Only records that pass the retest now (the rest stay in the DLQ).")
@click.option("--execute", is_flag=True, help="Publish (without it: a dry run).")
def redrive_command(
    job: str, to_topic: str | None, max_redrives: int, chunk_size: int, rate: float | None,
    only_passing: bool, execute: bool, **kw: Any,
) -> None:
    """Re-publish selected dead letters to their source topic (or --to-topic), exactly once
    per --job, resumable: run the same command again after an interruption."""
    if not job.strip() or any(c.isspace() for c in job):
        raise click.BadParameter("a job name without spaces", param_hint="--job")
    sel = _selection("redrive", kw)
    if rate is not None:
        from worker.tools.side_replay import check_side_rate

        check_side_rate(sel.settings, rate, "a redrive", requests=False)
    opts = RedriveOptions(
        job=job, dlq_topic=sel.topic, filter=sel.filter, to_topic=to_topic,
        max_redrives=max_redrives, chunk_size=chunk_size, rate=rate, only_passing=only_passing,
    )
    with _refusals("redrive", sel):
        if to_topic is not None:
            sel.cluster.partitions([to_topic])  # a typo fails here, before anything moves
        retester = Retester(sel.settings) if only_passing else None
        redrive = Redrive(sel.cluster, sel.settings.kafka, opts, retester)
        out = sel.out
        with out.progress("redrive" if execute else "redrive (dry run)", None) as progress:
            task = progress.task_ids[0]

            def started(state: JobState, total: int) -> None:
                progress.update(task, total=total)
                if state.resumed and total:
                    out.note(f"job {job!r}: resuming ({total} DLQ offsets left)")

            report = redrive.run(
                execute, on_start=started, on_progress=lambda n: progress.advance(task, n),
                examples=10,
            )
        _show_redrive(out, report, opts)


def _show_redrive(out: Output, report: RedriveReport, opts: RedriveOptions) -> None:
    if out.json:
        out.emit_json({**report.as_json(), "selection": opts.filter.describe(),
                       "progress_group": opts.progress_group})
        return
    verb = "redriven" if report.execute else "would redrive"
    if report.complete and not report.scanned and report.resumed:
        out.line(f"job {report.job!r} is complete: nothing left to redrive")
        return
    rows: list[tuple[str, str, int]] = [(verb, t, n) for t, n in report.redriven.most_common()]
    rows += [("refused", why, n) for why, n in report.refused.most_common()]
    rows += [("still failing (kept)", why, n) for why, n in report.still_failing.most_common()]
    out.table(f"redrive job {report.job!r}: {opts.filter.describe()}",
              ("outcome", "topic / reason", "records"), rows, numeric=("records",))
    out.line(f"scanned {report.scanned} DLQ records, {report.skipped} not selected"
             + (f", {report.chunks} transaction(s) committed" if report.execute else ""))
    if report.examples and not report.execute:
        out.table("first selected records", ("dlq", "source", "event", "decision"), (
            (f"{r.partition}@{r.offset}",
             f"{r.source_topic}[{r.get('source-partition')}]@{r.get('source-offset')}",
             r.get("event-name") or "-",
             d.action + (f" -> {d.topic}" if d.topic else f": {d.reason}"))
            for r, d in report.examples
        ))
    if not report.execute:
        out.note("Dry run: nothing published. Add --execute to redrive.")
    if report.refused:
        out.note("Refused records stay in the DLQ; the job moves past them.")
