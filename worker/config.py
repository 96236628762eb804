"""Typed settings: environment variables (prefix ``CAPILLARY_AEP_``, ``__`` between levels) plus an
optional TOML file. Validated once at start; a bad value fails naming the setting.

Secrets (IMS client secret, SASL password, librdkafka ``*password*``/``*secret*`` properties) are
``SecretStr`` or masked in every repr, log line and error: pydantic's own messages quote the
input value, so errors are re-rendered here from location and message only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "CAPILLARY_AEP_"
FAMILIES = ("experience_event", "profile_customer", "profile_points", "profile_tier")
Family = Literal["experience_event", "profile_customer", "profile_points", "profile_tier"]
Policy = Literal["dlq", "filter", "fail"]
_SENSITIVE = re.compile(r"(password|secret|credentials|token|private\.key|key\.pem)", re.I)
# librdkafka settings the worker owns: overriding them would break the no-loss guarantees.
_RESERVED_CONSUMER_KEYS = frozenset(
    {"enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset", "group.id",
     "bootstrap.servers", "on_commit", "error_cb", "stats_cb"}
)


class ConfigError(Exception):
    """Configuration is invalid; the message names each setting and what is wrong."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def redact_properties(props: Mapping[str, str]) -> dict[str, str]:
    return {k: ("**********" if _SENSITIVE.search(k) else v) for k, v in props.items()}


class KafkaSettings(_Model):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "capillary-aep-worker"
    topics: list[str] = Field(default_factory=list)
    topic_pattern: str | None = Field(
        default=None, description="regex of input topics (instead of, or besides, topics)"
    )
    dlq_topic: str = "capillary-aep-dlq"
    start_position: Literal["earliest", "latest"] = Field(
        default="earliest", description="where a group with no committed offset starts"
    )
    offset_out_of_range: Literal["fail", "earliest", "latest"] = Field(
        default="fail", description="what to do when retention overtook the committed offset"
    )
    group_instance_id: str | None = None
    consume_batch_size: int = Field(default=1000, ge=1, le=100_000)
    consume_timeout_s: float = Field(default=0.1, gt=0, le=5)
    session_timeout_ms: int = Field(default=45_000, ge=1000)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    commit_interval_s: float = Field(default=5.0, gt=0, le=300)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    dlq_message_timeout_ms: int = Field(default=10_000, ge=1000, le=300_000)
    auth_failure_timeout_s: float = Field(
        default=300, ge=1, le=86_400,
        description="SASL authentication failing this long, password file re-read: stop (exit 2)",
    )
    properties: dict[str, str] = Field(
        default_factory=dict, repr=False, description="any librdkafka setting, passed through"
    )

    @model_validator(mode="after")
    def _check(self) -> KafkaSettings:
        if not self.topics and not self.topic_pattern:
            raise ValueError("set kafka.topics or kafka.topic_pattern")
        if self.topic_pattern is not None:
            try:
                re.compile(self.topic_pattern)
            except re.error as exc:
                raise ValueError(f"kafka.topic_pattern is not a valid regex: {exc}") from None
        if self.dlq_topic in self.topics:
            raise ValueError("kafka.dlq_topic must not be one of kafka.topics")
        reserved = sorted(_RESERVED_CONSUMER_KEYS & set(self.properties))
        if reserved:
            raise ValueError(
                f"kafka.properties must not set {', '.join(reserved)}: the worker manages them"
            )
        if self.security_protocol.startswith("SASL"):
            if not self.sasl_mechanism or not self.sasl_username:
                raise ValueError("SASL needs kafka.sasl_mechanism and kafka.sasl_username")
            if self.sasl_password is None and self.sasl_password_file is None:
                raise ValueError("SASL needs kafka.sasl_password or kafka.sasl_password_file")
        return self

    def __repr_args__(self) -> Any:
        yield from super().__repr_args__()
        yield "properties", redact_properties(self.properties)

    def sasl_password_value(self) -> str | None:
        """Read on every call: a mounted Secret file may have been rotated."""
        if self.sasl_password_file is not None:
            return self.sasl_password_file.read_text().strip()
        return self.sasl_password.get_secret_value() if self.sasl_password else None

    def client_config(self) -> dict[str, Any]:
        """Common librdkafka settings for consumer, producer and admin clients."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = self.sasl_password_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        if self.ssl_certificate_location:
            conf["ssl.certificate.location"] = str(self.ssl_certificate_location)
        if self.ssl_key_location:
            conf["ssl.key.location"] = str(self.ssl_key_location)
        if self.ssl_key_password:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        conf.update(self.properties)
        return conf


class AepSettings(_Model):
    ims_url: str = "https://ims-na1.adobelogin.com/ims/token/v3"
    client_id: str | None = None
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    scopes: str = (
        "openid,AdobeID,read_organizations,additional_info.projectedProductContext,session"
    )
    org_id: str = Field(default="", description="IMS org, e.g. ABC123@AdobeOrg")
    sandbox_name: str | None = None
    trust_env: bool = Field(default=False, description="honour HTTP(S)_PROXY / NO_PROXY")
    secret_reload_wait_s: float = Field(
        default=60, ge=0, le=3600,
        description="after invalid_client, wait this long for a rotated client_secret_file",
    )
    ca_bundle: Path | None = None
    platform_url: str = Field(
        default="https://platform.adobe.io",
        description="Platform API gateway (Catalog, Schema Registry, Data Access)",
    )
    schema_drift_interval_s: float = Field(
        default=3600, ge=0, le=86_400,
        description="compare local XDM schemas with the Schema Registry this often (0: off)",
    )

    @model_validator(mode="after")
    def _check(self) -> AepSettings:
        _check_url("aep.ims_url", self.ims_url)
        _check_url("aep.platform_url", self.platform_url)
        if 0 < self.schema_drift_interval_s < 1:
            raise ValueError("aep.schema_drift_interval_s must be 0 (off) or at least 1")
        if not self.org_id.endswith("@AdobeOrg"):
            raise ValueError("aep.org_id must look like <ORG>@AdobeOrg")
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            raise ValueError("aep.ca_bundle: file not found")
        return self

    def secret_value(self) -> str | None:
        """Read on every call so a rotated Secret volume is picked up."""
        if self.client_secret_file is not None:
            return self.client_secret_file.read_text().strip()
        return self.client_secret.get_secret_value() if self.client_secret else None


class RouteCredentials(_Model):
    """A route's own IMS credentials (another AEP organisation); unset keys come from ``aep``."""

    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    ims_url: str | None = None
    scopes: str | None = None

    @model_validator(mode="after")
    def _check(self) -> RouteCredentials:
        if self.client_secret is None and self.client_secret_file is None:
            raise ValueError("routes.credentials needs client_secret or client_secret_file")
        if self.ims_url is not None:
            _check_url("routes.credentials.ims_url", self.ims_url)
        return self

    def secret_value(self) -> str | None:
        """Read on every call so a rotated Secret volume is picked up."""
        if self.client_secret_file is not None:
            return self.client_secret_file.read_text().strip()
        return self.client_secret.get_secret_value() if self.client_secret else None


