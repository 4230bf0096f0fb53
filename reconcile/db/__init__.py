"""Talking to PostgreSQL: URLs, engines, COPY, the run lock, stopping a run, the watchdog."""
