-- Current state of every customer.
select
    customer_id,
    full_name,
    email,
    city,
    segment,
    created_at,
    updated_at
from {{ ref('stg_customers') }}