class RouteSettings(_Model):
    """One delivery target: which events of which Capillary orgs feed it, and where they go."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    family: Family
    inlet_url: str
    dataset_id: str = Field(min_length=1)
    schema_id: str = Field(
        min_length=1, description="the dataset schema's $id, or its id under xdm.tenant_id"
    )
    flow_id: str = Field(min_length=1)
    format: Literal["xdm", "raw"] = Field(
        default="xdm", description="raw: source-shaped JSON to the single endpoint (Data Prep)"
    )
    upsert: bool = Field(
        default=False, description="raw profile routes: header operations.data = merge"
    )
    authenticated: bool = True
    source_name: str = "Capillary"
    events: list[str] | None = Field(
        default=None,
        description="event names feeding this target (default: the family's; ['*']: every "
        "event the family maps)",
    )
    capillary_org_ids: list[int] | None = Field(
        default=None, description="Capillary orgIds this route takes (default: any)"
    )
    ims_org_id: str | None = Field(default=None, description="AEP org (default aep.org_id)")
    sandbox_name: str | None = Field(default=None, description="default aep.sandbox_name")
    credentials: RouteCredentials | None = Field(
        default=None, description="own IMS credentials (default: those of aep)"
    )

    @model_validator(mode="after")
    def _check(self) -> RouteSettings:
        _check_url("routes.inlet_url", self.inlet_url)
        if "/collection/" not in urlparse(self.inlet_url).path:
            raise ValueError("routes.inlet_url must be a DCS inlet URL ending /collection/<inlet>")
        if self.upsert and (self.format != "raw" or self.family == "experience_event"):
            raise ValueError(
                f"routes[{self.name}].upsert needs format 'raw' and a profile family"
            )
        if self.ims_org_id is not None and not self.ims_org_id.endswith("@AdobeOrg"):
            raise ValueError(f"routes[{self.name}].ims_org_id must look like <ORG>@AdobeOrg")
        if self.events is not None and "*" in self.events and len(self.events) > 1:
            raise ValueError(f"routes[{self.name}].events: '*' stands alone")
        return self


IdentityKind = Literal["customer_id", "email", "phone", "external_id", "card_number"]


class MappingSettings(_Model):
    tenant: str = Field(default="_capillary", pattern=r"^_[A-Za-z0-9]+$")
    # identityMap namespaces; None (or omitted for the last two) = that identity is not sent
    customer_namespace: str = Field(default="CapillaryCustomerId", min_length=1)
    email_namespace: str | None = Field(default="Email", min_length=1)
    phone_namespace: str | None = Field(default="Phone", min_length=1)
    external_id_namespace: str | None = Field(default=None, min_length=1)
    card_number_namespace: str | None = Field(default=None, min_length=1)
    primary_identity: IdentityKind = Field(
        default="customer_id", description="primary identity; customer_id when it is absent"
    )
    authenticated_state: Literal["authenticated", "ambiguous", "loggedOut"] = "authenticated"
    hashed_identities: list[IdentityKind] = Field(
        default_factory=list, description="sent as sha256 hex of the trimmed, lower-cased value"
    )
    source_timezone: str = "UTC"
    tier_names: dict[int, str] = Field(default_factory=dict)
    max_future_skew_s: float = Field(
        default=300, ge=0, le=86_400,
        description="event timestamps beyond the Kafka record's timestamp (else now) + this "
        "are clamped",
    )

    @field_validator(
        "email_namespace", "phone_namespace", "external_id_namespace", "card_number_namespace",
        mode="before",
    )
    @classmethod
    def _blank_is_off(cls, value: object) -> object:
        # TOML has no null: an empty namespace turns that identity off.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check(self) -> MappingSettings:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.source_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("mapping.source_timezone is not an IANA time zone") from None
        primary_namespace = {
            "customer_id": self.customer_namespace,
            "email": self.email_namespace,
            "phone": self.phone_namespace,
            "external_id": self.external_id_namespace,
            "card_number": self.card_number_namespace,
        }[self.primary_identity]
        if primary_namespace is None:
            raise ValueError(
                f"mapping.primary_identity is {self.primary_identity}, whose namespace is not set"
            )
        return self


class BatchSettings(_Model):
    max_messages: int = Field(default=500, ge=1, le=10_000)
    max_bytes: int = Field(default=1_000_000, ge=1024, le=1_000_000)
    linger_s: float = Field(default=0.2, ge=0, le=60)


class DeliverySettings(_Model):
    concurrency: int = Field(default=4, ge=1, le=256)
    request_timeout_s: float = Field(default=30, gt=0, le=600)
    max_retries: int | None = Field(default=None, ge=0, description="None = retry forever")
    base_delay_s: float = Field(default=0.5, gt=0, le=60)
    max_delay_s: float = Field(default=30, gt=0, le=3600)
    retry_after_cap_s: float = Field(default=300, gt=0, le=3600)
    server_error_retries: int = Field(default=3, ge=0, le=100)
    blocked_probe_interval_s: float = Field(default=30, gt=0, le=3600)
    raw_concurrency: int = Field(
        default=16, ge=1, le=256, description="raw routes: single-message requests in flight"
    )
    adaptive: bool = Field(
        default=True, description="AIMD: the batch in-flight limit follows AEP's answers"
    )
    min_concurrency: int = Field(default=1, ge=1, le=256)
    max_concurrency: int = Field(default=32, ge=1, le=256)

    @model_validator(mode="after")
    def _check_concurrency(self) -> DeliverySettings:
        if not self.min_concurrency <= self.concurrency <= self.max_concurrency:
            raise ValueError(
                "delivery.concurrency must lie between delivery.min_concurrency and "
                "delivery.max_concurrency"
            )
        return self


class RateBudgetSettings(_Model):
    """The AEP organisation's rate budget, shared by every replica (AEP's guidance: 10,000
    messages/s and 1,000 requests/s per organisation); the reserved part is for side jobs."""

    messages_per_s: float = Field(default=8000, gt=0, le=1_000_000)
    requests_per_s: float = Field(default=800, gt=0, le=100_000)
    reserved_messages_per_s: float = Field(default=500, ge=0)
    reserved_requests_per_s: float = Field(default=50, ge=0)
    burst_s: float = Field(default=1.0, gt=0, le=10, description="bucket size, in seconds")

    @model_validator(mode="after")
    def _check(self) -> RateBudgetSettings:
        if self.reserved_messages_per_s >= self.messages_per_s:
            raise ValueError(
                "rate_budget.reserved_messages_per_s must be below rate_budget.messages_per_s"
            )
        if self.reserved_requests_per_s >= self.requests_per_s:
            raise ValueError(
                "rate_budget.reserved_requests_per_s must be below rate_budget.requests_per_s"
            )
        return self

    @property
    def shared_messages_per_s(self) -> float:
        """What the replicas share: the budget less the side jobs' reserve."""
        return self.messages_per_s - self.reserved_messages_per_s

    @property
    def shared_requests_per_s(self) -> float:
        return self.requests_per_s - self.reserved_requests_per_s


