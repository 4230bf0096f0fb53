"""Test helpers over a real server: throw-away databases, seeding rows, running the CLI for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from reconcile.db.engines import engine_for
from reconcile.db.urls import DatabaseUrl
from reconcile.settings import Settings

REPO = Path(__file__).resolve().parent.parent


class Server:
    def __init__(self, admin: DatabaseUrl, embedded: bool) -> None:
        self.admin = admin
        self.embedded = embedded
        self.product_template = ""
        self.marketplace_template = ""
        self._engine = engine_for(admin)

    def url_for(self, database: str) -> DatabaseUrl:
        return DatabaseUrl(self.admin.url.set(database=database))

    def _autocommit(self, sql: str) -> None:
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(sql)

    def create_database(self, name: str, template: str | None = None) -> None:
        suffix = f' TEMPLATE "{template}"' if template else ""
        self._autocommit(f'CREATE DATABASE "{name}"{suffix}')

    def drop_database(self, name: str) -> None:
        self._autocommit(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def dispose(self) -> None:
        self._engine.dispose()


def url_text(db: DatabaseUrl) -> str:
    return db.url.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class Databases:
    product: DatabaseUrl
    marketplace: DatabaseUrl
    _engines: dict[str, sa.Engine] = field(default_factory=dict)

    @property
    def product_url(self) -> str:
        return url_text(self.product)

    @property
    def marketplace_url(self) -> str:
        return url_text(self.marketplace)

    def engine(self, which: str) -> sa.Engine:
        if which not in self._engines:
            self._engines[which] = engine_for(self.product if which == "product" else self.marketplace)
        return self._engines[which]

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()

    # -- seeding ---------------------------------------------------------------------------------
    def add_product(self, *rows: tuple[Any, ...]) -> None:
        """rows: (id, name, plan, status)."""
        with self.engine("product").begin() as conn:
            conn.execute(sa.text("INSERT INTO tenants (id, name, plan, status) VALUES (:i, :n, :p, :s)"),
                         [{"i": r[0], "n": r[1], "p": r[2], "s": r[3]} for r in rows])

    def add_market(self, *rows: tuple[Any, ...], updated_at: str = "2020-01-01 00:00:00") -> None:
        """rows: (id, name, plan, status[, slug]); slug defaults to the id's slug."""
        with self.engine("marketplace").begin() as conn:
            conn.execute(
                sa.text('INSERT INTO "Tenant" (id, slug, name, plan, status, "createdAt", "updatedAt") '
                        'VALUES (:i, :g, :n, CAST(:p AS "BillingPlan"), CAST(:s AS "TenantStatus"), '
                        'CAST(:u AS timestamp), CAST(:u AS timestamp))'),
                [{"i": r[0], "n": r[1], "p": r[2], "s": r[3],
                  "g": r[4] if len(r) > 4 else r[0].replace("_", "-").lower(), "u": updated_at}
                 for r in rows])

    def sql(self, which: str, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
        with self.engine(which).begin() as conn:
            result = conn.execute(sa.text(statement), params or {})
            return list(result) if result.returns_rows else []

    def market(self) -> dict[str, dict[str, Any]]:
        rows = self.sql("marketplace", 'SELECT id, slug, name, plan::text AS plan, status::text AS status, '
                                       '"createdAt", "updatedAt" FROM "Tenant"')
        return {r.id: dict(r._mapping) for r in rows}

    # -- running ---------------------------------------------------------------------------------
    def settings(self, **overrides: Any) -> Settings:
        base = Settings(product_url=self.product, marketplace_url=self.marketplace, connect_retry_s=0)
        return base.with_overrides(**overrides)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RECONCILE_", "PRODUCT_DATABASE", "MARKETPLACE_DATABASE",
                                    "JOB_COMPLETION_INDEX"))}
        env.update({"PRODUCT_DATABASE_URL": self.product_url, "MARKETPLACE_DATABASE_URL": self.marketplace_url,
                    "RECONCILE_CONNECT_RETRY": "0"})
        env.update(extra)
        return env


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every stdout line parsed as JSON (fails the test if one is not JSON)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    @property
    def report(self) -> dict[str, Any]:
        reports = self.of("reconcile.report")
        assert len(reports) == 1, f"expected exactly one report, got {len(reports)}: {self.stdout}"
        return reports[0]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            cwd: Path | None = None) -> CliResult:
    """The CLI as a real subprocess (`python -m jobs`, which is what the console script calls)."""
    proc = subprocess.run([sys.executable, "-m", "jobs", *args], capture_output=True, text=True,
                          env=env if env is not None else dict(os.environ), timeout=timeout,
                          cwd=cwd or REPO)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


class EventLog:
    """structlog configured to render JSON into memory: the real renderer, read back as events."""

    def __init__(self) -> None:
        import io

        from reconcile.report.logs import configure_logging

        self.stream = io.StringIO()
        configure_logging("json", stream=self.stream)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]


def reconcile(dbs: Databases, *, dry_run: bool = False, force: bool = False, after_write: Any = None,
              tenant_id: str | None = None, **overrides: Any) -> tuple[Any, EventLog]:
    """One in-process run against `dbs`; returns (Report, EventLog)."""
    from reconcile.pipeline.run import RunOptions, run_reconcile
    from reconcile.report.logs import get_logger

    events = EventLog()
    options = RunOptions(dry_run=dry_run, force=force, hooks=(after_write,) if after_write else (),
                         tenant_ids=(tenant_id,) if tenant_id is not None else None)
    report = run_reconcile(dbs.settings(**overrides), options, get_logger(run_id="test"))
    return report, events


def wait_until_serving(client: Any, proc: subprocess.Popen, timeout: float, why_not: Any = None) -> None:
    """Poll `serve`'s /healthz until it answers 200; fail with the process's stderr if it died."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, why_not() if why_not else (proc.stderr.read() if proc.stderr else "")
        assert time.monotonic() < deadline, "serve did not start"
        time.sleep(0.1)
