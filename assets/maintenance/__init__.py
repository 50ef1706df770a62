"""Upkeep of the platform's own tables: Iceberg compaction, snapshot expiry and orphan-file removal."""
