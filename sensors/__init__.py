"""Sensors: the READY-marker drop sensor, gated automation, the audit run-log sensor, freshness and failure alerts."""
