{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['daily'],
        contract={'enforced': true},
        pre_hook="{{ delete_window('production_date') }}",
        on_schema_change='append_new_columns',
        properties={'partitioning': "ARRAY['production_date']"},
    )
}}
-- Daily production summary per field: exact decimal volumes (sums of DECIMAL(19,4) stay exact; the
-- cast back to (19,4) fails loudly rather than rounding if a sum ever outgrew it).
select
    p.production_date,
    w.field_id,
    f.field_name,
    count(*) as wells_reporting,
    cast(sum(p.oil_bbl) as decimal(19, 4)) as oil_bbl,
    cast(sum(p.gas_mcf) as decimal(19, 4)) as gas_mcf,
    cast(sum(p.water_bbl) as decimal(19, 4)) as water_bbl,
    round(avg(p.tubing_pressure_psi), 6) as avg_tubing_pressure_psi,
    sum(p.downtime_hours) as downtime_hours
from {{ ref('stg_well_production') }} as p
inner join {{ ref('stg_wells') }} as w
    on w.well_id = p.well_id
inner join {{ ref('stg_fields') }} as f
    on f.field_id = w.field_id
where {{ window_filter('p.production_date', 'date') }}
group by p.production_date, w.field_id, f.field_name
