"""Stage `ingest`: validate bronze into silver; bad rows to quarantine with a reason."""
