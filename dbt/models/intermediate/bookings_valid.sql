{{ config(materialized='view') }}
-- The "valid" step of the bookings promotion (raw: stg_bookings -> valid: this view -> final:
-- silver.bookings by merge). One row per booking that keeps the Silver contract (breaking rows go to
-- bookings_quarantine), with its payment, in the contract's column types. A booking has at most one
-- payment in the demo domain; should a source ever send several, the latest (by updated_at, then
-- payment_id) wins so the grain holds. `changed_at` is when the booking or its payment last changed:
-- the final table merges only rows changed since its own latest `changed_at`.
with valid_bookings as (
    select * from {{ ref('stg_bookings') }}
    where not {{ breaks_any_rule(bookings_contract_rules()) }}
),

ranked_payments as (
    select
        booking_id,
        amount_cents,
        status as payment_status,
        updated_at as payment_updated_at,
        row_number() over (
            partition by booking_id
            order by updated_at desc, payment_id desc
        ) as payment_rank
    from {{ ref('stg_payments') }}
)

select
    b.booking_id,
    b.customer_id,
    b.vehicle_id,
    b.start_station_id,
    b.end_station_id,
    b.status,
    b.booked_at,
    b.started_at,
    b.ended_at,
    b.distance_km,
    b.created_at,
    b.updated_at,
    cast(b.booked_at as date) as booking_date,
    case
        when b.started_at is not null and b.ended_at is not null
            then {{ minutes_between('b.started_at', 'b.ended_at') }}
    end as duration_min,
    p.amount_cents,
    p.payment_status,
    greatest(b.updated_at, coalesce(p.payment_updated_at, b.updated_at)) as changed_at
from valid_bookings as b
left join ranked_payments as p
    on p.booking_id = b.booking_id
    and p.payment_rank = 1
