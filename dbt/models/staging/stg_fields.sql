-- Staging: 1:1 with bronze.fields, typed columns only.
select
    cast(field_id as bigint) as field_id,
    field_name,
    basin,
    cast(royalty_rate as decimal(9, 6)) as royalty_rate,
    created_at,
    updated_at
from {{ source('bronze', 'fields') }}
