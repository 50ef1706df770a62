-- Staging: 1:1 with bronze.vehicles, typed columns only.
select
    cast(vehicle_id as bigint) as vehicle_id,
    vehicle_type,
    model,
    cast(home_station_id as bigint) as home_station_id,
    commissioned_at,
    created_at,
    updated_at
from {{ source('bronze', 'vehicles') }}
