"""Reading the manifests under k8s/ for the offline tests: YAML documents, workloads, quantities,
and the real `kustomize build` of a directory."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "k8s"
KUSTOMIZATION = "kustomization.yaml"
EXAMPLES = K8S / "examples"


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def kustomization_of(directory: Path) -> dict[str, Any]:
    with (directory / KUSTOMIZATION).open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict), directory
    return data


def patch_files() -> set[Path]:
    """Files that kustomizations or components under k8s/ name as patches: partial objects for
    kustomize to merge, not resources the API server would accept on their own."""
    found = set()
    for path in K8S.rglob(KUSTOMIZATION):
        for patch in kustomization_of(path.parent).get("patches", []):
            if "path" in patch:
                found.add((path.parent / patch["path"]).resolve())
    return found


def manifest_files() -> list[Path]:
    """Every Kubernetes resource file under k8s/ (kustomization files are kustomize's, not the API's,
    and so are the patches the examples apply)."""
    patches = patch_files()
    files = sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml") and p.name != KUSTOMIZATION
                   and p.resolve() not in patches)
    assert files, f"no manifests under {K8S}"
    return files


def kustomization_dirs() -> list[Path]:
    """The kustomizations of the manifests themselves: k8s/, base/, nightly/, variants/* (namespace-
    agnostic, no patches). The examples under k8s/examples are overlays of these."""
    dirs = sorted(p.parent for p in K8S.rglob(KUSTOMIZATION) if not p.is_relative_to(EXAMPLES))
    assert dirs, f"no {KUSTOMIZATION} under {K8S}"
    return dirs


def example_dirs() -> list[Path]:
    """The overlays under k8s/examples that `kubectl apply -k` takes (components are parts of them)."""
    return sorted(p.parent for p in EXAMPLES.rglob(KUSTOMIZATION)
                  if kustomization_of(p.parent).get("kind") == "Kustomization")


def component_dirs() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob(KUSTOMIZATION) if kustomization_of(p.parent).get("kind") == "Component")


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """What the real kustomize (standalone, or kubectl's) builds from `directory`."""
    command = kustomize_command()
    assert command is not None, "neither kustomize nor kubectl is on the PATH"
    built = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, f"{directory}: {built.stderr}"
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


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
        """The variables with a literal value (those taken from a Secret are in secret_env)."""
        return {e["name"]: e["value"] for e in self.container.get("env", []) if "valueFrom" not in e}

    def secret_env(self) -> dict[str, tuple[str, str]]:
        """Variables taken from a Secret's key: name -> (Secret, key)."""
        return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                for e in self.container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}

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
    return workloads_of(all_docs())


def workloads_of(docs: list[tuple[Path, dict[str, Any]]]) -> list[Workload]:
    """The CronJobs, Jobs and Deployments among (path, document) pairs, each with its pod spec."""
    found: list[Workload] = []
    for path, doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "CronJob":
            job_spec = doc["spec"]["jobTemplate"]["spec"]
            found.append(Workload(path, kind, name, doc, job_spec, job_spec["template"]["spec"]))
        elif kind == "Job":
            found.append(Workload(path, kind, name, doc, doc["spec"], doc["spec"]["template"]["spec"]))
        elif kind == "Deployment":
            found.append(Workload(path, kind, name, doc, None, doc["spec"]["template"]["spec"]))
    assert found, "no workloads"
    return found


_QUANTITY = re.compile(r"^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_FACTORS = {None: 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int | float) -> Decimal:
    """A Kubernetes resource quantity (`500m`, `1`, `256Mi`, `2Gi`) as a number of units."""
    match = _QUANTITY.match(str(value))
    assert match, f"not a quantity this test understands: {value!r}"
    return Decimal(match.group(1)) * _FACTORS[match.group(2)]
