{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['daily'],
        pre_hook="{{ delete_window('production_date') }}",
        on_schema_change='append_new_columns',
        properties={'partitioning': "ARRAY['production_date']"},
    )
}}
-- Each field's oil production of a day against its average over the 30 days before it (days with
-- readings only); null while a field has no earlier day. The average is rounded to 4 decimals on purpose.
with per_day as (
    select p.production_date, w.field_id, sum(p.oil_bbl) as oil_bbl
    from {{ ref('stg_well_production') }} as p
    inner join {{ ref('stg_wells') }} as w
        on w.well_id = p.well_id
    where p.production_date >= date '{{ window_start() }}' - interval '30' day
      and p.production_date < date '{{ window_end() }}'
    group by p.production_date, w.field_id
)

select
    d.production_date,
    d.field_id,
    cast(d.oil_bbl as decimal(19, 4)) as oil_bbl,
    cast(round(avg(h.oil_bbl), 4) as decimal(19, 4)) as avg_oil_bbl_30d,
    count(h.production_date) as days_in_average,
    cast(round(cast(d.oil_bbl / nullif(avg(h.oil_bbl), 0) - 1 as double), 6) as double) as variance_ratio
from per_day as d
left join per_day as h
    on h.field_id = d.field_id
    and h.production_date < d.production_date
    and h.production_date >= d.production_date - interval '30' day
where {{ window_filter('d.production_date', 'date') }}
group by d.production_date, d.field_id, d.oil_bbl
