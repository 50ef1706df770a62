{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['daily'],
        pre_hook="{{ delete_window('reading_date') }}",
        properties={'partitioning': "ARRAY['reading_date']"},
    )
}}
-- Rows of the run's window that break the telemetry contract: one row per broken rule, with the
-- offending value as text and the runs that quarantined it. These rows never reach telemetry_clean.
{{ contract_violations(
    ref('stg_telemetry'),
    telemetry_contract_rules(),
    keys=['vehicle_id', 'ts', 'cast(ts as date) as reading_date'],
    where=window_filter('ts'),
) }}
