"""The product and marketplace schemas as the tool expects them (docs/schemas.md), created if
absent by `init-db`, the demo and the tests (dev, test and demo only; idempotent)."""

from __future__ import annotations

from typing import Any

from reconcile.db.engines import engine_for, translate_db_errors
from reconcile.db.urls import DatabaseUrl

PRODUCT_DDL = """
CREATE TABLE IF NOT EXISTS tenants (
  id         TEXT PRIMARY KEY,
  name       TEXT NOT NULL,
  plan       TEXT,
  status     TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""

_ENUMS = {
    "BillingPlan": ("DEV", "STARTER", "PRO", "ENTERPRISE"),
    "TenantStatus": ("TRIAL", "ACTIVE", "SUSPENDED", "CLOSED"),
    "InboundConnectionStatus": ("DRAFT", "WAITING_EMAIL", "WAITING_AMAZON", "READY", "DEGRADED", "ERROR"),
    "InboundValidationStatus": ("PENDING", "VALIDATED", "FAILED"),
    "MarketplaceType": ("AMAZON", "FNAC", "CDISCOUNT", "OTHER"),
    "MarketplaceConnectionStatus": ("PENDING", "CONNECTED", "ERROR", "DISABLED"),
}


def _enum_ddl(name: str, labels: tuple[str, ...]) -> str:
    values = ", ".join(f"''{label}''" for label in labels)
    return (f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = '{name}') THEN "
            f"EXECUTE 'CREATE TYPE \"{name}\" AS ENUM ({values})'; END IF; END $$;")


MARKETPLACE_TABLES_DDL = """
CREATE TABLE IF NOT EXISTS "Tenant" (
  id TEXT PRIMARY KEY, slug TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
  plan "BillingPlan" NOT NULL DEFAULT 'DEV', status "TenantStatus" NOT NULL DEFAULT 'ACTIVE',
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL);
CREATE TABLE IF NOT EXISTS inbound_connections (
  id TEXT PRIMARY KEY, "tenantId" TEXT NOT NULL REFERENCES "Tenant"(id) ON DELETE CASCADE,
  marketplace TEXT NOT NULL, countries JSONB NOT NULL,
  status "InboundConnectionStatus" NOT NULL DEFAULT 'DRAFT',
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL,
  CONSTRAINT "inbound_connections_tenantId_marketplace_key" UNIQUE ("tenantId", marketplace));
CREATE TABLE IF NOT EXISTS inbound_addresses (
  id TEXT PRIMARY KEY, "connectionId" TEXT NOT NULL REFERENCES inbound_connections(id) ON DELETE CASCADE,
  "tenantId" TEXT NOT NULL REFERENCES "Tenant"(id) ON DELETE CASCADE,
  marketplace TEXT NOT NULL, country TEXT NOT NULL, token TEXT NOT NULL, "emailAddress" TEXT NOT NULL,
  "validationStatus"  "InboundValidationStatus" NOT NULL DEFAULT 'PENDING',
  "pipelineStatus"    "InboundValidationStatus" NOT NULL DEFAULT 'PENDING',
  "marketplaceStatus" "InboundValidationStatus" NOT NULL DEFAULT 'PENDING',
  "lastInboundAt" TIMESTAMP(3), "lastError" TEXT,
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL,
  CONSTRAINT "inbound_addresses_tenantId_marketplace_country_key" UNIQUE ("tenantId", marketplace, country));
CREATE TABLE IF NOT EXISTS "MarketplaceConnection" (
  id TEXT PRIMARY KEY, "tenantId" TEXT NOT NULL, type "MarketplaceType" NOT NULL,
  status "MarketplaceConnectionStatus" NOT NULL DEFAULT 'PENDING', "displayName" TEXT,
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL);
"""

MARKETPLACE_DDL = "\n".join(_enum_ddl(n, v) for n, v in _ENUMS.items()) + MARKETPLACE_TABLES_DDL

# Production sometimes lacks these; tests drop them to prove the tool does not rely on them.
UNIQUE_CONSTRAINTS = {
    "inbound_connections": "inbound_connections_tenantId_marketplace_key",
    "inbound_addresses": "inbound_addresses_tenantId_marketplace_country_key",
}


def ensure_database(db: DatabaseUrl) -> bool:
    """Create the database itself if it does not exist (via the server's `postgres` database)."""
    admin = DatabaseUrl(db.url.set(database="postgres"))
    engine = engine_for(admin)
    try:
        with translate_db_errors("cannot create the database", db), \
                engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            exists = conn.exec_driver_sql("SELECT 1 FROM pg_database WHERE datname = %s",
                                          (db.url.database,)).scalar()
            if exists:
                return False
            from psycopg2 import sql

            dbapi_connection = conn.connection.dbapi_connection
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(db.url.database)))
            conn.exec_driver_sql(statement.as_string(dbapi_connection))
            return True
    finally:
        engine.dispose()


def init_schema(db: DatabaseUrl, ddl: str, what: str) -> None:
    engine = engine_for(db)
    try:
        with translate_db_errors(f"cannot create the {what} schema", db), engine.begin() as conn:
            # Two init-db at once must not race on CREATE TYPE.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('tenant-reconcile init-db'))")
            conn.exec_driver_sql(ddl)
    finally:
        engine.dispose()


def init_product(db: DatabaseUrl) -> None:
    init_schema(db, PRODUCT_DDL, "product")


def init_marketplace(db: DatabaseUrl) -> None:
    init_schema(db, MARKETPLACE_DDL, "marketplace")


__all__ = ["MARKETPLACE_DDL", "PRODUCT_DDL", "UNIQUE_CONSTRAINTS", "ensure_database", "init_databases",
           "init_marketplace", "init_product"]


def init_databases(product: DatabaseUrl, marketplace: DatabaseUrl, log: Any) -> None:
    """`init-db`: create both databases and their schemas if absent."""
    for what, db, init in (("product", product, init_product), ("marketplace", marketplace, init_marketplace)):
        created = ensure_database(db)
        init(db)
        log.info("init_db.done", database=what, db=db.display, database_created=created)
