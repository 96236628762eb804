"""The books of one scenario: what was produced, what each record should become, and what it
became, checked from the outside (the sandbox's stored records per dataset, the dead-letter
topic, the group's committed offsets).

Every produced record has a label (its eventId, or a made-up label for poison that has none)
and an expected outcome: delivered to AEP (to each dataset its event routes to), dead-lettered
(optionally with a given ``error-kind``), or filtered. A profile update may instead be
*superseded*: the worker never sends an update older than a newer one of the same identity
(DESIGN 1.8), which is fine only if that newer update reached AEP or the DLQ.

A record is *lost* when a part of it reached neither AEP nor the DLQ (and, for a filtered one,
the group never committed past it). A record that reached the wrong place (a valid event in the
DLQ, poison in AEP, a dead letter with another reason) is *wrong*.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.integration.process_helpers import Produced
from tests.integration.worker_harness import committed, end_offsets, read_all
from worker.dlq import header_map

Where = tuple[int, int]  # (partition, offset)
Identity = tuple[str, int, str]  # (profile dataset, orgId, customerId)
TENANT = "_capillary"


@dataclass(frozen=True, slots=True)
class Expect:
    outcome: Literal["deliver", "dlq", "filter"] = "deliver"
    error_kind: str | None = None  # the dead letter's capillary-aep.error-kind (None: any)
    stage: str | None = None  # the dead letter's capillary-aep.stage (None: any)
    # deliver: the datasets the event must reach (None: at least one, any)
    datasets: tuple[str, ...] | None = None
    # A profile update: its dataset and identity, and Capillary createdAt. The worker may
    # supersede it (never send it) when a newer update of the same identity wins.
    profile: Identity | None = None
    created: int = 0


DELIVER = Expect()


@dataclass(frozen=True, slots=True)
class Entry:
    label: str
    expect: Expect


@dataclass(slots=True)
class Observed:
    """What the world looks like after a scenario."""

    delivered: dict[str, dict[str, list[dict[str, Any]]]]  # eventId -> dataset -> xdmEntities
    dead: dict[Where, list[dict[str, str]]]  # source (partition, offset) -> our DLQ headers
    foreign_dead: int  # dead letters whose source is another topic (must be 0)
    committed: dict[int, int]
    ends: dict[int, int]


def accepted_by_event(sandbox: Any) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """eventId -> dataset -> every xdmEntity the sandbox accepted for it (duplicates kept)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for ds in sandbox.stats()["datasets"]:
        for rec in sandbox.records(ds, limit=10_000_000):
            entity = rec["xdmEntity"]
            details = entity.get(TENANT, {})
            event_id = details.get("eventId") or details.get("lastEventId") or entity["_id"]
            out.setdefault(event_id, {}).setdefault(ds, []).append(entity)
    return out


def observe(
    bootstrap: str, sandbox: Any, *, topic: str, dlq: str, group: str, partitions: int
) -> Observed:
    dead: dict[Where, list[dict[str, str]]] = {}
    foreign = 0
    for msg in read_all(bootstrap, dlq, idle_s=1.5, timeout_s=120):
        h = header_map(msg.headers())
        if h.get("source-topic") != topic:
            foreign += 1
            continue
        dead.setdefault((int(h["source-partition"]), int(h["source-offset"])), []).append(h)
    return Observed(
        delivered=accepted_by_event(sandbox),
        dead=dead,
        foreign_dead=foreign,
        committed=committed(bootstrap, group, topic, partitions),
        ends=end_offsets(bootstrap, topic, partitions),
    )


