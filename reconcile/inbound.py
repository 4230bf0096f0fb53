"""Amazon inbound e-mail addresses for active tenants (SPEC §3). Not built yet: issue 5."""

from __future__ import annotations

from reconcile.errors import ConfigError
from reconcile.reconciler import AfterWrite
from reconcile.settings import Settings


def inbound_hook(settings: Settings) -> AfterWrite | None:
    if settings.inbound_countries:
        raise ConfigError("--ensure-inbound / inbound.countries is not available yet")
    return None
