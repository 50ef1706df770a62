{{
    config(
        materialized='incremental',
        incremental_strategy='merge',
        unique_key='booking_id',
        contract={'enforced': true},
        on_schema_change='fail',
    )
}}
-- The "final" step of the bookings promotion: written only from bookings_valid (rows that keep the
-- Silver contract) and only by MERGE on booking_id, so a booking's newer version replaces the older
-- one in place and no booking is ever published twice. An incremental run merges only the bookings
-- that changed (booking or payment) since the latest change already published; the first build, or
-- --full-refresh, publishes all of them. A booking whose newer version breaks the contract keeps its
-- last valid version here, and the breaking version is in bookings_quarantine.
select
    booking_id,
    customer_id,
    vehicle_id,
    start_station_id,
    end_station_id,
    status,
    booked_at,
    started_at,
    ended_at,
    distance_km,
    created_at,
    updated_at,
    booking_date,
    duration_min,
    amount_cents,
    payment_status,
    changed_at
from {{ ref('bookings_valid') }}
{% if is_incremental() %}
where changed_at >= (select max(changed_at) from {{ this }})
{% endif %}
