"""Software-defined assets, one subpackage per concern: bronze/, drops/, quality/, transform/ (dbt), ml/."""
