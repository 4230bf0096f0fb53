"""One reconcile run, phase by phase: snapshot → diff → plan → stage → guard → write → hooks →
commit → report. `run.run_reconcile` drives it; each phase is its own module."""
