"""The run report: its model, how a run's results fold into it (tally), its file, and the logging
that renders it and every other event."""
