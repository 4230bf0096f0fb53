"""The Dockerfile and .dockerignore, checked by parsing them: no Docker daemon is needed (or used),
so the image build itself is not exercised here."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass
from typing import Any

import pytest

from tests.k8stools import REPO, workloads

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|DATABASE_URL|postgres(ql)?://", re.IGNORECASE)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by build stage; line continuations joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"{instruction.keyword} before the first FROM"
        stages[-1].append(instruction)
    return stages


STAGES = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
FINAL = STAGES[-1]


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the stage, found {len(found)}"
    return found[0]


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)  # shell form would wrap the process in /bin/sh -c
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for pair in instruction.args.split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def project() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def dockerignore_includes(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins, `!` re-includes, and a pattern
    matching a directory matches everything below it."""
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            included = negated
    return included


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_every_stage_uses_the_slim_python_base_the_project_supports() -> None:
    requires = re.fullmatch(r">=\s*(\d+)\.(\d+)", project()["project"]["requires-python"])
    assert requires, "requires-python is not of the form >=X.Y"
    minimum = (int(requires.group(1)), int(requires.group(2)))
    for stage in STAGES:
        image = stage[0].args.split()[0]
        match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(-\w+)?", image)
        assert match, f"{image} is not a slim python base"
        assert (int(match.group(1)), int(match.group(2))) >= minimum


def test_final_stage_runs_as_the_manifests_numeric_non_root_user() -> None:
    user = only(FINAL, "USER").args
    assert re.fullmatch(r"\d+:\d+", user), f"USER {user}: numeric UID:GID lets runAsNonRoot verify it"
    uid, gid = (int(n) for n in user.split(":"))
    assert uid > 0 and gid > 0
    # Nothing after USER runs as root again.
    assert [i.keyword for i in FINAL].index("USER") > max(
        n for n, i in enumerate(FINAL) if i.keyword in ("RUN", "COPY"))
    for w in workloads():
        security = w.pod_spec["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"]) == (uid, gid), w.label


def test_entrypoint_is_the_console_script_and_the_default_command_is_run() -> None:
    entrypoint = exec_form(only(FINAL, "ENTRYPOINT"))
    assert entrypoint == ["tenant-reconcile"]
    assert entrypoint[0] in project()["project"]["scripts"]
    assert exec_form(only(FINAL, "CMD")) == ["run"]
    venv_bin = "/opt/venv/bin"
    assert env_of(FINAL)["PATH"].split(":")[0] == venv_bin  # where the script is installed


def test_runtime_environment_fits_a_read_only_root_filesystem() -> None:
    env = env_of(FINAL)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    for w in workloads():
        assert w.env()["TMPDIR"] == env["TMPDIR"], w.label


def test_no_secret_baked_into_the_image() -> None:
    for stage in STAGES:
        for instruction in stage:
            assert instruction.keyword != "ADD", "COPY only: ADD fetches URLs and unpacks archives"
            if instruction.keyword in ("ENV", "ARG", "LABEL"):
                assert not SECRETISH.search(instruction.args), instruction


def test_build_stage_copies_everything_the_wheel_needs_and_dockerignore_lets_it_through() -> None:
    build = STAGES[0]
    sources = []
    for instruction in build:
        if instruction.keyword == "COPY":
            words = instruction.args.split()
            assert not any(w.startswith("--from") for w in words)
            sources += words[:-1]
    meta = project()
    packages = meta["tool"]["setuptools"]["packages"]  # a list, or {"find": {"include": [patterns]}}
    names = packages if isinstance(packages, list) else packages["find"]["include"]
    top_level = {name.split(".")[0] for name in names}  # a package directory brings its subpackages
    needed = {"pyproject.toml", meta["project"]["readme"], *top_level}
    assert needed <= set(sources), f"the build stage does not copy {needed - set(sources)}"
    patterns = dockerignore_patterns()
    for source in sources:
        assert (REPO / source).exists(), source
        assert dockerignore_includes(source, patterns), f".dockerignore excludes {source}"
        if (REPO / source).is_dir():
            assert dockerignore_includes(f"{source}/__init__.py", patterns)
    # The runtime stage takes the venv only.
    copies = [i.args for i in FINAL if i.keyword == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"]


@pytest.mark.parametrize("path", [
    ".env", "config/example.env", ".venv/bin/python", ".git", "tests/conftest.py", "k8s/cronjob.yaml",
    "reconcile/__pycache__/db.cpython-311.pyc", "reports/run.json", "dump.sql",
])
def test_dockerignore_keeps_everything_else_out_of_the_build_context(path: str) -> None:
    assert not dockerignore_includes(path, dockerignore_patterns())


def test_the_dockerignore_matcher_follows_last_match_wins() -> None:
    assert dockerignore_includes("a/b.py", ["*", "!a/"])
    assert not dockerignore_includes("a/b.py", ["!a/", "*"])
    assert not dockerignore_includes("a/__pycache__/x.pyc", ["*", "!a/", "**/__pycache__"])
