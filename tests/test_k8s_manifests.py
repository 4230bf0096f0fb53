"""The Kubernetes manifests under k8s/, checked offline: schema (Kubernetes 1.30, strict), the
kustomizations, the operational invariants read from the parsed YAML, and the production example
overlays as the real kustomize builds them. No cluster, no PostgreSQL."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import kubernetes_validate
import pytest
import yaml

from reconcile.settings import (
    _SPECS,
    ENV_MARKETPLACE_FALLBACK,
    ENV_MARKETPLACE_URL,
    ENV_PRODUCT_URL,
    Settings,
    load_settings,
)
from reconcile.shard import MAX_SHARDS, Shard
from tests.k8stools import (
    EXAMPLES,
    K8S,
    KUSTOMIZATION,
    REPO,
    Workload,
    all_docs,
    component_dirs,
    example_dirs,
    kustomization_dirs,
    kustomization_of,
    kustomize_build,
    kustomize_command,
    load_docs,
    manifest_files,
    quantity,
    workloads,
    workloads_of,
)

K8S_VERSION = "1.30.0"
APP_LABEL = ("app.kubernetes.io/name", "tenant-reconcile")
CONTAINER = "reconcile"
CONFIG_SOURCE = REPO / "config" / "reconcile.toml"
CONFIG_COPY = K8S / "base" / "reconcile.toml"
SECRET_TEMPLATE = K8S / "secret.template.yaml"
SIZING_DOC = REPO / "docs" / "performance.md"

# Figures the resources are sized from (the benchmark; docs/performance.md "Sizing a pod").
BENCHMARK_PEAK_RSS = 150 * 2**20          # target peak RSS, flat with the tenant count
SPOOL_BYTES_PER_TENANT_PER_SIDE = 60      # snapshot temp files in $TMPDIR
SIZED_FOR_TENANTS = 10_000_000
SLOWEST_MEASURED_RUN_S = 14               # 10M tenants, local PG15

# What a pod may do on each exit code: 2 config, 3 partial, 5 guard, 6 lock are not
# retried; 1 internal and 7 DB failure are (Count, or no rule, which counts too).
NOT_RETRIED = {"FailJob", "FailIndex"}
RETRIED = {"Count", None}

KNOWN_ENV = (
    {spec.env for spec in _SPECS if spec.env}
    | {f"{ENV_PRODUCT_URL}_FILE", f"{ENV_MARKETPLACE_URL}_FILE"}
    | {"RECONCILE_CONFIG", "RECONCILE_SHARD_COUNT", "TMPDIR"}
)
# The URLs themselves (the manifests read them from files; the examples from a Secret's keys).
URL_ENV = {ENV_PRODUCT_URL, ENV_MARKETPLACE_URL, ENV_MARKETPLACE_FALLBACK}
# API groups of custom resources (kube-prometheus-stack's CRDs), outside the Kubernetes schema.
CUSTOM_API_GROUPS = {"monitoring.coreos.com"}
EXPECTED_COMMAND = {
    "CronJob/tenant-reconcile": "run",
    "Job/tenant-reconcile-check": "check",
    "Job/tenant-reconcile-plan": "plan",
    "Job/tenant-reconcile-sharded": "run",
    "Deployment/tenant-reconcile-scheduler": "schedule",
}

WORKLOADS = workloads()
JOBS = [w for w in WORKLOADS if w.job_spec is not None]

# The example overlays, built by the real kustomize (they use namespace, images, patches and
# components, which only kustomize itself applies faithfully). kubectl is part of every machine this
# project is developed and tested on; without it these are empty and one test says so.
BUILT_EXAMPLES = {d: kustomize_build(d) for d in example_dirs()} if kustomize_command() else {}
EXAMPLE_WORKLOADS = [w for d, docs in BUILT_EXAMPLES.items() for w in workloads_of([(d, doc) for doc in docs])]
EXAMPLE_JOBS = [w for w in EXAMPLE_WORKLOADS if w.job_spec is not None]
PRODUCTION = EXAMPLES / "production"
# What each example overlay sets RECONCILE_LOG_FORMAT to (the ECS one exists to change it).
EXAMPLE_LOG_FORMAT = {"production": "json", "production/check": "json", "production-ecs": "ecs"}
# The Prisma-form URL keybuzz-backend's pods have in DATABASE_URL, and the product URL.
SECRET_VALUES = {
    "PRODUCT_DATABASE_URL": "postgresql://reconcile_ro:pw@pg-haproxy:5432/keybuzz_prod",
    "DATABASE_URL": "postgresql://reconcile:pw@pg-haproxy:5432/keybuzz_backend_prod"
                    "?schema=public&connection_limit=5&pool_timeout=10",
}


def label_of(w: Workload) -> str:
    return f"{w.path.relative_to(K8S)}:{w.label}" if w.path.is_dir() else w.label


def by_label(items: list[Workload]) -> dict[str, Any]:
    return {"argvalues": items, "ids": [label_of(w) for w in items]}


def kustomization(directory: Path) -> dict[str, Any]:
    return kustomization_of(directory)


def render(directory: Path) -> list[dict[str, Any]]:
    """What kustomize would build from `directory`, minus the name hash: the referenced files and
    bases loaded, ConfigMaps generated from their files. Fails on anything kustomize would refuse
    (missing file, file outside the kustomization root) or that these manifests do not expect."""
    data = kustomization(directory)
    assert data.get("apiVersion") == "kustomize.config.k8s.io/v1beta1" and data.get("kind") == "Kustomization"
    assert set(data) <= {"apiVersion", "kind", "resources", "configMapGenerator"}, (
        f"{directory}: unexpected kustomization fields {set(data)}")
    docs: list[dict[str, Any]] = []
    for entry in data.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            assert (target / KUSTOMIZATION).is_file(), f"{directory}: {entry} has no {KUSTOMIZATION}"
            docs += render(target)
        else:
            assert target.is_file(), f"{directory}: resource {entry} does not exist"
            assert target.is_relative_to(directory.resolve()), f"{directory}: {entry} is outside the root"
            docs += load_docs(target)
    for generator in data.get("configMapGenerator", []):
        files: dict[str, str] = {}
        for entry in generator["files"]:
            key, _, source = entry.rpartition("=") if "=" in entry else (Path(entry).name, "", entry)
            path = (directory / source).resolve()
            assert path.is_relative_to(directory.resolve()), f"{directory}: {entry} is outside the root"
            files[key] = path.read_text(encoding="utf-8")
        labels = generator.get("options", {}).get("labels", {})
        docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": generator["name"], "labels": labels}, "data": files})
    return docs


def exit_code_action(job_spec: dict[str, Any], code: int, container: str = CONTAINER) -> str | None:
    """The podFailurePolicy action Kubernetes takes when `container` exits with `code`: the first
    matching rule wins; None means no rule matched (the failure counts against the backoff limit)."""
    for rule in job_spec.get("podFailurePolicy", {}).get("rules", []):
        on_codes = rule.get("onExitCodes")
        if not on_codes or on_codes.get("containerName", container) != container:
            continue
        values = on_codes["values"]
        matched = code in values if on_codes["operator"] == "In" else code not in values
        if matched:
            return rule["action"]
    return None


# -- schema and kustomize ------------------------------------------------------------------------

def is_custom_resource(doc: dict[str, Any]) -> bool:
    """A resource of a CRD (PrometheusRule, ServiceMonitor): not in Kubernetes' own schema, so
    tests/test_monitoring.py checks its structure instead."""
    return doc["apiVersion"].split("/")[0] in CUSTOM_API_GROUPS


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_validates_against_kubernetes_1_30_strict(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path} holds no resource"
    for doc in docs:
        if is_custom_resource(doc):
            continue
        # Strict: an unknown or misspelt field is an error, not silently dropped by the API server.
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.30"


def test_only_the_monitoring_crds_skip_the_schema() -> None:
    custom = {(doc["apiVersion"], doc["kind"]) for _, doc in all_docs() if is_custom_resource(doc)}
    assert custom == {("monitoring.coreos.com/v1", "PrometheusRule"), ("monitoring.coreos.com/v1", "ServiceMonitor")}
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # why they cannot go through it
        kubernetes_validate.validate(next(d for _, d in all_docs() if is_custom_resource(d)), K8S_VERSION,
                                     strict=True)


def test_the_strict_validation_rejects_a_misspelt_field() -> None:
    doc = copy.deepcopy(WORKLOADS[0].doc)
    doc["spec"]["concurrencyPolicyy"] = "Forbid"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda p: str(p.relative_to(K8S)) or ".")
def test_kustomization_renders_and_its_references_resolve(directory: Path) -> None:
    docs = render(directory)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert len(names) == len(docs), f"{directory}: duplicate resources"
    secret_name = load_docs(SECRET_TEMPLATE)[0]["metadata"]["name"]
    for doc in docs:
        assert doc["kind"] != "Secret", f"{directory}: applying it would overwrite the real Secret"
    rendered = [w for w in WORKLOADS if (w.kind, w.name) in names]
    # Never two ways of running at once (CronJob + scheduler would reconcile twice a night).
    assert len(rendered) <= 1, f"{directory} applies {[w.label for w in rendered]}"
    for w in rendered:
        config_volume, _ = w.mount_of("configMap")
        assert ("ConfigMap", config_volume["configMap"]["name"]) in names
        assert ("ServiceAccount", w.pod_spec["serviceAccountName"]) in names
        secret_volume, _ = w.mount_of("secret")
        assert secret_volume["secret"]["secretName"] == secret_name  # created out of band


def test_every_workload_is_reachable_from_a_kustomization() -> None:
    rendered = {(d["kind"], d["metadata"]["name"]) for directory in kustomization_dirs()
                for d in render(directory)}
    assert {(w.kind, w.name) for w in WORKLOADS} <= rendered
    assert any(d["kind"] == "CronJob" for d in render(K8S)), "`kubectl apply -k k8s/` must install the CronJob"


def test_configmap_source_is_config_reconcile_toml_verbatim() -> None:
    # kustomize cannot read ../config/ from k8s/, so k8s/base keeps a copy; it must not drift.
    assert CONFIG_COPY.read_bytes() == CONFIG_SOURCE.read_bytes(), (
        f"{CONFIG_COPY.relative_to(REPO)} differs from {CONFIG_SOURCE.relative_to(REPO)}: "
        f"cp {CONFIG_SOURCE.relative_to(REPO)} {CONFIG_COPY.relative_to(REPO)}")
    # ...and what it ships is a config the program accepts.
    settings = load_settings(config_file=str(CONFIG_COPY), env={})
    assert settings.config_file == str(CONFIG_COPY)


@pytest.mark.skipif(kustomize_command() is None, reason="neither kustomize nor kubectl on PATH")
@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda p: str(p.relative_to(K8S)) or ".")
def test_kustomize_build_output_validates_and_keeps_the_manifests(directory: Path) -> None:
    command = kustomize_command()
    assert command is not None
    built = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    for doc in docs:
        if not is_custom_resource(doc):
            assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.30"
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] != "ConfigMap") == sorted(
        (d["kind"], d["metadata"]["name"]) for d in render(directory) if d["kind"] != "ConfigMap")
    config_maps = [d for d in docs if d["kind"] == "ConfigMap"]
    assert len(config_maps) == sum(1 for d in render(directory) if d["kind"] == "ConfigMap") <= 1
    if not config_maps:  # k8s/monitoring: no workload, no config
        return
    generated = config_maps[0]
    assert generated["data"]["reconcile.toml"] == CONFIG_SOURCE.read_text(encoding="utf-8")
    # The hashed name reaches the workload, and nothing else in it changed.
    originals = {(w.kind, w.name): w for w in WORKLOADS}
    for doc in docs:
        original = originals.get((doc["kind"], doc["metadata"]["name"]))
        if original is None:
            continue
        expected = copy.deepcopy(original.doc)
        pod = (expected["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else expected["spec"])
        for volume in pod["template"]["spec"]["volumes"]:
            if "configMap" in volume:
                assert generated["metadata"]["name"].startswith(volume["configMap"]["name"] + "-")
                volume["configMap"]["name"] = generated["metadata"]["name"]
        assert doc == expected


# -- what every manifest shares ----------------------------------------------------------------------

def test_manifests_are_namespace_agnostic_and_labelled() -> None:
    for path, doc in all_docs():
        assert doc["kind"] != "Namespace", path
        assert "namespace" not in doc["metadata"], f"{path}: {doc['kind']} pins a namespace"
        assert doc["metadata"].get("labels", {}).get(APP_LABEL[0]) == APP_LABEL[1], path
    for directory in kustomization_dirs():
        assert "namespace" not in kustomization(directory), directory
        for doc in render(directory):
            assert doc["metadata"]["labels"].get(APP_LABEL[0]) == APP_LABEL[1], doc["metadata"]["name"]


@pytest.mark.parametrize("w", **by_label(WORKLOADS + EXAMPLE_WORKLOADS))
def test_pod_is_non_root_with_a_read_only_root_filesystem(w: Workload) -> None:
    pod = w.pod_spec
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert isinstance(security["runAsUser"], int) and security["runAsUser"] > 0
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert not any("hostPath" in v for v in pod.get("volumes", []))
    container = w.container
    assert container["name"] == CONTAINER  # the podFailurePolicy rules name it
    csc = container["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc.get("privileged", False) is False
    assert csc["capabilities"]["drop"] == ["ALL"] and not csc["capabilities"].get("add")


@pytest.mark.parametrize("w", **by_label(WORKLOADS + EXAMPLE_WORKLOADS))
def test_tmpdir_is_a_disk_backed_emptydir_big_enough_for_the_snapshots(w: Workload) -> None:
    env = w.env()
    assert env["TMPDIR"] == "/tmp"
    mounts = {m["mountPath"]: m for m in w.container["volumeMounts"]}
    volume = w.volume(mounts[env["TMPDIR"]]["name"])
    empty_dir = volume["emptyDir"]
    # medium Memory would put the spool files in the container's memory limit.
    assert empty_dir.get("medium", "") == ""
    needed = 2 * SPOOL_BYTES_PER_TENANT_PER_SIDE * SIZED_FOR_TENANTS
    assert quantity(empty_dir["sizeLimit"]) >= needed


@pytest.mark.parametrize("w", **by_label(WORKLOADS))
def test_database_urls_come_from_files_of_the_secret_volume(w: Workload) -> None:
    env = w.env()
    assert ENV_PRODUCT_URL not in env and ENV_MARKETPLACE_URL not in env  # X and X_FILE both set: exit 2
    secret = load_docs(SECRET_TEMPLATE)[0]
    volume, mount = w.mount_of("secret")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert mount["readOnly"] is True
    items = {item["path"]: item["key"] for item in volume["secret"]["items"]}
    file_vars = {name: value for name, value in env.items() if name.endswith("_FILE")}
    assert set(file_vars) == {f"{ENV_PRODUCT_URL}_FILE", f"{ENV_MARKETPLACE_URL}_FILE"}
    used_keys = set()
    for name, value in file_vars.items():
        directory, _, filename = value.rpartition("/")
        assert directory == mount["mountPath"], f"{name}={value} is not under {mount['mountPath']}"
        assert filename in items, f"{name}: {filename} is not a file of the Secret volume"
        used_keys.add(items[filename])
    assert used_keys == set(secret["stringData"]), "Secret keys and mounted files disagree"
    # The process (runAsUser, not root) must be able to read the files, and nobody write them.
    mode = volume["secret"].get("defaultMode", 0o644)
    assert not mode & 0o222
    group_readable = mode & 0o040 and w.pod_spec["securityContext"].get("fsGroup") is not None
    assert mode & 0o004 or group_readable, f"mode {mode:o} is unreadable for UID {w.pod_spec['securityContext']}"


@pytest.mark.parametrize("w", **by_label(WORKLOADS))
def test_reconcile_config_points_at_the_mounted_configmap_file(w: Workload) -> None:
    volume, mount = w.mount_of("configMap")
    assert mount["readOnly"] is True
    generator = kustomization(K8S / "base")["configMapGenerator"][0]
    assert volume["configMap"]["name"] == generator["name"]
    assert w.env()["RECONCILE_CONFIG"] == f"{mount['mountPath']}/{Path(generator['files'][0]).name}"


@pytest.mark.parametrize("w", **by_label(WORKLOADS))
def test_environment_names_are_settings_the_program_reads(w: Workload) -> None:
    for entry in w.container["env"]:
        assert "value" in entry and "valueFrom" not in entry, f"{entry['name']}: secrets go through files"
        assert entry["name"] in KNOWN_ENV, f"{entry['name']} is not read by tenant-reconcile (typo?)"
    assert "JOB_COMPLETION_INDEX" not in w.env(), "Kubernetes sets it per pod; a literal pins every pod"


@pytest.mark.parametrize("w", **by_label(WORKLOADS))
def test_the_settings_loader_accepts_the_pod_environment(w: Workload, tmp_path: Path) -> None:
    """The pod's env, with its mount paths moved under tmp_path, through the real load_settings."""
    mounts = {m["mountPath"]: tmp_path / m["name"] for m in w.container["volumeMounts"]}
    secret_volume, secret_mount = w.mount_of("secret")
    urls = {"product-url": "postgresql://reconcile:pw@product-db:5432/keybuzz",
            "marketplace-url": "postgresql://reconcile:pw@marketplace-db:5432/keybuzz_backend"}
    mounts[secret_mount["mountPath"]].mkdir()
    for item in secret_volume["secret"]["items"]:
        (mounts[secret_mount["mountPath"]] / item["path"]).write_text(urls[item["key"]] + "\n")
    _, config_mount = w.mount_of("configMap")
    mounts[config_mount["mountPath"]].mkdir()
    shutil.copy(CONFIG_COPY, mounts[config_mount["mountPath"]] / CONFIG_COPY.name)

    env = {}
    for name, value in w.env().items():
        for mount_path, local in mounts.items():
            if value.startswith(mount_path + "/"):
                value = str(local / value.removeprefix(mount_path + "/"))
                break
        env[name] = value
    count = int(env.get("RECONCILE_SHARD_COUNT", "1"))
    for index in range(count):
        pod_env = {**env, "JOB_COMPLETION_INDEX": str(index)} if w.job_spec and count > 1 else env
        settings = load_settings(env=pod_env)
        assert settings.product_url is not None and settings.product_url.display == "product-db:5432/keybuzz"
        assert settings.marketplace_url is not None
        assert settings.marketplace_url.display == "marketplace-db:5432/keybuzz_backend"
        assert settings.config_file == env["RECONCILE_CONFIG"]
        assert settings.log_format == env["RECONCILE_LOG_FORMAT"]
        assert settings.connect_retry_s == float(env["RECONCILE_CONNECT_RETRY"])
        assert settings.shard == Shard(index, count)


