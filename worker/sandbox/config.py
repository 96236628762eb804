"""Sandbox settings: IMS clients, datasets, inlets, limits, storage; defaults plus a TOML/JSON file.

Everything has a default, so ``SandboxConfig()`` is a working AEP sandbox with the names the
rest of the project relies on (see ``DEFAULT_*`` below). A file (or a mapping, for tests)
overrides top-level keys; ``ims_clients``, ``datasets`` and ``inlets`` replace the default
lists when given.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import orjson

from worker.sandbox.faults import FaultConfig

DEFAULT_ORG_ID = "EXAMPLEORG0123456789@AdobeOrg"
DEFAULT_CLIENT_ID = "sandbox-client"
DEFAULT_CLIENT_SECRET = "sandbox-secret"
EVENT_SCHEMA_ID = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
PROFILE_SCHEMA_ID = "https://ns.adobe.com/capillary/schemas/loyalty-profile"
EXPERIENCE_EVENT_CLASS = "https://ns.adobe.com/xdm/context/experienceevent"
PROFILE_CLASS = "https://ns.adobe.com/xdm/context/profile"
DS_LOYALTY_EVENTS = "ds-loyalty-events"
DS_COMMERCE_EVENTS = "ds-commerce-events"
DS_PROFILE_CUSTOMER = "ds-profile-customer"
DS_PROFILE_POINTS = "ds-profile-points"
DS_PROFILE_TIER = "ds-profile-tier"
AUTH_INLET = "capillary-inlet"
OPEN_INLET = "open-inlet"
DEFAULT_MAX_BODY_BYTES = 1_000_000
DEFAULT_TOKEN_LIFETIME_S = 86_399.0
# Profile guardrails: "ExperienceEvents over 10 KB, records over 100 KB". Read as KiB, the
# lenient reading: a worker that counts 10,000 bytes stays inside either reading.
DEFAULT_EVENT_PROFILE_MAX_BYTES = 10 * 1024
DEFAULT_RECORD_PROFILE_MAX_BYTES = 100 * 1024

FailureKey = Literal["statusCode", "status"]
StoreMode = Literal["memory", "jsonl", "count"]


class SandboxConfigError(ValueError):
    """The sandbox configuration is invalid; the message names the setting."""


@dataclass(frozen=True, slots=True)
class ImsClient:
    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return f"ImsClient(client_id={self.client_id!r}, client_secret='**********')"


@dataclass(frozen=True, slots=True)
class DatasetConfig:
    id: str
    schema_id: str
    profile_enabled: bool = True
    # "event" (ExperienceEvent class, 10 KB Profile limit) or "record" (100 KB); None: from
    # the schema's meta:class.
    behavior: Literal["event", "record"] | None = None


@dataclass(frozen=True, slots=True)
class InletConfig:
    id: str
    auth_required: bool = True
    datasets: tuple[str, ...] | None = None  # None: every dataset
    failure_key: FailureKey = "statusCode"  # key of the status in a failed 207 entry
    failure_xaction_id: bool = False  # failed 207 entries carry an xactionId too

    def allows(self, dataset_id: str) -> bool:
        return self.datasets is None or dataset_id in self.datasets


@dataclass(frozen=True, slots=True)
class RawFlowConfig:
    """A dataflow that takes raw (source-shaped) JSON on the single endpoint: requests naming
    it in ``x-adobe-flow-id`` are mapped by the Capillary source's Data Prep mapping
    (``worker.sandbox.dataprep``) and checked against ``dataset``'s schema."""

    id: str
    dataset: str


def default_ims_clients() -> tuple[ImsClient, ...]:
    return (ImsClient(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),)


def default_datasets() -> tuple[DatasetConfig, ...]:
    return (
        DatasetConfig(DS_LOYALTY_EVENTS, EVENT_SCHEMA_ID),
        DatasetConfig(DS_COMMERCE_EVENTS, EVENT_SCHEMA_ID),
        DatasetConfig(DS_PROFILE_CUSTOMER, PROFILE_SCHEMA_ID),
        DatasetConfig(DS_PROFILE_POINTS, PROFILE_SCHEMA_ID),
        DatasetConfig(DS_PROFILE_TIER, PROFILE_SCHEMA_ID),
    )


