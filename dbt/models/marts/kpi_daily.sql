{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['daily'],
        pre_hook="{{ delete_window('kpi_date') }}",
        properties={'partitioning': "ARRAY['kpi_date']"},
    )
}}
-- One row per day of the run's window that has bookings, payments or telemetry.
-- Bookings count by the day they were made; revenue by the day it was paid (captured payments only).
with bookings_by_day as (
    select
        booking_date as kpi_date,
        count(*) as bookings_total,
        count(case when status = 'reserved' then 1 end) as bookings_reserved,
        count(case when status = 'active' then 1 end) as bookings_active,
        count(case when status = 'completed' then 1 end) as bookings_completed,
        count(case when status = 'cancelled' then 1 end) as bookings_cancelled
    from {{ ref('fct_bookings') }}
    where {{ window_filter('booking_date', 'date') }}
    group by booking_date
),

payments_by_day as (
    -- every payment day appears (even with refunds only); only captured money counts as revenue
    select
        cast(paid_at as date) as kpi_date,
        cast(sum(case when status = 'captured' then amount_cents else 0 end) as bigint) as revenue_cents
    from {{ ref('stg_payments') }}
    where {{ window_filter('paid_at') }}
    group by cast(paid_at as date)
),

fleet_by_day as (
    select
        health_date as kpi_date,
        round(sum(km_driven), 6) as km_driven,
        count(*) as active_vehicles
    from {{ ref('fleet_health_daily') }}
    where {{ window_filter('health_date', 'date') }}
    group by health_date
)

select
    coalesce(b.kpi_date, p.kpi_date, f.kpi_date) as kpi_date,
    coalesce(b.bookings_total, 0) as bookings_total,
    coalesce(b.bookings_reserved, 0) as bookings_reserved,
    coalesce(b.bookings_active, 0) as bookings_active,
    coalesce(b.bookings_completed, 0) as bookings_completed,
    coalesce(b.bookings_cancelled, 0) as bookings_cancelled,
    coalesce(p.revenue_cents, 0) as revenue_cents,
    -- exact decimal arithmetic on both engines (Trino would round `bigint / 100.0` to one decimal)
    cast(cast(coalesce(p.revenue_cents, 0) as decimal(18, 2)) * 0.01 as decimal(18, 2)) as revenue_eur,
    coalesce(f.km_driven, 0) as km_driven,
    coalesce(f.active_vehicles, 0) as active_vehicles
from bookings_by_day as b
full outer join payments_by_day as p
    on p.kpi_date = b.kpi_date
full outer join fleet_by_day as f
    on f.kpi_date = coalesce(b.kpi_date, p.kpi_date)
