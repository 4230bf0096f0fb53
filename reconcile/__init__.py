"""tenant-reconcile: keep the marketplace DB's tenants in step with the product DB.

The curated API for code that embeds the tool (the CLI, the scheduler and the HTTP server use
nothing else from the core than these and their modules):

    settings = load_settings()                       # flag > environment > config file > defaults
    report = run_reconcile(settings, RunOptions(dry_run=True), get_logger())
    outcome = sync_tenant(settings, "kbz-003", "FR", get_logger())
    status = tenant_status(settings, "kbz-003")

Layout (docs/architecture.md): `pipeline/` one run phase by phase, `db/` everything that talks to
PostgreSQL, `report/` the report and the logging, `actions.py` the kinds of action, `hooks.py` the
seam for steps inside the run's transaction (`inbound/` is one), `mapping.py` the product-to-
marketplace rules, `single.py` one tenant at a time, `testing/` dev/test/demo tooling only.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Name -> the module that defines it. Resolved on first use (PEP 562), so that importing any module
# of the package (reconcile.errors, say) does not import SQLAlchemy and the whole pipeline with it:
# start-up time is what every short command pays.
_API = {
    "KINDS": "reconcile.actions", "Kind": "reconcile.actions",
    "ConfigError": "reconcile.errors", "DatabaseError": "reconcile.errors", "GuardTripped": "reconcile.errors",
    "LockHeld": "reconcile.errors", "ReconcileError": "reconcile.errors", "TenantNotFound": "reconcile.errors",
    "AfterWrite": "reconcile.hooks", "HookContext": "reconcile.hooks", "HookResult": "reconcile.hooks",
    "PrepareContext": "reconcile.hooks",
    "Mapping": "reconcile.mapping",
    "RunOptions": "reconcile.pipeline.run", "run_reconcile": "reconcile.pipeline.run",
    "configure_logging": "reconcile.report.logs", "get_logger": "reconcile.report.logs",
    "Report": "reconcile.report.model",
    "Settings": "reconcile.settings", "load_settings": "reconcile.settings",
    "SyncOutcome": "reconcile.single", "TenantStatus": "reconcile.single", "sync_tenant": "reconcile.single",
    "tenant_status": "reconcile.single",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'reconcile' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*_API, "__version__"])



__all__ = [
    "KINDS",
    "AfterWrite",
    "ConfigError",
    "DatabaseError",
    "GuardTripped",
    "HookContext",
    "HookResult",
    "Kind",
    "LockHeld",
    "Mapping",
    "PrepareContext",
    "ReconcileError",
    "Report",
    "RunOptions",
    "Settings",
    "SyncOutcome",
    "TenantNotFound",
    "TenantStatus",
    "__version__",
    "configure_logging",
    "get_logger",
    "load_settings",
    "run_reconcile",
    "sync_tenant",
    "tenant_status",
]