def default_inlets() -> tuple[InletConfig, ...]:
    return (
        InletConfig(AUTH_INLET, auth_required=True),
        InletConfig(OPEN_INLET, auth_required=False),
    )


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    org_id: str = DEFAULT_ORG_ID
    ims_clients: tuple[ImsClient, ...] = field(default_factory=default_ims_clients)
    datasets: tuple[DatasetConfig, ...] = field(default_factory=default_datasets)
    inlets: tuple[InletConfig, ...] = field(default_factory=default_inlets)
    raw_flows: tuple[RawFlowConfig, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    token_lifetime_s: float = DEFAULT_TOKEN_LIFETIME_S
    require_flow_id: bool = True
    reject_empty_values: bool = True
    event_profile_max_bytes: int = DEFAULT_EVENT_PROFILE_MAX_BYTES
    record_profile_max_bytes: int = DEFAULT_RECORD_PROFILE_MAX_BYTES
    store: StoreMode = "memory"
    jsonl_path: Path | None = None
    max_records_per_dataset: int = 100_000
    track_ids: bool = True  # distinct/duplicate _id counts (one int per distinct _id)
    request_log_size: int = 1000
    sync_validation_per_minute: int = 60
    schemas_root: Path | None = None  # None: the project's schemas/
    faults: FaultConfig = field(default_factory=FaultConfig)
    # Schema Registry: schema $id -> the document served instead of the resolved local one;
    # ids the registry does not have (404). See worker/sandbox/catalog.py.
    registry_overrides: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    registry_removed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.org_id.endswith("@AdobeOrg"):
            problems.append("org_id must end with @AdobeOrg")
        if self.max_body_bytes < 1:
            problems.append("max_body_bytes must be positive")
        if self.token_lifetime_s <= 0:
            problems.append("token_lifetime_s must be positive")
        if self.store == "jsonl" and self.jsonl_path is None:
            problems.append("store=jsonl needs jsonl_path")
        if self.max_records_per_dataset < 0:
            problems.append("max_records_per_dataset must be >= 0")
        ids = [d.id for d in self.datasets]
        if len(set(ids)) != len(ids):
            problems.append("datasets: duplicate ids")
        inlet_ids = [i.id for i in self.inlets]
        if len(set(inlet_ids)) != len(inlet_ids):
            problems.append("inlets: duplicate ids")
        for inlet in self.inlets:
            for ds in inlet.datasets or ():
                if ds not in ids:
                    problems.append(f"inlets[{inlet.id}].datasets: unknown dataset {ds}")
            if inlet.failure_key not in ("statusCode", "status"):
                problems.append(f"inlets[{inlet.id}].failure_key must be statusCode or status")
        for flow in self.raw_flows:
            if flow.dataset not in ids:
                problems.append(f"raw_flows[{flow.id}].dataset: unknown dataset {flow.dataset}")
        if problems:
            raise SandboxConfigError("; ".join(problems))

    def dataset(self, dataset_id: str) -> DatasetConfig | None:
        for ds in self.datasets:
            if ds.id == dataset_id:
                return ds
        return None

    def raw_flow(self, flow_id: str | None) -> RawFlowConfig | None:
        for flow in self.raw_flows:
            if flow.id == flow_id:
                return flow
        return None

    def inlet(self, inlet_id: str) -> InletConfig | None:
        for inlet in self.inlets:
            if inlet.id == inlet_id:
                return inlet
        return None

    def with_overrides(self, overrides: Mapping[str, Any]) -> SandboxConfig:
        """A copy with some settings changed (same keys and forms as a config file)."""
        return replace(self, **_parse(overrides))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SandboxConfig:
        return cls(**_parse(data))

    @classmethod
    def from_file(cls, path: Path) -> SandboxConfig:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise SandboxConfigError(f"cannot read sandbox config {path}: {exc}") from exc
        try:
            data = orjson.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
        except (orjson.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SandboxConfigError(f"cannot parse sandbox config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise SandboxConfigError(f"sandbox config {path} must be a table/object")
        return cls.from_mapping(data)


def parse_store(spec: str) -> tuple[StoreMode, Path | None]:
    """``memory``, ``count`` or ``jsonl:PATH``."""
    if spec == "memory":
        return "memory", None
    if spec == "count":
        return "count", None
    if spec.startswith("jsonl:") and len(spec) > len("jsonl:"):
        return "jsonl", Path(spec[len("jsonl:") :])
    raise SandboxConfigError("store must be memory, count or jsonl:PATH")


_SIMPLE_KEYS = {f.name for f in fields(SandboxConfig)} - {
    "ims_clients",
    "datasets",
    "inlets",
    "raw_flows",
    "faults",
    "jsonl_path",
    "schemas_root",
    "store",
    "registry_overrides",
    "registry_removed",
}
_ALIASES = {"token_lifetime_seconds": "token_lifetime_s"}


def _parse(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        key = _ALIASES.get(key, key)
        try:
            if key in _SIMPLE_KEYS:
                out[key] = value
            elif key == "store":
                mode, path = parse_store(str(value))
                out["store"] = mode
                if path is not None:
                    out["jsonl_path"] = path
            elif key in ("jsonl_path", "schemas_root"):
                out[key] = None if value is None else Path(value)
            elif key == "ims_clients":
                out[key] = tuple(c if isinstance(c, ImsClient) else ImsClient(**c) for c in value)
            elif key == "datasets":
                out[key] = tuple(
                    d if isinstance(d, DatasetConfig) else DatasetConfig(**d) for d in value
                )
            elif key == "inlets":
                out[key] = tuple(_inlet(i) for i in value)
            elif key == "raw_flows":
                out[key] = tuple(
                    f if isinstance(f, RawFlowConfig) else RawFlowConfig(**f) for f in value
                )
            elif key == "faults":
                out[key] = value if isinstance(value, FaultConfig) else FaultConfig.parse(value)
            elif key == "registry_overrides":
                out[key] = {str(k): _schema_doc(k, v) for k, v in dict(value).items()}
            elif key == "registry_removed":
                out[key] = tuple(str(v) for v in value)
            else:
                raise SandboxConfigError(f"unknown sandbox setting {key!r}")
        except TypeError as exc:
            raise SandboxConfigError(f"sandbox setting {key!r}: {exc}") from None
    return out


def _schema_doc(schema_id: Any, value: Any) -> dict[str, Any]:
    """A registry override: the document itself, or the path of a JSON file holding it."""
    if isinstance(value, str | Path):
        try:
            value = orjson.loads(Path(value).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise SandboxConfigError(f"registry_overrides[{schema_id}]: {exc}") from None
    if not isinstance(value, dict):
        raise SandboxConfigError(f"registry_overrides[{schema_id}] must be a JSON object")
    return value


def _inlet(value: Any) -> InletConfig:
    if isinstance(value, InletConfig):
        return value
    data = dict(value)
    if data.get("datasets") is not None:
        data["datasets"] = tuple(data["datasets"])
    return InletConfig(**data)
