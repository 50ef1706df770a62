-- Staging: 1:1 with bronze.wells, typed columns only.
select
    cast(well_id as bigint) as well_id,
    cast(field_id as bigint) as field_id,
    well_name,
    well_type,
    cast(working_interest as decimal(9, 6)) as working_interest,
    spud_date,
    created_at,
    updated_at
from {{ source('bronze', 'wells') }}
