{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['daily'],
        pre_hook="{{ delete_window('health_date') }}",
        properties={'partitioning': "ARRAY['health_date']"},
    )
}}
-- One row per vehicle and day with telemetry in the run's window.
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