class PolicySettings(_Model):
    unknown_event: Policy = "dlq"
    tombstone: Policy = "filter"
    allowed_org_ids: list[int] | None = Field(
        default=None, description="Capillary orgIds processed; others are filtered (default: all)"
    )


class ProfileOrderSettings(_Model):
    # About 230 bytes per identity (key, customer id, LRU entry): the default costs ~60 MB.
    max_identities: int = Field(
        default=250_000, ge=1, description="identities whose last delivered update is kept (LRU)"
    )


class XdmSettings(_Model):
    """The users' own XDM schemas (exported from the Schema Registry) and their tenant."""

    schemas_dir: Path | None = Field(
        default=None, description="directory of exported XDM schemas, resolved offline"
    )
    tenant_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9]+$", description="AEP tenant id, without the _"
    )

    @model_validator(mode="after")
    def _check(self) -> XdmSettings:
        if self.schemas_dir is not None and not self.schemas_dir.is_dir():
            raise ValueError("xdm.schemas_dir: directory not found")
        return self

    def schema_id(self, value: str) -> str:
        """A route's schema_id as a full $id: short ids are taken under the tenant."""
        if value.startswith(("https://", "http://")) or self.tenant_id is None:
            return value
        return f"https://ns.adobe.com/{self.tenant_id}/schemas/{value}"


