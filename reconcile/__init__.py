"""tenant-reconcile core: settings, mapping, snapshot, diff/plan, apply, inbound, report, lock."""

__version__ = "0.1.0"
