-- Current state of every station, with its weather location (the ML features read the weather by it).
select
    station_id,
    station_name,
    city,
    lat,
    lon,
    capacity,
    {{ station_location('station_id') }} as weather_location_id,
    created_at,
    updated_at
from {{ ref('stg_stations') }}