@dataclass(slots=True)
class Outcome:
    """One line of the report; ``problems`` empty means the scenario held."""

    scenario: str
    produced: int = 0
    delivered: int = 0  # distinct produced events that reached AEP
    duplicates: int = 0  # extra AEP copies of those (same _id, same document)
    dlq_duplicates: int = 0  # extra dead letters of one source record and target
    dead: Counter[str] = field(default_factory=Counter)  # error-kind -> distinct records
    filtered: int = 0
    superseded: int = 0  # profile updates replaced by a newer one of the same identity
    superseded_by_dead: int = 0  # ... whose newer update(s) all went to the DLQ
    lost: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    uncommitted: dict[int, tuple[int, int]] = field(default_factory=dict)  # p -> (committed, end)
    wall_s: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at start and end
    notes: list[str] = field(default_factory=list)

    @property
    def dead_total(self) -> int:
        return sum(self.dead.values())

    @property
    def problems(self) -> list[str]:
        out = [f"LOST {x}" for x in self.lost] + [f"WRONG {x}" for x in self.wrong]
        out += [
            f"partition {p} committed {c}, end {e}" for p, (c, e) in self.uncommitted.items()
        ]
        return out

    def reasons(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.dead.items())) or "-"

    def duplicates_text(self) -> str:
        return f"{self.duplicates}" + (f" (+{self.dlq_duplicates} DLQ)" if self.dlq_duplicates else "")

    def line(self) -> str:
        text = (
            f"{self.scenario:<18} produced {self.produced:>6}  delivered {self.delivered:>6}  "
            f"duplicates {self.duplicates_text():<6}  dead-lettered {self.dead_total:>4} "
            f"[{self.reasons()}]  filtered {self.filtered}  superseded {self.superseded}  "
            f"lost {len(self.lost)}  wall {self.wall_s:5.1f}s  "
            f"load {self.load[0]:.1f}->{self.load[1]:.1f}"
        )
        if self.all_notes:
            text += "  (" + "; ".join(self.all_notes) + ")"
        return text

    @property
    def all_notes(self) -> list[str]:
        extra = []
        if self.superseded_by_dead:
            extra.append(
                f"{self.superseded_by_dead} superseded updates whose newer update was "
                "dead-lettered"
            )
        return self.notes + extra

    def check(self) -> None:
        """Fail the test with the details if anything was lost, misplaced or left uncommitted."""
        problems = self.problems
        assert not problems, (
            f"{self.scenario}: {len(self.lost)} lost, {len(self.wrong)} wrong, "
            f"{len(self.uncommitted)} partitions not committed to the end\n"
            + "\n".join(problems[:20])
            + "\n"
            + self.line()
        )


