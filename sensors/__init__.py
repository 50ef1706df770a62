"""Sensors: the READY-marker drop sensor (run-status and freshness sensors come with the audit work)."""