class DlqGuardSettings(_Model):
    enabled: bool = True
    max_invalid_ratio: float = Field(default=0.5, gt=0, le=1)
    window: int = Field(default=1000, ge=10, description="records the ratio is taken over")
    min_records: int = Field(default=100, ge=1)
    max_consecutive: int = Field(default=500, ge=1)


_TOPIC_NAME = r"^[A-Za-z0-9._\-]{1,249}$"


class ReceiptSettings(_Model):
    """Delivery receipts: one compact record per delivered target on a Kafka topic."""

    enabled: bool = False
    topic: str = Field(
        default="capillary-aep-receipts", pattern=_TOPIC_NAME,
        description="receipts topic (must exist; cleanup.policy=delete, never compact)",
    )
    message_timeout_ms: int = Field(default=10_000, ge=1000, le=300_000)

    @model_validator(mode="after")
    def _check(self) -> ReceiptSettings:
        if self.topic in (".", ".."):
            raise ValueError("receipts.topic must not be '.' or '..'")
        return self


class FlowSettings(_Model):
    # 10,000 records is over a second of the whole organisation's default rate budget: more in
    # flight adds no throughput, only memory (~3.5 KB per record), redelivery after a crash
    # and revoke drain time. 20,000 let a long drain's peak RSS follow its worst hiccup.
    max_in_flight_records: int = Field(default=10_000, ge=100)
    max_in_flight_bytes: int = Field(default=32 * 1024 * 1024, ge=1_000_000)
    resume_ratio: float = Field(default=0.5, gt=0, lt=1)


