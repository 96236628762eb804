"""A side replay: the worker, under its own new group, over one time window, at a set rate.

The window's start offsets (first record at or after ``--from``) are committed for the new
group, with the replay mark unless ``--include-profile``; then the real worker runs with
per-partition end offsets (first record at or after ``--to``) and a rate limit, and exits when
every partition reached its end and everything consumed is delivered or dead-lettered. The
production group is never touched. ExperienceEvent ``_id``s are deterministic, so what the
Profile store already holds is dropped there as a duplicate.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import click

from worker import replay_mark
from worker.config import Settings
from worker.logs import configure
from worker.metrics import Metrics
from worker.offsets import TP
from worker.rate_limit import RateLimit
from worker.run_bounds import RunBounds
from worker.runner import RunResult, run_worker
from worker.tools.common_options import EXIT_REFUSED
from worker.tools.console import Output
from worker.tools.groups import Cluster, ToolError
from worker.tools.replay_scope import PROFILE_INCLUDED, PROFILE_SKIPPED, select_partitions
from worker.tools.timespec import TimeSpecError, format_ms, parse_instant, to_ms


def _instant(text: str, flag: str, now: datetime) -> datetime:
    try:
        return parse_instant(text, now)
    except TimeSpecError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from None


def _check_args(
    settings: Settings, group: str | None, window_from: str | None, window_to: str | None,
    rate: float | None,
) -> tuple[str, datetime, datetime]:
    if window_from is None or window_to is None:
        raise click.UsageError("a side replay needs both --from and --to")
    if group is None:
        raise click.UsageError("--group: a side replay runs under its own, new consumer group")
    if group == settings.kafka.group_id:
        raise click.UsageError(
            f"--group {group} is the worker's own group; a side replay needs a new one "
            "(to move the worker's group, use a reset mode such as --to-datetime)"
        )
    if rate is None:
        raise click.UsageError("--rate: a side replay needs an explicit rate (records per second)")
    check_side_rate(settings, rate, "a side replay")
    now = datetime.now(UTC)
    t1, t2 = _instant(window_from, "--from", now), _instant(window_to, "--to", now)
    if t1 >= t2:
        raise click.UsageError("--from must be before --to")
    return group, t1, t2


def check_side_rate(
    settings: Settings, rate: float, what: str, *, requests: bool = True
) -> None:
    """Side jobs run within the part of the organisation's rate budget reserved for them
    (``requests``: it sends to AEP itself, so it needs reserved requests too)."""
    b = settings.rate_budget
    if rate > b.reserved_messages_per_s:
        raise click.UsageError(
            f"--rate {rate:g} is above rate_budget.reserved_messages_per_s "
            f"({b.reserved_messages_per_s:g}): {what} runs within the budget reserved for side "
            "jobs (the replicas share the rest); lower --rate or raise that setting"
        )
    if requests and b.reserved_requests_per_s <= 0:
        raise click.UsageError(
            f"rate_budget.reserved_requests_per_s is 0: {what} has no request budget; "
            "reserve some requests per second for side jobs"
        )


def _window(
    cluster: Cluster, all_tps: list[TP], chosen: list[TP], t1: int, t2: int
) -> dict[TP, tuple[int, int]]:
    """(start, end) per partition; partitions not chosen get an empty window at their end."""
    marks = cluster.watermarks(all_tps)
    starts = cluster.offsets_for_time(chosen, t1)
    ends = cluster.offsets_for_time(chosen, t2)
    window: dict[TP, tuple[int, int]] = {}
    for tp in all_tps:
        low, high = marks[tp]
        if tp not in starts:
            window[tp] = (high, high)
            continue
        start = starts[tp] if starts[tp] >= 0 else high
        end = ends[tp] if ends[tp] >= 0 else high
        start = min(max(start, low), high)
        window[tp] = (start, min(max(end, start), high))
    return window


def side_replay(
    settings: Settings, cluster: Cluster, out: Output, *, specs: dict[str, set[int] | None],
    group: str | None, window_from: str | None, window_to: str | None, rate: float | None,
    resume: bool, include_profile: bool, execute: bool,
) -> int:
    group, t1, t2 = _check_args(settings, group, window_from, window_to, rate)
    assert rate is not None
    topics = list(specs)
    all_tps = cluster.partitions(topics)
    chosen = select_partitions(cluster, specs)
    cluster.ensure_inactive(group)
    committed = cluster.committed(group, all_tps)
    has_offsets = any(o is not None for o, _ in committed.values())
    if has_offsets and not resume:
        raise ToolError(
            f"group {group!r} already has committed offsets (an earlier side replay?): pass "
            "--resume to continue it with the same window, or choose a new --group"
        )
    if resume and not has_offsets:
        raise ToolError(f"nothing to resume: group {group!r} has no committed offsets")
    window = _window(cluster, all_tps, chosen, to_ms(t1), to_ms(t2))
    position: dict[TP, int] = {}
    for tp, (s, e) in window.items():
        done = committed[tp][0]
        position[tp] = min(max(s if done is None else done, s), e)
    total = sum(e - position[tp] for tp, (_, e) in window.items())
    plan = _window_doc(group, t1, t2, window, position, rate)
    if not out.json:
        _show_window(out, plan, resume)
    if total and t2 > datetime.now(UTC):
        out.note("The window ends in the future: the replay stops at each partition's current end.")
    if total:
        out.note(PROFILE_INCLUDED if include_profile else PROFILE_SKIPPED)
    if not execute:
        if out.json:
            out.emit_json({**plan, "execute": False})
        out.note("Dry run: nothing sent, no offsets written. Add --execute to run the replay.")
        return 0
    if total == 0:
        if out.json:
            out.emit_json({**plan, "execute": True, "reached_end": True})
        out.note("Nothing to replay in this window.")
        return 0
    if not resume:
        cluster.commit(group, {
            tp: (s, "" if include_profile or e <= s else replay_mark.attach("", e))
            for tp, (s, e) in window.items()
        })
    tool_settings = settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={
            "group_id": group, "topics": topics, "topic_pattern": None,
            "group_instance_id": None,
        }),
        "health": settings.health.model_copy(update={"enabled": False}),
    })
    # Quiet logs: the progress bar and the final table tell the story; errors still show.
    configure("debug" if settings.log_level == "debug" else "error")
    metrics = Metrics()
    result, interrupted = asyncio.run(_run(tool_settings, window, rate, metrics, out, total))
    short: dict[TP, tuple[int | None, int]] = {}
    if interrupted or result.exit_code != 0:
        # (A finished run may commit a little short of the end: the end can be a
        # transaction marker, which the worker's commits never name.)
        short = {
            tp: (o, window[tp][1]) for tp, (o, _) in cluster.committed(group, all_tps).items()
            if window[tp][1] > window[tp][0] and (o is None or o < window[tp][1])
        }
    _show_result(out, plan, result, short)
    if result.exit_code != 0:
        return result.exit_code
    if short:
        out.note(f"Stopped before the window's end: run the same command with --resume to finish "
                 f"(group {group!r}).")
        return EXIT_REFUSED
    return 0


async def _run(
    settings: Settings, window: dict[TP, tuple[int, int]], rate: float, metrics: Metrics,
    out: Output, total: int,
) -> tuple[RunResult, bool]:
    """The bounded worker's result, and whether a signal stopped it before the end."""
    bounds = RunBounds({tp: e for tp, (_, e) in window.items()})
    stop = asyncio.Event()
    with out.progress("side replay", total) as progress:
        task = progress.task_ids[0]

        async def watch() -> None:
            while True:
                progress.update(task, completed=min(metrics.total(metrics.consumed), total))
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch())
        try:
            result = await run_worker(
                settings, bounds=bounds, rate_limit=RateLimit(rate), metrics=metrics, stop=stop
            )
            return result, stop.is_set()
        finally:
            watcher.cancel()
            progress.update(task, completed=min(metrics.total(metrics.consumed), total))


