{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['daily'],
        contract={'enforced': true},
        on_schema_change='fail',
        pre_hook="{{ delete_window('reading_date') }}",
        properties={'partitioning': "ARRAY['reading_date']"},
    )
}}
-- Telemetry of the run's window that keeps the Silver contract (macros/contract_rules.sql; rows that
-- break it go to telemetry_quarantine), one row per (vehicle_id, ts): a drop may deliver a reading twice.
-- Among duplicates the choice is deterministic (macro telemetry_duplicates_window); the other copies, when they
-- differ, are quarantined as duplicate keys.
select
    vehicle_id,
    ts,
    lat,
    lon,
    speed_kmh,
    battery_pct,
    odometer_km,
    fault_code,
    reading_date
from (
    select
        *,
        cast(ts as date) as reading_date,
        row_number() over ({{ telemetry_duplicates_window() }}) as reading_rank
    from {{ ref('stg_telemetry') }}
    where {{ window_filter('ts') }}
        and not {{ breaks_any_rule(telemetry_contract_rules()) }}
) as readings
where reading_rank = 1
