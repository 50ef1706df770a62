-- Staging: 1:1 with bronze.customers, typed columns only (timestamps are already naive UTC and are
-- not re-cast: on Trino a bare `timestamp` cast would drop microseconds).
select
    cast(customer_id as bigint) as customer_id,
    full_name,
    email,
    city,
    segment,
    created_at,
    updated_at
from {{ source('bronze', 'customers') }}
