"""Consumer groups and partitions as the operator tools see them: members, offsets, watermarks.

Committed offsets are read with a consumer's ``committed()`` and written with a consumer of the
same ``group.id`` that never subscribes (librdkafka's AdminClient offset listing can crash
while a group coordinator is still loading). The broker refuses such a commit while the group
has members, which backs up the active-members check against a worker starting in between.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from worker.offsets import TP

TIMEOUT_S = 15.0


class ToolError(Exception):
    """An operator tool cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    client_id: str
    host: str
    instance_id: str | None
    partitions: tuple[TP, ...]


@dataclass(frozen=True, slots=True)
class GroupState:
    group: str
    state: str  # STABLE, EMPTY, DEAD (no such group), PREPARING_REBALANCE, ...
    members: tuple[Member, ...]

    @property
    def active(self) -> bool:
        return bool(self.members) or self.state not in ("EMPTY", "DEAD", "UNKNOWN")

    @property
    def exists(self) -> bool:
        return self.state != "DEAD"


class GroupActive(ToolError):
    """The group has members: its offsets cannot (and must not) be changed under them."""

    def __init__(self, state: GroupState) -> None:
        self.state = state
        lines = [
            f"group {state.group!r} is active ({state.state}, {len(state.members)} member(s)); "
            "its offsets can only be changed while no consumer is in it:"
        ]
        for m in state.members:
            parts = ", ".join(f"{t}[{p}]" for t, p in m.partitions) or "no partitions"
            static = f", static member {m.instance_id}" if m.instance_id else ""
            lines.append(f"  - {m.client_id} on {m.host} ({m.member_id}{static}): {parts}")
        lines += [
            "Stop them first, and stop whatever would start them again:",
            "  - Kubernetes: pause the autoscaler (KEDA: annotate the ScaledObject "
            "autoscaling.keda.sh/paused-replicas=\"0\"; HPA: scale its target and set "
            "minReplicas/maxReplicas to 0 or delete it), then "
            "kubectl scale deployment/<worker> --replicas=0",
            "  - elsewhere: stop the worker processes (SIGTERM drains and commits).",
            "A stopped member leaves at once; a killed one, or a static member "
            "(group_instance_id), stays until its session times out (kafka.session_timeout_ms).",
            "Then run this command again.",
        ]
        super().__init__("\n".join(lines))


def _state_name(state: Any) -> str:
    name = getattr(state, "name", None) or str(state)
    return str(name).rsplit(".", 1)[-1].upper()


class Cluster:
    """One admin client and one (never subscribing) consumer per group, on one cluster."""

    def __init__(self, client_config: Mapping[str, Any]) -> None:
        self.config = dict(client_config)
        self.admin = AdminClient(self.config)
        self._consumers: dict[str, Consumer] = {}

    def consumer(self, group: str | None = None, **extra: Any) -> Consumer:
        """A consumer in ``group`` (a private throwaway group if None) that never commits
        unless told to, and never subscribes."""
        key = group or ""
        existing = self._consumers.get(key)
        if existing is not None and not extra:
            return existing
        conf = {
            **self.config,
            "group.id": group or f"capillary-aep-tool-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
            "isolation.level": "read_committed",
            **extra,
        }
        consumer = Consumer(conf)
        if not extra:
            self._consumers[key] = consumer
        return consumer

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()

    # -- topics -------------------------------------------------------------------------------

    def partitions(self, topics: Iterable[str]) -> list[TP]:
        """Every partition of these topics; ToolError naming any topic that does not exist."""
        out: list[TP] = []
        missing: list[str] = []
        for topic in topics:
            try:
                md = self.admin.list_topics(topic=topic, timeout=TIMEOUT_S)
            except KafkaException as exc:
                raise ToolError(f"cannot reach the Kafka cluster: {exc.args[0]}") from None
            tmd = md.topics.get(topic)
            if tmd is None or tmd.error is not None or not tmd.partitions:
                missing.append(topic)
                continue
            out.extend((topic, p) for p in sorted(tmd.partitions))
        if missing:
            raise ToolError(f"no such topic: {', '.join(missing)}")
        return out

    def watermarks(self, tps: Iterable[TP]) -> dict[TP, tuple[int, int]]:
        consumer = self.consumer()
        out: dict[TP, tuple[int, int]] = {}
        for t, p in tps:
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(t, p), timeout=TIMEOUT_S, cached=False
                )
            except KafkaException as exc:
                raise ToolError(f"cannot read offsets of {t}[{p}]: {exc.args[0]}") from None
            out[(t, p)] = (low, high)
        return out

    def offsets_for_time(self, tps: Iterable[TP], ts_ms: int) -> dict[TP, int]:
        """Per partition, the earliest offset with a timestamp at or after ``ts_ms`` (-1: none)."""
        parts = [TopicPartition(t, p, ts_ms) for t, p in tps]
        if not parts:
            return {}
        try:
            got = self.consumer().offsets_for_times(parts, timeout=TIMEOUT_S)
        except KafkaException as exc:
            raise ToolError(f"offsets-for-times failed: {exc.args[0]}") from None
        return {(tp.topic, tp.partition): tp.offset for tp in got}

    # -- groups -------------------------------------------------------------------------------

    def describe(self, group: str) -> GroupState:
        try:
            desc = self.admin.describe_consumer_groups([group], request_timeout=TIMEOUT_S)[
                group
            ].result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            raise ToolError(f"cannot describe group {group!r}: {exc.args[0]}") from None
        members = tuple(
            Member(
                member_id=m.member_id,
                client_id=m.client_id,
                host=m.host,
                instance_id=m.group_instance_id,
                partitions=tuple(
                    (tp.topic, tp.partition)
                    for tp in (m.assignment.topic_partitions if m.assignment else [])
                ),
            )
            for m in desc.members
        )
        return GroupState(group, _state_name(desc.state), members)

    def ensure_inactive(self, group: str) -> GroupState:
        state = self.describe(group)
        if state.active:
            raise GroupActive(state)
        return state

    def committed(self, group: str, tps: Iterable[TP]) -> dict[TP, tuple[int | None, str]]:
        """Per partition: (committed offset or None, commit metadata)."""
        parts = [TopicPartition(t, p) for t, p in tps]
        if not parts:
            return {}
        try:
            got = self.consumer(group).committed(parts, timeout=TIMEOUT_S)
        except KafkaException as exc:
            raise ToolError(f"cannot read committed offsets of {group!r}: {exc.args[0]}") from None
        return {
            (tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None, tp.metadata or "")
            for tp in got
        }

    def commit(self, group: str, offsets: Mapping[TP, tuple[int, str]]) -> None:
        """Write committed offsets (with metadata) for an inactive group."""
        parts = [
            TopicPartition(t, p, o, metadata=m) if m else TopicPartition(t, p, o)
            for (t, p), (o, m) in offsets.items()
        ]
        if not parts:
            return
        try:
            self.consumer(group).commit(offsets=parts, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            raise ToolError(
                f"the broker refused the new offsets for {group!r} ({err}); if a consumer "
                "joined the group meanwhile, stop it and run this command again"
            ) from None
