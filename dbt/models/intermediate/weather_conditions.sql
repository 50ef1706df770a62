-- Weather per location and hour, the latest forecast of each (Bronze already holds one row per
-- location and hour), with the flags the demand features use.
select
    location_id,
    ts as hour_start,
    temperature_c,
    precipitation_mm,
    wind_kmh,
    case when precipitation_mm >= 0.1 then true else false end as is_wet,
    fetched_at
from {{ ref('stg_weather_forecasts') }}
