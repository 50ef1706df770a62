{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['daily'],
        pre_hook="{{ delete_window('booking_date') }}",
        on_schema_change='append_new_columns',
        properties={'partitioning': "ARRAY['booking_date']"},
    )
}}
-- One row per booking made in the run's window (by booked_at), in its latest state, with the
-- customer's segment and the vehicle's type from the dimensions (their current values).
select
    b.booking_id,
    b.booking_date,
    b.customer_id,
    c.segment as customer_segment,
    b.vehicle_id,
    v.vehicle_type,
    b.start_station_id,
    b.end_station_id,
    b.status,
    b.booked_at,
    b.started_at,
    b.ended_at,
    b.duration_min,
    b.distance_km,
    b.amount_cents,
    b.payment_status
from {{ ref('bookings') }} as b
left join {{ ref('dim_customers') }} as c
    on c.customer_id = b.customer_id
left join {{ ref('dim_vehicles') }} as v
    on v.vehicle_id = b.vehicle_id
where {{ window_filter('b.booked_at') }}