@pytest.mark.parametrize("w", **by_label(WORKLOADS + EXAMPLE_WORKLOADS))
def test_resources_are_set_and_sized_from_the_benchmark(w: Workload) -> None:
    resources = w.container["resources"]
    for kind in ("cpu", "memory"):
        assert quantity(resources["requests"][kind]) <= quantity(resources["limits"][kind]), kind
    assert quantity(resources["requests"]["memory"]) >= BENCHMARK_PEAK_RSS
    assert quantity(resources["limits"]["memory"]) > quantity(resources["requests"]["memory"])
    # One set of figures for every variant, and the sizing table of docs/performance.md states them.
    assert resources == WORKLOADS[0].container["resources"]
    sizing = SIZING_DOC.read_text(encoding="utf-8").partition("## Sizing a pod")[2]
    volume = w.volume(next(m["name"] for m in w.container["volumeMounts"] if m["mountPath"] == "/tmp"))
    for figure in (*resources["requests"].values(), *resources["limits"].values(), volume["emptyDir"]["sizeLimit"]):
        assert f"| `{figure}` |" in sizing, f"{SIZING_DOC.relative_to(REPO)} does not give the figure {figure}"


def test_pod_templates_differ_only_where_documented() -> None:
    """The pod template is repeated in each manifest; the copies must not drift apart."""
    def normalized(w: Workload) -> dict[str, Any]:
        pod = copy.deepcopy(w.pod_spec)
        for key in ("restartPolicy", "terminationGracePeriodSeconds"):
            pod.pop(key, None)
        container = pod["containers"][0]
        container.pop("args")
        # The scheduler's metrics port and the probes that read its /healthz (a Job serves nothing).
        for key in ("ports", "readinessProbe", "livenessProbe"):
            container.pop(key, None)
        # The shard count, and the per-shard guard that goes with it (see the Indexed Job test).
        container["env"] = [e for e in container["env"]
                            if e["name"] not in ("RECONCILE_SHARD_COUNT", "RECONCILE_MAX_ARCHIVE")]
        return pod

    reference = normalized(WORKLOADS[0])
    for w in WORKLOADS[1:]:
        assert normalized(w) == reference, f"{w.label} drifted from {WORKLOADS[0].label}"


