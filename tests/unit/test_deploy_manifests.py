"""The container and cluster files agree with the code: they parse, every environment
variable they set is a real setting (and together they make a valid configuration), probe
paths and ports are the health server's, alerts and dashboard panels name metrics that exist,
and the Dockerfile's entry point and paths exist. No Docker engine or cluster needed;
``kubectl kustomize`` renders the overlay when kubectl is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from worker.cli import COMMANDS
from worker.config import ENV_PREFIX, HealthSettings, Settings, load_settings
from worker.health import HealthState, build_app
from worker.metrics import Metrics, metric_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "k8s" / "base"
OVERLAY = DEPLOY / "k8s" / "overlays" / "example"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
DASHBOARD = DEPLOY / "grafana" / "capillary-aep-worker.json"
SECRET_MOUNT = "/var/run/secrets/capillary-aep"


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _kustomize_files(directory: Path) -> Iterator[Path]:
    k = _load(directory / "kustomization.yaml")[0]
    for entry in [*k.get("resources", []), *(p["path"] for p in k.get("patches", []))]:
        target = (directory / entry).resolve()
        if target.is_dir():
            yield from _kustomize_files(target)
        else:
            yield target


def _resources(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """kind/name -> document of a kustomization's resources (patches not applied)."""
    k = _load(directory / "kustomization.yaml")[0]
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in k.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            out.update(_resources(target))
        else:
            for doc in _load(target):
                out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def _patches(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    k = _load(directory / "kustomization.yaml")[0]
    out = {}
    for p in k.get("patches", []):
        doc = _load(directory / p["path"])[0]
        out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


BASE_DOCS = _resources(BASE)
DEPLOYMENT = BASE_DOCS[("Deployment", "capillary-aep-worker")]
POD = DEPLOYMENT["spec"]["template"]["spec"]
CONTAINER = POD["containers"][0]
CONFIG = BASE_DOCS[("ConfigMap", "capillary-aep-worker-config")]["data"]
SECRET = _load(BASE / "secret.example.yaml")[0]


def _setting(name: str) -> None:
    """Fail unless ``name`` is CAPILLARY_AEP_<SECTION>[__<KEY>] of a real setting."""
    assert name.startswith(ENV_PREFIX), name
    section, *rest = name.removeprefix(ENV_PREFIX).lower().split("__")
    field = Settings.model_fields.get(section)
    assert field is not None, f"{name}: no settings section {section!r}"
    if rest:
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel), name
        assert len(rest) == 1 and rest[0] in model.model_fields, f"{name}: not a setting"


def _worker_env(config: dict[str, str], secret: dict[str, Any]) -> dict[str, str]:
    """The container's environment: the ConfigMap plus env entries (secret refs resolved)."""
    env = dict(config)
    values = secret["stringData"]
    for entry in CONTAINER.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        env[entry["name"]] = values[ref["key"]] if ref else entry["value"]
    return env


def _load_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return load_settings()


# -- parsing and structure ---------------------------------------------------------------


def test_every_manifest_parses_and_names_itself() -> None:
    files = sorted((DEPLOY / "k8s").rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        for doc in _load(path):
            assert doc.get("apiVersion") and doc.get("kind"), path
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], path
    kinds = {kind for kind, _ in BASE_DOCS}
    assert kinds >= {"Deployment", "ConfigMap", "PodDisruptionBudget", "Service",
                     "ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}
    assert ("Secret", SECRET["metadata"]["name"]) in _resources(OVERLAY)


def test_kustomizations_reference_existing_files() -> None:
    for directory in (BASE, OVERLAY):
        for path in _kustomize_files(directory):
            assert path.is_file(), path


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_overlay_renders_with_kustomize() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=60,
        check=True,
    ).stdout
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}
    deployment = docs[("Deployment", "capillary-aep-worker")]
    assert deployment["metadata"]["namespace"] == "loyalty"
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/loyalty/capillary-aep-worker:0.1.0"
    scaled = docs[("ScaledObject", "capillary-aep-worker")]
    assert scaled["spec"]["maxReplicaCount"] == 6
    config = docs[("ConfigMap", "capillary-aep-worker-config")]["data"]
    assert config["CAPILLARY_AEP_MAPPING__SOURCE_TIMEZONE"] == "Asia/Kolkata"


