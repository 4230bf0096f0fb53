"""Entry points: the `tenant-reconcile` CLI and the scheduler process."""