def test_one_image_everywhere_tagged_with_the_project_version() -> None:
    with (REPO / "pyproject.toml").open("rb") as fh:
        project = tomllib.load(fh)["project"]
    images = {w.container["image"] for w in WORKLOADS}
    assert images == {f"tenant-reconcile:{project['version']}"}
    assert "tenant-reconcile" in project["scripts"]
    for w in WORKLOADS:
        assert w.container["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.parametrize("w", **by_label(WORKLOADS + EXAMPLE_WORKLOADS))
def test_each_workload_runs_the_intended_command(w: Workload) -> None:
    from jobs.cli import cli

    container = w.container
    assert "command" not in container, "the image's ENTRYPOINT is tenant-reconcile"
    args = container["args"]
    assert args[0] == EXPECTED_COMMAND[w.label]
    command = cli.commands.get(args[0])
    if command is not None:  # `schedule` lands on another branch; when present, click must accept the args
        command.make_context(args[0], list(args[1:]))


# -- the Jobs ----------------------------------------------------------------------------------------

def test_cronjob_runs_nightly_once_at_a_time() -> None:
    [cron] = [w for w in WORKLOADS if w.kind == "CronJob"]
    spec = cron.doc["spec"]
    assert spec["schedule"] == "0 2 * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    # Kubernetes may never start a Job whose deadline is under 10 s.
    assert spec["startingDeadlineSeconds"] >= 10
    # A late start plus a full run ends before the next night's run is due.
    assert spec["startingDeadlineSeconds"] + cron.job_spec["activeDeadlineSeconds"] < 24 * 3600
    # Same time as the `schedule` mode's default, so switching modes does not move the run.
    with CONFIG_SOURCE.open("rb") as fh:
        schedule = tomllib.load(fh)["schedule"]
    assert spec["schedule"] == schedule["cron"]
    for moment in (datetime(2026, 1, 15, 2), datetime(2026, 7, 15, 2)):
        assert (ZoneInfo(spec["timeZone"]).utcoffset(moment)
                == ZoneInfo(schedule["timezone"]).utcoffset(moment))


@pytest.mark.parametrize("w", **by_label(JOBS + EXAMPLE_JOBS))
def test_jobs_are_bounded_in_time_retries_and_lifetime(w: Workload) -> None:
    spec = w.job_spec
    assert spec is not None
    assert 0 < spec["activeDeadlineSeconds"] <= 3600
    assert spec["ttlSecondsAfterFinished"] > 0
    retries = spec.get("backoffLimitPerIndex", spec.get("backoffLimit"))
    assert retries is not None and 0 < retries <= 3
    assert w.pod_spec["restartPolicy"] == "Never"  # podFailurePolicy requires it


@pytest.mark.parametrize("w", **by_label(JOBS + EXAMPLE_JOBS))
def test_pod_failure_policy_retries_only_what_a_retry_can_fix(w: Workload) -> None:
    spec = w.job_spec
    assert spec is not None
    indexed = spec.get("completionMode") == "Indexed"
    # 2: a config error is the same on every retry and, for shards, in every shard.
    assert exit_code_action(spec, 2) == "FailJob"
    for code in (5, 6):
        # Guard abort / lock held: not retried; a shard's own outcome may fail just that index.
        assert exit_code_action(spec, code) in (NOT_RETRIED if indexed else {"FailJob"}), code
    # 3 partial: everything else is committed; row errors recur, conflicts wait for the next run.
    assert exit_code_action(spec, 3) in NOT_RETRIED
    for code in (1, 7):
        assert exit_code_action(spec, code) in RETRIED, code
    assert exit_code_action(spec, 7) == "Count"  # spelt out, not left to the default
    rules = spec["podFailurePolicy"]["rules"]
    assert {"type": "DisruptionTarget", "status": "True"} in [
        c for r in rules if r["action"] == "Ignore" for c in r.get("onPodConditions", [])]
    # The API server (not the schema) insists on these:
    if any(r["action"] == "FailIndex" for r in rules):
        assert indexed and "backoffLimitPerIndex" in spec
    for rule in rules:
        if "onExitCodes" in rule:
            assert 0 not in rule["onExitCodes"]["values"]
            assert rule["onExitCodes"]["containerName"] == CONTAINER


def test_indexed_job_shard_count_matches_completions_and_parallelism() -> None:
    [sharded] = [w for w in JOBS if w.job_spec and w.job_spec.get("completionMode") == "Indexed"]
    spec = sharded.job_spec
    assert spec is not None
    count = int(sharded.env()["RECONCILE_SHARD_COUNT"])
    assert 2 <= count <= MAX_SHARDS
    # Fewer completions would leave shards unreconciled; fewer pods at once would serialize them.
    assert spec["completions"] == count
    assert spec["parallelism"] == count
    # The guard is per run: the shards together must not archive more than one whole run may.
    assert int(sharded.env()["RECONCILE_MAX_ARCHIVE"]) * count <= Settings().max_archive


def test_deployment_runs_exactly_one_scheduler() -> None:
    [deployment] = [w for w in WORKLOADS if w.kind == "Deployment"]
    spec = deployment.doc["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}  # no rolling overlap of two schedulers
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert deployment.pod_spec.get("restartPolicy", "Always") == "Always"
    # Long enough for an in-flight run to finish after SIGTERM, with a wide margin.
    assert deployment.pod_spec["terminationGracePeriodSeconds"] >= 10 * SLOWEST_MEASURED_RUN_S


# -- the Secret template -----------------------------------------------------------------------------

def test_secret_template_holds_placeholders_only() -> None:
    [secret] = load_docs(SECRET_TEMPLATE)
    assert secret["kind"] == "Secret"
    assert "data" not in secret, "base64 data would hide real values from review"
    assert secret["stringData"]
    for key, value in secret["stringData"].items():
        url = urlsplit(value)
        assert url.scheme == "postgresql", key
        for part in (url.username, url.password):
            assert part is not None and part.startswith("<") and part.endswith(">"), (
                f"{key}: {part!r} is not a <PLACEHOLDER>")
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    assert "kubectl create secret generic " + secret["metadata"]["name"] in readme


def describing_readme(path: Path) -> Path:
    """The README.md nearest above `path` within k8s/: k8s/monitoring/README.md describes its folder."""
    directory = path.parent
    while directory != K8S and not (directory / "README.md").is_file():
        directory = directory.parent
    return directory / "README.md"


def test_k8s_readme_describes_every_file() -> None:
    for path in sorted(p for p in K8S.rglob("*") if p.is_file() and p.name != "README.md"):
        readme = describing_readme(path)
        name = str(path.relative_to(readme.parent))
        assert name in readme.read_text(encoding="utf-8"), f"{readme.relative_to(REPO)} does not mention {name}"


# -- the production example overlays (k8s/examples), as the real kustomize builds them ---------------

def test_kustomize_is_there_to_build_the_examples() -> None:
    assert kustomize_command() is not None, "the example overlays need kubectl (or kustomize) on the PATH"
    assert {d.relative_to(EXAMPLES).as_posix() for d in BUILT_EXAMPLES} == set(EXAMPLE_LOG_FORMAT)
    assert len(EXAMPLE_WORKLOADS) == len(BUILT_EXAMPLES)


@pytest.mark.parametrize("directory", sorted(BUILT_EXAMPLES), ids=lambda p: str(p.relative_to(K8S)))
def test_example_builds_strictly_valid_objects_in_one_namespace(directory: Path) -> None:
    docs = BUILT_EXAMPLES[directory]
    namespace = kustomization_of(PRODUCTION / "site")["namespace"]  # set once, for every example
    for doc in docs:
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.30"
        assert doc["kind"] not in ("Secret", "Namespace"), f"{directory} must not create {doc['kind']}"
        assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]
        assert doc["metadata"]["labels"].get(APP_LABEL[0]) == APP_LABEL[1], doc["metadata"]["name"]
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config_map["data"]["reconcile.toml"] == CONFIG_SOURCE.read_text(encoding="utf-8")
    [w] = workloads_of([(directory, d) for d in docs])
    # The hashed ConfigMap name and the ServiceAccount resolve inside what is applied.
    volume, _ = w.mount_of("configMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"] != "tenant-reconcile-config"
    assert ("ServiceAccount", w.pod_spec["serviceAccountName"]) in {(d["kind"], d["metadata"]["name"]) for d in docs}


@pytest.mark.parametrize("w", **by_label(EXAMPLE_WORKLOADS))
def test_example_image_comes_from_a_registry_pinned_by_digest(w: Workload) -> None:
    image = w.container["image"]
    # `tenant-reconcile:0.1.0` is in no registry: a node can pull only a name with a registry host.
    registry, _, rest = image.partition("/")
    assert "." in registry or ":" in registry, f"{image}: no registry host"
    assert re.fullmatch(r"[a-z0-9._/-]*tenant-reconcile@sha256:[0-9a-f]{64}", rest), f"{image}: not pinned by digest"
    assert w.container["imagePullPolicy"] == "IfNotPresent"  # a digest never changes: pulled once per node


@pytest.mark.parametrize("w", **by_label(EXAMPLE_WORKLOADS))
def test_example_database_urls_come_from_secret_keys_and_nothing_else(w: Workload) -> None:
    literal, from_secret = w.env(), w.secret_env()
    assert set(from_secret) == {ENV_PRODUCT_URL, ENV_MARKETPLACE_FALLBACK}
    for name in URL_ENV:
        assert name not in literal, f"{name}: a URL as a literal value would put a password in the pod spec"
    assert not [name for name in literal if name.endswith("_FILE")], "X and X_FILE both set is exit 2"
    assert ENV_MARKETPLACE_URL not in from_secret  # it would win over DATABASE_URL
    for name in (*literal, *from_secret):
        assert name in KNOWN_ENV | URL_ENV, f"{name} is not read by tenant-reconcile (typo?)"
    # No volume left that names a Secret: a missing one keeps the pod in ContainerCreating.
    assert not [v for v in w.pod_spec["volumes"] if "secret" in v]
    assert {m["name"] for m in w.container["volumeMounts"]} == {v["name"] for v in w.pod_spec["volumes"]}


@pytest.mark.parametrize("w", **by_label(EXAMPLE_WORKLOADS))
def test_the_settings_loader_accepts_an_example_pod_environment(w: Workload, tmp_path: Path) -> None:
    """The pod's env with the Secret's keys filled in as External Secrets would (DATABASE_URL in the
    Prisma form of keybuzz-backend) and the ConfigMap mount moved under tmp_path, through the real
    load_settings."""
    _, config_mount = w.mount_of("configMap")
    local = tmp_path / "config"
    local.mkdir()
    shutil.copy(CONFIG_COPY, local / CONFIG_COPY.name)
    env = {name: value.replace(config_mount["mountPath"], str(local)) for name, value in w.env().items()}
    env.update({name: SECRET_VALUES[key] for name, (_, key) in w.secret_env().items()})
    settings = load_settings(env=env)
    assert (settings.product_from, settings.marketplace_from) == (ENV_PRODUCT_URL, ENV_MARKETPLACE_FALLBACK)
    product, market = settings.require_product(), settings.require_marketplace()
    assert product.display == "pg-haproxy:5432/keybuzz_prod"
    assert market.display == "pg-haproxy:5432/keybuzz_backend_prod"
    assert market.search_path == "public" and dict(market.url.query) == {}  # Prisma's parameters dropped
    assert settings.log_format == EXAMPLE_LOG_FORMAT[w.path.relative_to(EXAMPLES).as_posix()]
    assert settings.config_file == str(local / CONFIG_COPY.name)


def _without_site_settings(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A workload with what the examples change set aside: (the rest, its env by name)."""
    doc = copy.deepcopy(doc)
    doc["metadata"].pop("namespace", None)
    [w] = workloads_of([(K8S, doc)])
    container = w.container
    container.pop("image")
    env = {e["name"]: e for e in container.pop("env")}
    secret_mounts = {v["name"] for v in w.pod_spec["volumes"] if "secret" in v}
    w.pod_spec["volumes"] = [v for v in w.pod_spec["volumes"] if v["name"] not in secret_mounts]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] not in secret_mounts]
    for volume in w.pod_spec["volumes"]:
        if "configMap" in volume:
            volume["configMap"]["name"] = "tenant-reconcile-config"
    return doc, env


@pytest.mark.parametrize("w", **by_label(EXAMPLE_WORKLOADS))
def test_example_changes_only_namespace_image_url_source_and_log_format(w: Workload) -> None:
    [base] = [b for b in WORKLOADS if b.label == w.label]
    expected, base_env = _without_site_settings(base.doc)
    actual, env = _without_site_settings(w.doc)
    assert actual == expected
    kept = {name: entry for name, entry in base_env.items() if not name.endswith("_FILE")}
    kept["RECONCILE_LOG_FORMAT"] = {"name": "RECONCILE_LOG_FORMAT",
                                    "value": EXAMPLE_LOG_FORMAT[w.path.relative_to(EXAMPLES).as_posix()]}
    assert {name: entry for name, entry in env.items() if "valueFrom" not in entry} == kept


def test_every_component_is_used_by_an_example() -> None:
    used = {(d / c).resolve() for d in example_dirs() for c in kustomization_of(d).get("components", [])}
    assert set(component_dirs()) <= used


# -- a Job from the CronJob with other arguments: the recipe of k8s/README.md, step by step ----------

def readme_job_recipes() -> list[list[list[str]]]:
    """Every pipeline of k8s/README.md that patches a Job made from the CronJob: its stages as argv."""
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    logical = re.sub(r"\\\n\s*", " ", readme).splitlines()
    return [[shlex.split(stage) for stage in line.split(" | ")] for line in logical
            if "kubectl patch --local" in line and line.lstrip().startswith("kubectl create job")]


def job_from_cronjob(cron: dict[str, Any], name: str) -> dict[str, Any]:
    """The Job `kubectl create job NAME --from=cronjob/...` makes of the live CronJob (kubectl's
    createJobFromCronJob): the jobTemplate's spec and labels, the annotation
    cronjob.kubernetes.io/instantiate=manual and an owner reference to the CronJob."""
    template = cron["spec"]["jobTemplate"]
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": cron["metadata"]["namespace"],
                         "annotations": {"cronjob.kubernetes.io/instantiate": "manual",
                                         **template["metadata"].get("annotations", {})},
                         "labels": template["metadata"]["labels"],
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "controller": True,
                                              "name": cron["metadata"]["name"],
                                              "uid": "6d1f2b8e-3c4a-4e5f-9a0b-1c2d3e4f5a6b"}]},
            "spec": copy.deepcopy(template["spec"])}


def run_patch(argv: list[str], job: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=yaml.safe_dump(job), capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", "KUBECONFIG": "/nonexistent"})


RECIPES = readme_job_recipes()


def test_the_readme_gives_the_dry_run_and_the_forced_run_as_jobs_from_the_cronjob() -> None:
    args = [json.loads(stages[1][stages[1].index("-p") + 1])[-1]["value"] for stages in RECIPES]
    assert ["plan"] in args and ["run", "--force"] in args


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not on PATH")
@pytest.mark.parametrize("stages", RECIPES, ids=lambda s: " ".join(json.loads(s[1][s[1].index("-p") + 1])[-1]["value"]))
def test_a_job_from_the_cronjob_with_other_args_works_without_a_cluster(stages: list[list[str]]) -> None:
    """The README's pipeline: `kubectl create job --from=cronjob/...` (needs the cluster: reproduced
    here from the built production overlay), then its exact `kubectl patch --local` (run for real, no
    cluster needed), and what comes out is what `kubectl apply -f -` gets."""
    create, patch, apply = stages
    assert create[:3] == ["kubectl", "create", "job"] and "--from=cronjob/tenant-reconcile" in create
    assert "--dry-run=client" in create and create[create.index("-o") + 1] == "yaml"
    assert patch[:3] == ["kubectl", "patch", "--local"] and patch[patch.index("-o") + 1] == "yaml"
    assert apply[:2] == ["kubectl", "apply"] and apply[-2:] == ["-f", "-"]
    assert create[create.index("-n") + 1] == apply[apply.index("-n") + 1]
    docs = BUILT_EXAMPLES[PRODUCTION]
    [cron] = [d for d in docs if d["kind"] == "CronJob"]
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    job = job_from_cronjob(cron, "tenant-reconcile-forced-1764900000")

    done = run_patch(patch, job)
    assert done.returncode == 0, done.stderr
    patched = yaml.safe_load(done.stdout)
    assert kubernetes_validate.validate(patched, K8S_VERSION, strict=True) == "1.30"
    args = json.loads(patch[patch.index("-p") + 1])[-1]["value"]
    expected = copy.deepcopy(job)
    expected["spec"]["template"]["spec"]["containers"][0]["args"] = args
    assert patched == expected  # only the arguments changed
    from jobs.cli import cli

    cli.commands[args[0]].make_context(args[0], list(args[1:]))
    # The old recipe (a copied Job file, `kubectl apply -f`) named the ConfigMap without kustomize's
    # hash, and the pod waited in ContainerCreating; a Job from the live CronJob carries the real name.
    [w] = workloads_of([(PRODUCTION, patched)])
    volume, _ = w.mount_of("configMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]

    # The patch refuses a Job whose first container is not tenant-reconcile's, instead of changing it.
    other = copy.deepcopy(job)
    other["spec"]["template"]["spec"]["containers"].insert(0, {"name": "sidecar", "image": "busybox", "args": ["x"]})
    refused = run_patch(patch, other)
    assert refused.returncode != 0 and "test failed" in refused.stderr


# -- what k8s/README.md shows is what the files and the main README hold ------------------------------

def grant_statements(markdown: str) -> list[str]:
    """The GRANT statements of a Markdown text's SQL blocks, comments dropped, database names generic."""
    blocks = re.findall(r"```sql\n(.*?)```", markdown, re.S)
    statements = [line.split("--")[0].strip() for block in blocks for line in block.splitlines()]
    return sorted(re.sub(r"\bkeybuzz(_backend)?(_prod)?\b", lambda m: "DB" + (m.group(1) or ""), s)
                  for s in statements if s.startswith("GRANT"))


def test_the_install_grants_are_the_tested_grants_of_the_main_readme() -> None:
    install = grant_statements((K8S / "README.md").read_text(encoding="utf-8"))
    assert install and install == grant_statements((REPO / "README.md").read_text(encoding="utf-8"))
    assert not [s for s in install if "DELETE" in s or "ALL" in s]


def test_the_ecs_patch_shown_is_the_one_the_ecs_example_applies() -> None:
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    shown = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "value: ecs" in block]
    assert shown == [{"patches": kustomization(EXAMPLES / "production-ecs")["patches"]}]
