"""Reading the manifests under k8s/ for the offline tests: YAML documents, workloads, quantities."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "k8s"
KUSTOMIZATION = "kustomization.yaml"


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def manifest_files() -> list[Path]:
    """Every Kubernetes resource file under k8s/ (kustomization files are kustomize's, not the API's)."""
    files = sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml") and p.name != KUSTOMIZATION)
    assert files, f"no manifests under {K8S}"
    return files


def kustomization_dirs() -> list[Path]:
    dirs = sorted(p.parent for p in K8S.rglob(KUSTOMIZATION))
    assert dirs, f"no {KUSTOMIZATION} under {K8S}"
    return dirs


def all_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in manifest_files() for doc in load_docs(path)]


@dataclass(frozen=True)
class Workload:
    path: Path
    kind: str
    name: str
    doc: dict[str, Any]
    job_spec: dict[str, Any] | None  # the Job spec (CronJob: its jobTemplate), None for a Deployment
    pod_spec: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def container(self) -> dict[str, Any]:
        containers = self.pod_spec["containers"]
        assert len(containers) == 1, f"{self.label}: expected one container"
        return containers[0]

    def env(self) -> dict[str, str]:
        return {e["name"]: e["value"] for e in self.container.get("env", [])}

    def volume(self, name: str) -> dict[str, Any]:
        matches = [v for v in self.pod_spec.get("volumes", []) if v["name"] == name]
        assert len(matches) == 1, f"{self.label}: volume {name} defined {len(matches)} times"
        return matches[0]

    def mount_of(self, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The (volume, volumeMount) pair of the only volume of this kind (secret, configMap, ...)."""
        volumes = [v for v in self.pod_spec.get("volumes", []) if kind in v]
        assert len(volumes) == 1, f"{self.label}: expected one {kind} volume, found {len(volumes)}"
        mounts = [m for m in self.container.get("volumeMounts", []) if m["name"] == volumes[0]["name"]]
        assert len(mounts) == 1, f"{self.label}: {kind} volume mounted {len(mounts)} times"
        return volumes[0], mounts[0]


def workloads() -> list[Workload]:
    found: list[Workload] = []
    for path, doc in all_docs():
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "CronJob":
            job_spec = doc["spec"]["jobTemplate"]["spec"]
            found.append(Workload(path, kind, name, doc, job_spec, job_spec["template"]["spec"]))
        elif kind == "Job":
            found.append(Workload(path, kind, name, doc, doc["spec"], doc["spec"]["template"]["spec"]))
        elif kind == "Deployment":
            found.append(Workload(path, kind, name, doc, None, doc["spec"]["template"]["spec"]))
    assert found, "no workloads under k8s/"
    return found


_QUANTITY = re.compile(r"^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_FACTORS = {None: 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int | float) -> Decimal:
    """A Kubernetes resource quantity (`500m`, `1`, `256Mi`, `2Gi`) as a number of units."""
    match = _QUANTITY.match(str(value))
    assert match, f"not a quantity this test understands: {value!r}"
    return Decimal(match.group(1)) * _FACTORS[match.group(2)]
