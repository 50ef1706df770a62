-- Staging: 1:1 with bronze.payments, typed columns only. Money stays integer cents.
select
    cast(payment_id as bigint) as payment_id,
    cast(booking_id as bigint) as booking_id,
    cast(amount_cents as bigint) as amount_cents,
    currency,
    status,
    paid_at,
    created_at,
    updated_at
from {{ source('bronze', 'payments') }}
