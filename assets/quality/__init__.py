"""Great Expectations 1.x suites (expectations/*.json) turned into Dagster asset checks."""