# -- settings ------------------------------------------------------------------------------


def test_every_environment_variable_is_a_setting() -> None:
    overlay_config = _patches(OVERLAY)[("ConfigMap", "capillary-aep-worker-config")]["data"]
    compose = _load(COMPOSE)[0]
    names = [*CONFIG, *overlay_config, *(e["name"] for e in CONTAINER.get("env", []))]
    names += list(compose["services"]["worker"]["environment"])
    assert len(names) > 20
    for name in names:
        _setting(name)
    with pytest.raises(AssertionError):
        _setting("CAPILLARY_AEP_KAFKA__NO_SUCH_KEY")


def test_manifests_make_a_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    overlay_config = _patches(OVERLAY)[("ConfigMap", "capillary-aep-worker-config")]["data"]
    for config in (CONFIG, {**CONFIG, **overlay_config}):
        settings = _load_env(monkeypatch, _worker_env(config, SECRET))
        assert settings.kafka.security_protocol == "SASL_SSL"
        assert settings.kafka.sasl_username == SECRET["stringData"]["kafka-sasl-username"]
        assert len(settings.routes) == 3


def test_secret_files_come_from_the_mounted_secret() -> None:
    mounts = {m["name"]: m for m in CONTAINER["volumeMounts"]}
    volumes = {v["name"]: v for v in POD["volumes"]}
    secret_mount = mounts["secrets"]
    assert secret_mount["mountPath"] == SECRET_MOUNT and secret_mount["readOnly"] is True
    assert "subPath" not in secret_mount  # subPath mounts never see a rotated Secret
    assert volumes["secrets"]["secret"]["secretName"] == SECRET["metadata"]["name"]
    for name in ("CAPILLARY_AEP_AEP__CLIENT_SECRET_FILE", "CAPILLARY_AEP_KAFKA__SASL_PASSWORD_FILE"):
        path = Path(CONFIG[name])
        assert str(path.parent) == SECRET_MOUNT and path.name in SECRET["stringData"], name
    for entry in CONTAINER["env"]:
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["name"] == SECRET["metadata"]["name"] and ref["key"] in SECRET["stringData"]


def test_secret_examples_hold_no_real_secrets() -> None:
    for path in (BASE / "secret.example.yaml", OVERLAY / "secret.example.yaml"):
        for value in _load(path)[0]["stringData"].values():
            assert value.startswith("REPLACE_WITH_"), path
    for key, value in CONFIG.items():
        assert not re.search(r"(PASSWORD|SECRET)$", key), key  # secrets are files, not env
        assert "secret" not in value.lower() or value.startswith(SECRET_MOUNT), key


def test_compose_worker_configuration_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _load(COMPOSE)[0]["services"]["worker"]
    settings = _load_env(monkeypatch, {k: str(v) for k, v in worker["environment"].items()})
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert all(r.inlet_url.startswith("http://sandbox:8765/") for r in settings.routes)


# -- probes, ports, shutdown ---------------------------------------------------------------


def _routes() -> set[str]:
    app = build_app(HealthState(), Metrics())
    return {r.resource.canonical for r in app.router.routes() if r.resource is not None}