class Ledger:
    """The produced records of one scenario (one input topic) and their expected outcomes."""

    def __init__(self, scenario: str, topic: str, partitions: int) -> None:
        self.scenario = scenario
        self.topic = topic
        self.partitions = partitions
        self.entries: dict[Where, Entry] = {}
        self.started = time.monotonic()
        self.load_start = os.getloadavg()[0]
        self.notes: list[str] = []

    def add(self, produced: Iterable[Produced], expect: Mapping[str, Expect] | Expect) -> None:
        """Book produced records; ``expect`` per label, or one for all of them."""
        for p in produced:
            e = expect if isinstance(expect, Expect) else expect.get(p.event_id, DELIVER)
            where = (p.partition, p.offset)
            assert where not in self.entries, f"{where} booked twice"
            self.entries[where] = Entry(p.event_id, e)

    def __len__(self) -> int:
        return len(self.entries)

    def rebook(self, where: Where, expect: Expect) -> None:
        """Change the expected outcome of one record (what a scenario learned on the way)."""
        self.entries[where] = Entry(self.entries[where].label, expect)

    def unfinished_below(self, seen: Observed, offsets: Mapping[int, int]) -> list[str]:
        """Records below a partition's committed offset that reached neither AEP nor the DLQ
        (a filtered record is fine there: committing past it is what filtering means; so is a
        superseded profile update whose newer update is at or above its partition's committed
        offset: it is consumed again and sent after a restart)."""
        reached = self._profile_updates_reached(seen)
        for (partition, offset), entry in self.entries.items():
            key = entry.expect.profile
            if key is not None and offset >= offsets.get(partition, -1):
                reached.setdefault(key, []).append(entry)
        out = []
        for (partition, offset), entry in sorted(self.entries.items()):
            if offset >= offsets.get(partition, -1) or entry.expect.outcome == "filter":
                continue
            parts = seen.delivered.get(entry.label, {})
            if (partition, offset) in seen.dead:
                continue
            missing = [
                ds for ds in entry.expect.datasets or ("any",)
                if not (parts.get(ds) or (ds == "any" and parts))
                and not self._superseded(entry, ds, reached)
            ]
            if missing:
                out.append(f"{self.topic}[{partition}]@{offset} {entry.label} {missing}")
        return out

    # -- the verdict -------------------------------------------------------------------------

    def _profile_updates_reached(self, seen: Observed) -> dict[Identity, list[Entry]]:
        """Per profile identity, the updates that reached its dataset or the DLQ."""
        out: dict[Identity, list[Entry]] = {}
        for where, entry in self.entries.items():
            key = entry.expect.profile
            if key is None:
                continue
            if seen.delivered.get(entry.label, {}).get(key[0]) or where in seen.dead:
                out.setdefault(key, []).append(entry)
        return out

    @staticmethod
    def _winners(entry: Entry, dataset: str, reached: dict[Identity, list[Entry]]) -> list[Entry]:
        """The newer (or same-time) updates of the identity that reached AEP or the DLQ."""
        e = entry.expect
        if e.profile is None or e.profile[0] != dataset:
            return []
        return [
            other for other in reached.get(e.profile, ())
            if other.label != entry.label and other.expect.created >= e.created
        ]

    def _superseded(
        self, entry: Entry, dataset: str, reached: dict[Identity, list[Entry]]
    ) -> bool:
        """Not sent, legitimately: a newer (or same-time, later) update of the identity won."""
        return bool(self._winners(entry, dataset, reached))

    def tally(self, seen: Observed) -> Outcome:
        out = Outcome(
            self.scenario,
            produced=len(self.entries),
            wall_s=time.monotonic() - self.started,
            load=(self.load_start, os.getloadavg()[0]),
            notes=list(self.notes),
        )
        labels: set[str] = set()
        reached = self._profile_updates_reached(seen)
        for (partition, offset), entry in sorted(self.entries.items()):
            where = f"{self.topic}[{partition}]@{offset} {entry.label}"
            labels.add(entry.label)
            parts = seen.delivered.get(entry.label, {})
            dead = seen.dead.get((partition, offset), [])
            expect = entry.expect
            for ds, docs in parts.items():
                out.duplicates += len(docs) - 1
                if any(d != docs[0] for d in docs[1:]):
                    out.wrong.append(f"{where}: copies in {ds} differ (_id or content)")
            if dead:
                first = dead[0]
                out.dead[first.get("error-kind", "?")] += 1
                targets = Counter(h.get("target", "") for h in dead)
                out.dlq_duplicates += sum(n - 1 for n in targets.values())
            if expect.outcome == "deliver":
                self._check_delivered(entry, where, parts, dead, reached, seen, out)
            elif expect.outcome == "dlq":
                if parts:
                    out.wrong.append(f"{where}: expected dlq, reached AEP {sorted(parts)}")
                if not dead and not parts and any(
                    self._superseded(entry, ds, reached) for ds in expect.datasets or ()
                ):
                    out.superseded += 1  # never sent, so never rejected
                elif not dead:
                    out.lost.append(f"{where}: expected dlq, found nowhere")
                elif expect.error_kind is not None and dead[0].get("error-kind") != expect.error_kind:
                    out.wrong.append(
                        f"{where}: dead-lettered as {dead[0].get('error-kind')}, expected "
                        f"{expect.error_kind}"
                    )
                elif expect.stage is not None and dead[0].get("stage") != expect.stage:
                    out.wrong.append(
                        f"{where}: dead-lettered at stage {dead[0].get('stage')}, expected "
                        f"{expect.stage}"
                    )
            else:  # filter
                if parts or dead:
                    out.wrong.append(f"{where}: expected filtered, reached AEP or the DLQ")
                elif seen.committed.get(partition, -1) > offset:
                    out.filtered += 1
                else:
                    out.lost.append(f"{where}: expected filtered, never committed past")
        strangers = set(seen.delivered) - labels
        if strangers:
            out.wrong.append(f"{len(strangers)} events in AEP that were never produced")
        if seen.foreign_dead:
            out.wrong.append(f"{seen.foreign_dead} dead letters from another topic")
        for p in range(self.partitions):
            c, e = seen.committed.get(p, -1), seen.ends.get(p, 0)
            if c != e and not (c < 0 and e == 0):
                out.uncommitted[p] = (c, e)
        return out

    def _check_delivered(
        self,
        entry: Entry,
        where: str,
        parts: dict[str, list[dict[str, Any]]],
        dead: list[dict[str, str]],
        reached: dict[Identity, list[Entry]],
        seen: Observed,
        out: Outcome,
    ) -> None:
        if dead:
            h = dead[0]
            out.wrong.append(
                f"{where}: expected delivered, dead-lettered ({h.get('stage')}/"
                f"{h.get('error-kind')}: {h.get('reason', '')[:120]})"
            )
            return
        datasets = entry.expect.datasets
        if datasets is None:
            if parts:
                out.delivered += 1
            else:
                out.lost.append(f"{where}: expected delivered, found nowhere")
            return
        unexpected = set(parts) - set(datasets)
        if unexpected:
            out.wrong.append(f"{where}: reached unexpected datasets {sorted(unexpected)}")
        missing = []
        for ds in datasets:
            if parts.get(ds):
                continue
            winners = self._winners(entry, ds, reached)
            if winners:
                out.superseded += 1
                if not any(seen.delivered.get(w.label, {}).get(ds) for w in winners):
                    out.superseded_by_dead += 1
            else:
                missing.append(ds)
        if missing:
            out.lost.append(f"{where}: never reached {missing}")
        elif parts:
            out.delivered += 1