def _window_doc(
    group: str, t1: datetime, t2: datetime, window: dict[TP, tuple[int, int]],
    position: dict[TP, int], rate: float,
) -> dict[str, Any]:
    return {
        "group": group,
        "from": format_ms(to_ms(t1)),
        "to": format_ms(to_ms(t2)),
        "rate": rate,
        "partitions": [
            {"topic": t, "partition": p, "start": s, "end": e, "from": position[(t, p)],
             "records": e - position[(t, p)]}
            for (t, p), (s, e) in sorted(window.items())
        ],
        "records": sum(e - position[tp] for tp, (_, e) in window.items()),
    }


def _show_window(out: Output, plan: dict[str, Any], resume: bool) -> None:
    columns = ["topic", "partition", "window start", "window end"]
    columns += ["resume from", "records"] if resume else ["records"]
    rows = [
        [r["topic"], r["partition"], r["start"], r["end"]]
        + ([r["from"], r["records"]] if resume else [r["records"]])
        for r in plan["partitions"]
    ]
    out.table(
        f"side replay {plan['from']} .. {plan['to']} under group {plan['group']!r} "
        f"at {plan['rate']:g} records/s",
        columns, rows, numeric=columns[1:],
    )
    total, rate = plan["records"], plan["rate"]
    out.line(f"total: {total} records, at least {total / rate:.0f} s at {rate:g}/s")


def _show_result(
    out: Output, plan: dict[str, Any], result: RunResult, short: dict[TP, tuple[int | None, int]]
) -> None:
    m = result.metrics
    doc: dict[str, Any] = {
        **plan,
        "execute": True,
        "exit_code": result.exit_code,
        "error": result.error,
        "seconds": round(result.seconds, 2),
        "delivered_by_target": m.by_label(m.delivered, "target"),
        "dead_lettered_by_kind": m.by_label(m.dead_lettered, "error_kind"),
        "filtered_by_reason": m.by_label(m.filtered, "reason"),
        "reached_end": not short,
        "short_of_end": {
            f"{t}[{p}]": {"committed": o, "end": e} for (t, p), (o, e) in short.items()
        },
    }
    if out.json:
        out.emit_json(doc)
        return
    rows = [(f"delivered to {k}", int(v)) for k, v in sorted(doc["delivered_by_target"].items())]
    rows += [
        (f"dead-lettered ({k})", int(v)) for k, v in sorted(doc["dead_lettered_by_kind"].items())
    ]
    rows += [(f"filtered ({k})", int(v)) for k, v in sorted(doc["filtered_by_reason"].items())]
    if not rows:
        rows = [("nothing consumed (the rest of the window held only transaction markers)", 0)]
    out.table(f"side replay under {plan['group']!r}: {result.seconds:.1f} s",
              ("outcome", "records"), rows, numeric=("records",))
    if result.error:
        out.note(f"worker stopped: {result.error}")
