-- Staging: 1:1 with bronze.stations, typed columns only.
select
    cast(station_id as bigint) as station_id,
    station_name,
    city,
    cast(lat as double) as lat,
    cast(lon as double) as lon,
    cast(capacity as bigint) as capacity,
    created_at,
    updated_at
from {{ source('bronze', 'stations') }}
