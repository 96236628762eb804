"""``capillary-aep replay``: move a consumer group's offsets back (or forward), or replay a window.

Two ways to replay:

* **Reset** (``--to-earliest``, ``--to-latest``, ``--to-datetime``, ``--by-duration``,
  ``--to-offset``, ``--shift-by``, as ``kafka-consumer-groups --reset-offsets``): the group's
  committed offsets move; its workers, once started again, consume from there. Only while the
  group has no members. Dry run by default.
* **Side replay** (``--from T1 --to T2 --group NEW --rate R``): a bounded worker under its own
  group consumes just that window, at that rate, and exits; production keeps running.

Replayed profile updates may be older than what AEP holds now, so by default the replayed range
goes to ExperienceEvent targets only (a mark in the committed offsets tells every worker, see
``worker/replay_mark.py``); ``--include-profile`` sends profile updates too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from worker import replay_mark
from worker.tools.common_options import EXIT_REFUSED, config_option, json_option, load
from worker.tools.console import Output
from worker.tools.groups import Cluster, ToolError
from worker.tools.offset_reset import (
    PartitionState,
    PlanError,
    PlannedReset,
    ResetMode,
    plan_reset,
)
from worker.tools.replay_scope import (
    PROFILE_INCLUDED,
    PROFILE_SKIPPED,
    parse_topic_specs,
    select_partitions,
)
from worker.tools.timespec import TimeSpecError, format_ms, parse_datetime, parse_duration, to_ms

RESET_FLAGS = ("to_earliest", "to_latest", "to_datetime", "by_duration", "to_offset", "shift_by")
_FLAG_NAMES = {f: "--" + f.replace("_", "-") for f in RESET_FLAGS}

def _reset_mode(values: dict[str, Any]) -> ResetMode:
    if values["to_earliest"]:
        return ResetMode("earliest")
    if values["to_latest"]:
        return ResetMode("latest")
    if values["to_offset"] is not None:
        return ResetMode("offset", values["to_offset"])
    if values["shift_by"] is not None:
        return ResetMode("shift", values["shift_by"])
    try:
        if values["to_datetime"] is not None:
            return ResetMode("datetime", to_ms(parse_datetime(values["to_datetime"])))
        delta = parse_duration(values["by_duration"])
    except TimeSpecError as exc:
        flag = "--to-datetime" if values["to_datetime"] is not None else "--by-duration"
        raise click.BadParameter(str(exc), param_hint=flag) from None
    return ResetMode("datetime", int(time.time() * 1000 - delta.total_seconds() * 1000))


def _new_metadata(plan: PlannedReset, metadata: str, include_profile: bool) -> str:
    """Keep other metadata (a DLQ guard's trip mark needs its own reset); set the replay mark."""
    _, below = replay_mark.split(metadata)
    if not include_profile and plan.current is not None and plan.new < plan.current:
        below = max(below or 0, plan.current)
    if include_profile or (below is not None and plan.new >= below):
        below = None
    return replay_mark.attach(metadata, below)


@click.command("replay")
@config_option
@click.option("--group", help="Consumer group (default: kafka.group_id of the config).")
@click.option(
    "--topic", "topics", multiple=True, metavar="TOPIC[:P,P]",
    help="Topic, optionally with partitions; repeatable (default: kafka.topics of the config).",
)
@click.option("--to-earliest", is_flag=True, help="Reset to the start of each partition.")
@click.option("--to-latest", is_flag=True, help="Reset to the end (skip everything unconsumed).")
@click.option("--to-datetime", metavar="ISO8601", help="Reset to the first record at/after it.")
@click.option("--by-duration", metavar="DURATION", help="Reset to that long ago, e.g. PT6H.")
@click.option("--to-offset", type=int, help="Reset every chosen partition to this offset.")
@click.option("--shift-by", type=int, help="Move committed offsets by N (negative: replay N).")
@click.option("--from", "window_from", metavar="TIME",
              help="Side replay: window start (ISO 8601, or a duration ago such as PT6H).")
@click.option("--to", "window_to", metavar="TIME", help="Side replay: window end (exclusive).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True),
              help="Side replay: records per second (required).")
@click.option("--resume", is_flag=True,
              help="Side replay: continue an interrupted one under the same --group.")
@click.option("--include-profile", is_flag=True,
              help="Also re-send profile updates (skipped by default: they may be stale).")
@click.option("--allow-new-group", is_flag=True,
              help="Reset: accept a group that does not exist yet (positions a new group).")
@click.option("--execute", is_flag=True, help="Apply (without it: a dry run that changes nothing).")
@json_option
def replay_command(
    config_file: Path | None, group: str | None, topics: tuple[str, ...],
    window_from: str | None, window_to: str | None, rate: float | None, resume: bool,
    include_profile: bool, allow_new_group: bool, execute: bool, json_output: bool,
    **reset: Any,
) -> None:
    """Replay: reset a consumer group's offsets, or run a side replay of a time window.

    \b
    Reset (the group must have no members; dry run unless --execute):
      capillary-aep replay --by-duration PT6H
      capillary-aep replay --group capillary-aep-worker --topic orders:0,1 --to-offset 1200
    Side replay of a window under a new group, production untouched:
      capillary-aep replay --from 2024-07-01T00:00:00Z --to 2024-07-01T06:00:00Z \\
          --group replay-0701 --rate 500 --execute
    """
    chosen = [f for f in RESET_FLAGS if reset[f] not in (None, False)]
    side = window_from is not None or window_to is not None
    if len(chosen) > 1:
        raise click.UsageError(
            "choose one reset mode, not " + " and ".join(_FLAG_NAMES[f] for f in chosen)
        )
    if side and chosen:
        raise click.UsageError(
            f"{_FLAG_NAMES[chosen[0]]} resets the group's offsets; --from/--to run a side "
            "replay: use one or the other"
        )
    if not side and not chosen:
        raise click.UsageError(
            "say where to: one of --to-earliest, --to-latest, --to-datetime, --by-duration, "
            "--to-offset, --shift-by; or --from/--to for a side replay"
        )
    if not side and (rate is not None or resume):
        raise click.UsageError("--rate and --resume are for side replays (--from/--to)")
    if side and allow_new_group:
        raise click.UsageError(
            "--allow-new-group is for resets; a side replay always uses a new group"
        )
    specs = parse_topic_specs(topics)
    settings = load(config_file, "replay")
    out = Output(json_output)
    if not specs:
        if not settings.kafka.topics:
            raise click.UsageError(
                "the configuration names input topics by kafka.topic_pattern: "
                "say which with --topic"
            )
        specs = dict.fromkeys(settings.kafka.topics)
    cluster = Cluster(settings.kafka.client_config())
    try:
        if side:
            from worker.tools.side_replay import side_replay

            code = side_replay(
                settings, cluster, out, specs=specs, group=group, window_from=window_from,
                window_to=window_to, rate=rate, resume=resume, include_profile=include_profile,
                execute=execute,
            )
        else:
            mode = _reset_mode(reset)
            code = reset_offsets(
                cluster, out, group or settings.kafka.group_id, specs, mode,
                include_profile=include_profile, allow_new_group=allow_new_group, execute=execute,
            )
    except ToolError as exc:
        click.echo(f"capillary-aep replay: {exc}", err=True)
        code = EXIT_REFUSED
    finally:
        cluster.close()
    raise SystemExit(code)


def reset_offsets(
    cluster: Cluster, out: Output, group: str, specs: dict[str, set[int] | None],
    mode: ResetMode, *, include_profile: bool, allow_new_group: bool, execute: bool,
) -> int:
    tps = select_partitions(cluster, specs)
    state = cluster.ensure_inactive(group)
    if not state.exists and not allow_new_group:
        raise ToolError(
            f"no consumer group {group!r} on this cluster (no members, no committed offsets); "
            "check --group (default: kafka.group_id), or pass --allow-new-group to position a "
            "group that has never run"
        )
    committed = cluster.committed(group, tps)
    marks = cluster.watermarks(tps)
    states = [
        PartitionState(t, p, marks[(t, p)][0], marks[(t, p)][1], committed[(t, p)][0])
        for t, p in tps
    ]
    times = cluster.offsets_for_time(tps, mode.value) if mode.kind == "datetime" else None
    try:
        plan = plan_reset(states, mode, times)
    except PlanError as exc:
        raise ToolError(str(exc)) from None
    new_meta = {p.tp: _new_metadata(p, committed[p.tp][1], include_profile) for p in plan}
    changed = [p for p in plan if p.changes or new_meta[p.tp] != committed[p.tp][1]]
    replays = sum(max(p.replays, 0) for p in plan)
    skips = sum(max(-p.replays, 0) for p in plan)
    when = f" ({format_ms(mode.value)})" if mode.kind == "datetime" else ""

    def report(applied: bool) -> None:
        out.emit_json({
            "group": group, "mode": mode.kind, "time": format_ms(mode.value) if when else None,
            "execute": execute, "applied": applied,
            "partitions": [
                {"topic": p.topic, "partition": p.partition, "current": p.current,
                 "new": p.new, "replays": p.replays, "note": p.note}
                for p in plan
            ],
            "replays": replays, "skips": skips,
            "profile_targets": "included" if include_profile else "skipped-for-replayed-offsets",
        })

    if not out.json:
        out.table(
            f"{group}: reset {mode.describe()}{when}",
            ("topic", "partition", "current offset", "new offset", "replays", "note"),
            ((p.topic, p.partition, p.current, p.new,
              p.replays if p.replays >= 0 else f"skips {-p.replays}", p.note) for p in plan),
            numeric=("partition", "current offset", "new offset", "replays"),
        )
        out.line(f"total: replays {replays} offsets, skips {skips}")
    if replays:
        out.note(PROFILE_INCLUDED if include_profile else PROFILE_SKIPPED)
    if not execute or not changed:
        if out.json:
            report(False)
        out.note("Dry run: nothing changed. Add --execute to apply." if not execute
                 else "Nothing to change.")
        return 0
    cluster.ensure_inactive(group)  # again, right before writing: a worker may have started
    cluster.commit(group, {p.tp: (p.new, new_meta[p.tp]) for p in changed})
    wanted = {p.tp: p.new for p in changed}
    after = cluster.committed(group, list(wanted))
    wrong = [f"{t}[{p}]" for (t, p), (o, _) in after.items() if o != wanted[(t, p)]]
    if wrong:
        raise ToolError(f"the new offsets did not stick for {', '.join(wrong)}; run again")
    if out.json:
        report(True)
    out.note(f"Applied: {len(changed)} partition(s) of group {group!r} moved. Start the workers "
             "again (and resume any autoscaler you paused).")
    return 0
