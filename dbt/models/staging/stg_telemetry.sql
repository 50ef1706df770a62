{{ config(tags=['daily']) }}
-- Staging: 1:1 with bronze.telemetry, typed columns only. Duplicated readings are kept here and
-- removed in telemetry_clean. A view: consumers filter by ts, which Iceberg prunes to partitions.
-- Tagged `daily` so Dagster sees it daily-partitioned: each day maps to its 24 hourly Bronze
-- partitions (a time-window mapping), which lets a backfill and automation go from hours to days.
select
    cast(vehicle_id as bigint) as vehicle_id,
    ts,
    cast(lat as double) as lat,
    cast(lon as double) as lon,
    cast(speed_kmh as double) as speed_kmh,
    cast(battery_pct as double) as battery_pct,
    cast(odometer_km as double) as odometer_km,
    fault_code
from {{ source('bronze', 'telemetry') }}