def test_probes_match_the_health_server() -> None:
    routes = _routes()
    assert {"/livez", "/readyz", "/metrics"} <= routes
    port = int(CONFIG.get("CAPILLARY_AEP_HEALTH__PORT", HealthSettings().port))
    ports = {p["name"]: p["containerPort"] for p in CONTAINER["ports"]}
    assert CONTAINER["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert CONTAINER["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert ports[CONTAINER[probe]["httpGet"]["port"]] == port
    service = BASE_DOCS[("Service", "capillary-aep-worker-metrics")]
    (service_port,) = service["spec"]["ports"]
    assert ports[service_port["targetPort"]] == port
    selector = service["spec"]["selector"]
    assert selector.items() <= DEPLOYMENT["spec"]["template"]["metadata"]["labels"].items()
    monitor = BASE_DOCS[("ServiceMonitor", "capillary-aep-worker")]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service_port["name"] and endpoint["path"] in routes
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    # the liveness window must close before the group evicts a silent member
    assert HealthSettings().live_threshold(int(CONFIG["CAPILLARY_AEP_KAFKA__MAX_POLL_INTERVAL_MS"])) \
        * 1000 < int(CONFIG["CAPILLARY_AEP_KAFKA__MAX_POLL_INTERVAL_MS"])


def test_grace_period_outlasts_the_drain() -> None:
    drain = float(CONFIG["CAPILLARY_AEP_SHUTDOWN__DRAIN_TIMEOUT_S"])
    revoke = float(CONFIG["CAPILLARY_AEP_SHUTDOWN__REVOKE_DRAIN_TIMEOUT_S"])
    commit_retry = float(CONFIG["CAPILLARY_AEP_SHUTDOWN__COMMIT_RETRY_S"])
    assert POD["terminationGracePeriodSeconds"] > drain + revoke + commit_retry
    worker = _load(COMPOSE)[0]["services"]["worker"]
    grace = int(worker["stop_grace_period"].removesuffix("s"))
    assert grace > float(worker["environment"]["CAPILLARY_AEP_SHUTDOWN__DRAIN_TIMEOUT_S"])


def test_pod_is_locked_down_and_sized() -> None:
    ctx = CONTAINER["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert POD["securityContext"]["runAsNonRoot"] is True
    assert POD["securityContext"]["runAsUser"] != 0
    resources = CONTAINER["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert {"cpu", "memory"} <= resources["limits"].keys()
    pdb = BASE_DOCS[("PodDisruptionBudget", "capillary-aep-worker")]
    assert pdb["spec"]["selector"]["matchLabels"] == DEPLOYMENT["spec"]["selector"]["matchLabels"]


def test_autoscaling_is_capped_at_the_partition_count() -> None:
    base = BASE_DOCS[("ScaledObject", "capillary-aep-worker")]
    overlay = _patches(OVERLAY)[("ScaledObject", "capillary-aep-worker")]
    for doc in (base, overlay):
        partitions = int(doc["metadata"]["annotations"]["capillary-aep/input-partitions"])
        assert doc["spec"]["maxReplicaCount"] == partitions
        (trigger,) = doc["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["allowIdleConsumers"] == "false"
        assert trigger["metadata"]["consumerGroup"] == CONFIG["CAPILLARY_AEP_KAFKA__GROUP_ID"]
        assert [trigger["metadata"]["topic"]] == json.loads(CONFIG["CAPILLARY_AEP_KAFKA__TOPICS"])
    assert base["spec"]["minReplicaCount"] >= 1
    assert base["spec"]["scaleTargetRef"]["name"] == DEPLOYMENT["metadata"]["name"]
    auth = BASE_DOCS[("TriggerAuthentication", "capillary-aep-worker-kafka")]
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in SECRET["stringData"]


# -- alerts and dashboard ------------------------------------------------------------------

_METRIC = re.compile(r"\bcapaep_[a-z0-9_]+")


def test_alert_expressions_name_existing_metrics() -> None:
    known = set(metric_names(Metrics()))
    rules = BASE_DOCS[("PrometheusRule", "capillary-aep-worker")]["spec"]["groups"][0]["rules"]
    alerts = {r["alert"]: r["expr"] for r in rules}
    for name, expr in alerts.items():
        used = set(_METRIC.findall(expr))
        assert used, name
        assert used <= known, (name, used - known)
    wanted = {  # the alerts the docs promise
        "capaep_records_dead_lettered_total", "capaep_dlq_guard_tripped",
        "capaep_delivery_blocked", "capaep_consumer_lag", "capaep_oldest_unfinished_age_seconds",
        "capaep_token_failures_total", "capaep_end_to_end_seconds_bucket",
    }
    assert wanted <= set(_METRIC.findall(" ".join(alerts.values())))


def test_dashboard_panels_name_existing_metrics() -> None:
    known = set(metric_names(Metrics()))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    used = set()
    for expr in exprs:
        names = set(_METRIC.findall(expr))
        assert names and names <= known, (expr, names - known)
        used |= names
    assert len({n.removesuffix("_total").removesuffix("_bucket") for n in used}) >= 20


def test_metric_names_helper_knows_the_sample_names() -> None:
    known = set(metric_names(Metrics()))
    assert "capaep_records_consumed_total" in known
    assert "capaep_end_to_end_seconds_bucket" in known and "capaep_consumer_lag" in known
    assert "capaep_consumer_lag_total" not in known


# -- container -----------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_entry_point_and_paths_exist() -> None:
    steps = _dockerfile()
    froms = [i for i, (w, _) in enumerate(steps) if w == "FROM"]
    assert len(froms) >= 2  # multi-stage
    final = steps[froms[-1]:]
    arg_default = dict(a.split("=", 1) for w, a in steps if w == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", arg_default["PYTHON_IMAGE"])
    assert all(a.startswith("${PYTHON_IMAGE}") for w, a in steps if w == "FROM")

    (entry,) = [json.loads(a) for w, a in final if w == "ENTRYPOINT"]
    assert entry == ["capillary-aep", "run"]  # exec form
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[entry[0]] == "worker.cli:main" and entry[1] in COMMANDS

    (user,) = [a for w, a in final if w == "USER"]
    assert int(user.split(":")[0]) > 0
    assert not any("apt-get install" in a or "/uv" in a for w, a in final if w in ("RUN", "COPY"))

    for w, a in steps:
        if w == "COPY" and "--from" not in a:
            *sources, _dest = a.split()
            for src in sources:
                assert (ROOT / src).exists(), src
    assert any(w == "RUN" and "uv sync --frozen" in a for w, a in steps)
    # schemas must sit next to the package, where worker/schemas.py looks for them
    assert any(w == "COPY" and a.split()[:1] == ["schemas"] for w, a in steps)

    (check,) = [a for w, a in final if w == "HEALTHCHECK"]
    cmd = json.loads(check[check.index("CMD") + 3:].strip())
    assert "/livez" in cmd[-1] and str(HealthSettings().port) in cmd[-1]
    assert [a for w, a in final if w == "EXPOSE"] == [str(HealthSettings().port)]


def test_dockerignore_lets_the_copied_paths_through() -> None:
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {ln.removeprefix("!").removesuffix("/**") for ln in lines if ln.startswith("!")}
    copied = {a.split()[0] for w, a in _dockerfile() if w == "COPY" and "--from" not in a}
    copied |= {s for w, a in _dockerfile() if w == "COPY" and "--from" not in a
               for s in a.split()[:-1]}
    assert copied <= allowed


def test_compose_services_use_the_image_and_real_commands() -> None:
    services = _load(COMPOSE)[0]["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name in ("sandbox", "producer", "worker"):
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        entry = services[name].get("entrypoint", ["capillary-aep", "run"])
        assert entry[0] == "capillary-aep" and entry[1] in COMMANDS, name
    topics = " ".join(services["topics"]["command"])
    worker_env = services["worker"]["environment"]
    for topic in [*json.loads(worker_env["CAPILLARY_AEP_KAFKA__TOPICS"]),
                  worker_env["CAPILLARY_AEP_KAFKA__DLQ_TOPIC"]]:
        assert f"--topic {topic}" in topics
    assert f"--topic {json.loads(worker_env['CAPILLARY_AEP_KAFKA__TOPICS'])[0]}" in " ".join(
        services["producer"]["command"]
    )


def test_dockerfile_compiles_the_hot_path_in_the_build_stage_only() -> None:
    steps = _dockerfile()
    froms = [i for i, (w, _) in enumerate(steps) if w == "FROM"]
    build, final = steps[froms[0]:froms[-1]], steps[froms[-1]:]
    (compile_step,) = [a for w, a in build if w == "RUN" and "deploy/mypyc/build.py" in a]
    # the compile group (mypy, setuptools) in, compiled in place, then synced away again
    assert compile_step.index("--group compile") < compile_step.index("build.py --in-place")
    assert compile_step.rindex("uv sync --frozen --no-dev") > compile_step.index("--in-place")
    # the shared <hash>__mypyc library sits in /app: only an editable install puts it on sys.path
    assert "--no-editable" not in " ".join(a for _, a in steps)
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    assert any(d.startswith("mypy") for d in groups["compile"])
    assert any(d.startswith("setuptools") for d in groups["compile"])
    env = " ".join(a for w, a in final if w == "ENV")
    assert "MALLOC_ARENA_MAX=2" in env
