{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['daily'],
        pre_hook="{{ delete_window('booking_date') }}",
        properties={'partitioning': "ARRAY['booking_date']"},
    )
}}
-- One row per booking made in the run's window (by booked_at), in its latest state.
select
    booking_id,
    booking_date,
    customer_id,
    vehicle_id,
    start_station_id,
    end_station_id,
    status,
    booked_at,
    started_at,
    ended_at,
    duration_min,
    distance_km,
    amount_cents,
    payment_status
from {{ ref('bookings') }}
where {{ window_filter('booked_at') }}
