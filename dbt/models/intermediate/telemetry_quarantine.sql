{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['daily'],
        pre_hook="{{ delete_window('reading_date') }}",
        properties={'partitioning': "ARRAY['reading_date']"},
    )
}}
-- Rows of the run's window that break the telemetry contract: one row per broken rule, with the
-- offending value as text and the runs that quarantined it. These rows never reach telemetry_clean.
{% for r in telemetry_contract_rules() %}
{% if not loop.first %}union all{% endif %}
select
    vehicle_id,
    ts,
    cast(ts as date) as reading_date,
    '{{ r.rule }}' as rule,
    '{{ r.column }}' as column_name,
    cast({{ r.column }} as varchar) as offending_value,
    '{{ invocation_id }}' as dbt_invocation_id,
    '{{ env_var("STRATA_DAGSTER_RUN_ID", "manual") }}' as dagster_run_id
from {{ ref('stg_telemetry') }}
where {{ window_filter('ts') }} and ({{ r.broken_when }})
{% endfor %}
