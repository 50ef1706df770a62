-- Staging: 1:1 with bronze.bookings (latest version of each booking), typed columns only.
select
    cast(booking_id as bigint) as booking_id,
    cast(customer_id as bigint) as customer_id,
    cast(vehicle_id as bigint) as vehicle_id,
    cast(start_station_id as bigint) as start_station_id,
    cast(end_station_id as bigint) as end_station_id,
    status,
    booked_at,
    started_at,
    ended_at,
    cast(distance_km as double) as distance_km,
    created_at,
    updated_at
from {{ source('bronze', 'bookings') }}
