"""The dbt project (dbt/) loaded as Silver and Gold assets."""
