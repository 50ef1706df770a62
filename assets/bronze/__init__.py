"""Bronze ingestion: OLTP extraction, telemetry drops, the source contracts, row quarantine, the pre-run guard."""
