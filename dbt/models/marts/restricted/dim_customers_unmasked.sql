-- Current state of every customer with personal data in clear, for the PII reader role only
-- (schema gold_restricted; prod grant: macros/pii.sql grant_pii_reader).
select
    customer_id,
    full_name,
    email,
    city,
    segment,
    created_at,
    updated_at
from {{ ref('stg_customers') }}
