"""Amazon inbound e-mail addresses for every active tenant, set-based, as a hook of the run.

Runs inside the run's marketplace transaction after the tenant writes. Eligible: tenants in scope
that exist in the marketplace, are not CLOSED, and are neither orphans nor row errors. For them,
per country: one `inbound_connections` row (marketplace `amazon`, its `countries` array extended,
never replaced) and one `inbound_addresses` row (marketplace `AMAZON`). Existing rows are matched
case-insensitively and never regenerated; duplicates (environments without the unique constraints)
are reported, never added to. Only the missing rows pass through Python, to get their tokens from
`secrets`; everything else is a handful of statements whatever the tenant count.

- `hook`: the AfterWrite hook (candidate scan while the snapshot runs, then `ensure`);
- `candidates`: which tenants need a look, in one scan of each inbound table;
- `ensure`: the exact work for those tenants inside the transaction;
- `tokens`: the address tokens.
"""

from reconcile.inbound.hook import InboundEnsurer, inbound_hook
from reconcile.inbound.tokens import tokens

__all__ = ["InboundEnsurer", "inbound_hook", "tokens"]
