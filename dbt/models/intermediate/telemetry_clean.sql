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
-- Among duplicates the choice is deterministic (highest odometer, then the other values).
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
        vehicle_id,
        ts,
        lat,
        lon,
        speed_kmh,
        battery_pct,
        odometer_km,
        fault_code,
        cast(ts as date) as reading_date,
        row_number() over (
            partition by vehicle_id, ts
            order by odometer_km desc, battery_pct desc, speed_kmh desc, lat, lon, fault_code nulls last
        ) as reading_rank
    from {{ ref('stg_telemetry') }}
    where {{ window_filter('ts') }}
        and not {{ breaks_any_rule(telemetry_contract_rules()) }}
) as readings
where reading_rank = 1
