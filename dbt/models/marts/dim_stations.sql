-- Current state of every station.
select
    station_id,
    station_name,
    city,
    lat,
    lon,
    capacity,
    created_at,
    updated_at
from {{ ref('stg_stations') }}
