-- Staging: 1:1 with bronze.weather_forecasts, typed columns only (empty until the first weather fetch).
select
    cast(location_id as bigint) as location_id,
    cast(ts as timestamp) as ts,
    cast(temperature_c as double) as temperature_c,
    cast(precipitation_mm as double) as precipitation_mm,
    cast(wind_kmh as double) as wind_kmh,
    cast(fetched_at as timestamp) as fetched_at
from {{ source_or_empty('bronze', 'weather_forecasts', {
    'location_id': 'bigint', 'ts': 'timestamp', 'temperature_c': 'double',
    'precipitation_mm': 'double', 'wind_kmh': 'double', 'fetched_at': 'timestamp'}) }} as forecasts