class ShutdownSettings(_Model):
    drain_timeout_s: float = Field(default=20, ge=0, le=600)
    revoke_drain_timeout_s: float = Field(default=15, ge=0, le=600)
    commit_retry_s: float = Field(
        default=10, ge=0, le=120,
        description="after the drain, keep serving the group (partitions paused) and retrying "
        "the final commit this long when a rebalance refuses it",
    )


class HealthSettings(_Model):
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    liveness_timeout_s: float | None = Field(
        default=None, gt=0, le=3600,
        description="no completed poll this long: /livez fails (default: half of "
        "kafka.max_poll_interval_ms, at most 120 s)",
    )

    def live_threshold(self, max_poll_interval_ms: int) -> float:
        if self.liveness_timeout_s is not None:
            return self.liveness_timeout_s
        return min(max_poll_interval_ms / 2000, 120.0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka: KafkaSettings = Field(default_factory=lambda: KafkaSettings(topics=["capillary"]))
    aep: AepSettings
    routes: list[RouteSettings] = Field(min_length=1)
    mapping: MappingSettings = Field(default_factory=MappingSettings)
    batching: BatchSettings = Field(default_factory=BatchSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    dlq_guard: DlqGuardSettings = Field(default_factory=DlqGuardSettings)
    flow: FlowSettings = Field(default_factory=FlowSettings)
    rate_budget: RateBudgetSettings = Field(default_factory=RateBudgetSettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    profile_order: ProfileOrderSettings = Field(default_factory=ProfileOrderSettings)
    xdm: XdmSettings = Field(default_factory=XdmSettings)
    receipts: ReceiptSettings = Field(default_factory=ReceiptSettings)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        names = [r.name for r in self.routes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"routes: duplicate target names {dupes}")
        if self.receipts.enabled and (
            self.receipts.topic in self.kafka.topics or self.receipts.topic == self.kafka.dlq_topic
        ):
            raise ValueError("receipts.topic must differ from kafka.topics and kafka.dlq_topic")
        live = self.health.liveness_timeout_s
        if live is not None and live * 1000 >= self.kafka.max_poll_interval_ms:
            raise ValueError(
                "health.liveness_timeout_s must be below kafka.max_poll_interval_ms (past that "
                "the group evicts the member before the probe notices)"
            )
        inlet_credentials: dict[str, tuple[bool, str | None]] = {}
        for r in self.routes:  # one client per inlet URL: its routes must agree on auth
            who = (r.authenticated, r.credentials.client_id if r.credentials else None)
            if inlet_credentials.setdefault(r.inlet_url, who) != who:
                raise ValueError(
                    f"routes[{r.name}]: routes sharing an inlet_url must share credentials "
                    "and authenticated"
                )
        tenant_id = self.xdm.tenant_id
        if tenant_id is not None:
            if "tenant" not in self.mapping.model_fields_set:
                # Custom fields live under _{tenant id} in the users' own schemas.
                mapping = self.mapping.model_copy(update={"tenant": f"_{tenant_id}"})
                object.__setattr__(self, "mapping", mapping)
            elif self.mapping.tenant != f"_{tenant_id}":
                raise ValueError(f"mapping.tenant must be _{tenant_id} (xdm.tenant_id) or unset")
        if any(r.authenticated and r.credentials is None for r in self.routes):
            if not self.aep.client_id:
                raise ValueError("aep.client_id is required for authenticated routes")
            if self.aep.client_secret is None and self.aep.client_secret_file is None:
                raise ValueError(
                    "aep.client_secret or aep.client_secret_file is required for "
                    "authenticated routes"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _TOML_FILE.get("path")
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


_TOML_FILE: dict[str, Path | None] = {"path": None}


def _check_url(setting: str, url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{setting} must be an http(s) URL")


def _describe(err: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if loc and err.get("type") != "value_error":
        env = ENV_PREFIX + "__".join(str(p).upper() for p in err["loc"] if isinstance(p, str))
        return f"{loc} (env {env}): {msg}"
    return msg


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read env + TOML file; raise ConfigError naming every bad setting (values never echoed)."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"--config: file not found: {config_file}")
    _TOML_FILE["path"] = config_file
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(e) for e in exc.errors(include_input=False))
        raise ConfigError(f"invalid configuration:\n  {problems}") from None
    except ValueError as exc:  # e.g. TOML syntax errors
        raise ConfigError(f"invalid configuration: {type(exc).__name__}") from None
    finally:
        _TOML_FILE["path"] = None
