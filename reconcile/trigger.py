"""The product-side trigger that announces tenant changes (`install-trigger`): AFTER INSERT, UPDATE
or DELETE on `tenants`, `pg_notify('tenant_changed', id)`. The one schema change the tool makes
outside `init-db`, and only on request; idempotent (re-running it replaces the function and the
trigger with the same ones).

A notification is a hint, never a fact: the listener re-reads both rows of each id it hears of
(and runs a full reconcile when it starts and a catch-up when it reconnects), so a lost or
duplicated notification costs nothing but latency.
"""

from __future__ import annotations

from typing import Any

from reconcile.db.engines import engine_from_settings, translate_db_errors
from reconcile.settings import Settings

CHANNEL = "tenant_changed"
FUNCTION = "tenant_reconcile_notify"

# An update that changes the id announces both ids: the old one is gone (an orphan now), the new
# one appeared. pg_notify folds identical payloads of one transaction into one notification.
TRIGGER_SQL = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM pg_notify('{CHANNEL}', OLD.id);
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') AND (TG_OP = 'INSERT' OR NEW.id IS DISTINCT FROM OLD.id) THEN
    PERFORM pg_notify('{CHANNEL}', NEW.id);
  END IF;
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS {FUNCTION} ON tenants;
CREATE TRIGGER {FUNCTION} AFTER INSERT OR UPDATE OR DELETE ON tenants
  FOR EACH ROW EXECUTE FUNCTION {FUNCTION}();
"""


def install_trigger(settings: Settings, log: Any) -> None:
    """Create (or replace) the function and the trigger on the product database, in one
    transaction, with every timeout of the settings (as a run has them)."""
    db = settings.require_product()
    engine = engine_from_settings(settings, db, "tenant-reconcile install-trigger")
    try:
        with translate_db_errors("cannot install the trigger", db), engine.begin() as conn:
            conn.exec_driver_sql(TRIGGER_SQL)
    finally:
        engine.dispose()
    log.info("trigger.installed", db=db.display, channel=CHANNEL, function=FUNCTION)
