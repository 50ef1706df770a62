-- Current state of every vehicle, with the name and city of its home station.
select
    v.vehicle_id,
    v.vehicle_type,
    v.model,
    v.home_station_id,
    s.station_name as home_station_name,
    s.city as home_city,
    v.commissioned_at,
    v.created_at,
    v.updated_at
from {{ ref('stg_vehicles') }} as v
left join {{ ref('stg_stations') }} as s
    on s.station_id = v.home_station_id
