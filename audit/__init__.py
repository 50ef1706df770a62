"""The audit trail: metadata every materialization carries, one record per finished run built from the
event log, its Iceberg projection `audit.run_log`, and the `audit` CLI.

Sits just above `resources/`: assets use its metadata builder, sensors and the CLI use the records.
"""
