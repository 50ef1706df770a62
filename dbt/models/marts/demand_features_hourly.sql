{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['daily'],
        pre_hook="{{ delete_window('feature_date') }}",
        on_schema_change='append_new_columns',
        properties={'partitioning': "ARRAY['feature_date']"},
    )
}}
-- Demand per start station and hour (by booked_at) for the ML features, over the run's window, with
-- the weather of the station's location in that hour (null where no forecast was fetched for it).
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
    h.start_station_id,
    h.hour_start,
    h.bookings_started,
    h.bookings_cancelled,
    h.avg_duration_min,
    extract(hour from h.hour_start) as hour_of_day,
    {{ iso_day_of_week('h.hour_start') }} as day_of_week,
    cast(h.hour_start as date) as feature_date,
    w.temperature_c,
    w.precipitation_mm,
    w.wind_kmh,
    w.is_wet
from hourly as h
left join {{ ref('weather_conditions') }} as w
    on w.location_id = {{ station_location('h.start_station_id') }}
    and w.hour_start = h.hour_start
