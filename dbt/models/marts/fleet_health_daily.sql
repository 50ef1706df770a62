{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['daily'],
        pre_hook="{{ delete_window('health_date') }}",
        on_schema_change='append_new_columns',
        properties={'partitioning': "ARRAY['health_date']"},
    )
}}
-- One row per vehicle and day with telemetry in the run's window, with the vehicle's type
-- (dim_vehicles, current value).
with daily as (
    select
        reading_date as health_date,
        vehicle_id,
        count(*) as readings,
        max(odometer_km) - min(odometer_km) as km_driven,
        round(avg(speed_kmh), 6) as avg_speed_kmh,
        max(speed_kmh) as max_speed_kmh,
        min(battery_pct) as min_battery_pct,
        round(avg(battery_pct), 6) as avg_battery_pct,
        count(fault_code) as fault_readings
    from {{ ref('telemetry_clean') }}
    where {{ window_filter('reading_date', 'date') }}
    group by reading_date, vehicle_id
)

select
    d.health_date,
    d.vehicle_id,
    v.vehicle_type,
    d.readings,
    d.km_driven,
    d.avg_speed_kmh,
    d.max_speed_kmh,
    d.min_battery_pct,
    d.avg_battery_pct,
    d.fault_readings
from daily as d
left join {{ ref('dim_vehicles') }} as v
    on v.vehicle_id = d.vehicle_id
