"""ConfigurableResources and environment settings. Import submodules directly: this package stays
empty so that reading settings does not import Dagster's dbt integration."""
