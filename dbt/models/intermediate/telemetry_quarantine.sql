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
-- Also the losing copies of a duplicated (vehicle_id, ts) that differ from the published reading
-- (rule one_reading_per_vehicle_and_time, the whole reading as the offending value): an identical
-- copy loses nothing, a different one must not vanish.
{{ contract_violations(
    ref('stg_telemetry'),
    telemetry_contract_rules(),
    keys=['vehicle_id', 'ts', 'cast(ts as date) as reading_date'],
    where=window_filter('ts'),
) }}
union all
select
    vehicle_id,
    ts,
    reading_date,
    'one_reading_per_vehicle_and_time' as rule,
    'vehicle_id, ts' as column_name,
    reading as offending_value,
    '{{ invocation_id }}' as dbt_invocation_id,
    '{{ env_var("STRATA_DAGSTER_RUN_ID", "manual") if execute else "manual" }}' as dagster_run_id
from (
    select
        vehicle_id,
        ts,
        reading_date,
        reading,
        row_number() over ({{ telemetry_duplicates_window() }}) as reading_rank,
        first_value(reading) over ({{ telemetry_duplicates_window() }}) as published_reading
    from (
        select
            *,
            cast(ts as date) as reading_date,
            'lat=' || cast(lat as varchar) || ' lon=' || cast(lon as varchar)
            || ' speed_kmh=' || cast(speed_kmh as varchar) || ' battery_pct=' || cast(battery_pct as varchar)
            || ' odometer_km=' || cast(odometer_km as varchar)
            || ' fault_code=' || coalesce(fault_code, 'null') as reading
        from {{ ref('stg_telemetry') }}
        where {{ window_filter('ts') }}
            and not {{ breaks_any_rule(telemetry_contract_rules()) }}
    ) as valid_readings
) as copies
where reading_rank > 1 and reading <> published_reading
