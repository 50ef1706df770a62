-- Staging: 1:1 with bronze.well_production, typed columns only. Volumes stay exact decimals.
select
    cast(reading_id as bigint) as reading_id,
    cast(well_id as bigint) as well_id,
    production_date,
    cast(oil_bbl as decimal(19, 4)) as oil_bbl,
    cast(gas_mcf as decimal(19, 4)) as gas_mcf,
    cast(water_bbl as decimal(19, 4)) as water_bbl,
    cast(tubing_pressure_psi as double) as tubing_pressure_psi,
    cast(casing_pressure_psi as double) as casing_pressure_psi,
    cast(downtime_hours as double) as downtime_hours,
    created_at,
    updated_at
from {{ source('bronze', 'well_production') }}
