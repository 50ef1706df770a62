{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['daily'],
        pre_hook="{{ delete_window('feature_date') }}",
        properties={'partitioning': "ARRAY['feature_date']"},
    )
}}
-- Demand per start station and hour (by booked_at) for the ML features, over the run's window.
with hourly as (
    select
        start_station_id,
        date_trunc('hour', booked_at) as hour_start,
        count(*) as bookings_started,
        count(case when status = 'cancelled' then 1 end) as bookings_cancelled,
        round(avg(duration_min), 6) as avg_duration_min
    from {{ ref('fct_bookings') }}
    where {{ window_filter('booking_date', 'date') }}
    group by start_station_id, date_trunc('hour', booked_at)
)

select
    start_station_id,
    hour_start,
    bookings_started,
    bookings_cancelled,
    avg_duration_min,
    extract(hour from hour_start) as hour_of_day,
    {{ iso_day_of_week('hour_start') }} as day_of_week,
    cast(hour_start as date) as feature_date
from hourly
