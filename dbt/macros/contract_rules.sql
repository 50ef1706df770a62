{#- The Silver data contract of telemetry, declared once: each rule names the column it guards and
    the condition that breaks it. `telemetry_clean` publishes only rows that break no rule;
    `telemetry_quarantine` keeps one row per broken rule with the offending value, so nothing vanishes. -#}

{% macro telemetry_contract_rules() -%}
    {{ return([
        {'rule': 'vehicle_id_not_null', 'column': 'vehicle_id', 'broken_when': 'vehicle_id is null'},
        {'rule': 'ts_not_null', 'column': 'ts', 'broken_when': 'ts is null'},
        {'rule': 'speed_kmh_between_0_and_250', 'column': 'speed_kmh',
         'broken_when': 'speed_kmh is null or speed_kmh < 0 or speed_kmh > 250'},
        {'rule': 'battery_pct_between_0_and_100', 'column': 'battery_pct',
         'broken_when': 'battery_pct is null or battery_pct < 0 or battery_pct > 100'},
        {'rule': 'lat_between_-90_and_90', 'column': 'lat', 'broken_when': 'lat is null or lat < -90 or lat > 90'},
        {'rule': 'lon_between_-180_and_180', 'column': 'lon', 'broken_when': 'lon is null or lon < -180 or lon > 180'},
        {'rule': 'odometer_km_not_negative', 'column': 'odometer_km', 'broken_when': 'odometer_km is null or odometer_km < 0'},
    ]) }}
{%- endmacro %}

{#- The Silver contract of bookings: keys present, a known status of at most 16 characters (a longer
    value is refused, never truncated), no negative distance. -#}
{% macro bookings_contract_rules() -%}
    {{ return([
        {'rule': 'booking_id_not_null', 'column': 'booking_id', 'broken_when': 'booking_id is null'},
        {'rule': 'customer_id_not_null', 'column': 'customer_id', 'broken_when': 'customer_id is null'},
        {'rule': 'vehicle_id_not_null', 'column': 'vehicle_id', 'broken_when': 'vehicle_id is null'},
        {'rule': 'status_allowed', 'column': 'status',
         'broken_when': "status is null or status not in ('reserved', 'active', 'completed', 'cancelled')"},
        {'rule': 'status_at_most_16_chars', 'column': 'status', 'broken_when': 'length(status) > 16'},
        {'rule': 'distance_km_not_negative', 'column': 'distance_km', 'broken_when': 'distance_km < 0'},
    ]) }}
{%- endmacro %}

{#- One row per (row, broken rule) of `relation` within `where`: the quarantine of a contract.
    `keys` are carried as they are; the offending value is kept as text. -#}
{% macro contract_violations(relation, rules, keys, where='1 = 1') -%}
    {%- for r in rules %}
    {% if not loop.first %}union all{% endif %}
    select
        {% for k in keys %}{{ k }}, {% endfor %}
        '{{ r.rule }}' as rule,
        '{{ r.column }}' as column_name,
        cast({{ r.column }} as varchar) as offending_value,
        '{{ invocation_id }}' as dbt_invocation_id,
        '{{ env_var("STRATA_DAGSTER_RUN_ID", "manual") if execute else "manual" }}' as dagster_run_id
    from {{ relation }}
    where ({{ where }}) and ({{ r.broken_when }})
    {%- endfor %}
{%- endmacro %}

{#- True when a row breaks any rule of `rules`, never null: a condition on a null value (say
    `distance_km < 0` for a trip not yet ended) is unknown in SQL, and `not unknown` would drop the row. -#}
{% macro breaks_any_rule(rules) -%}
    ({% for r in rules %}coalesce(({{ r.broken_when }}), false){% if not loop.last %} or {% endif %}{% endfor %})
{%- endmacro %}

{#- The window that orders the readings of one (vehicle_id, ts): a drop may deliver a reading twice.
    The first in this order is published in telemetry_clean; every later copy that differs from it
    goes to telemetry_quarantine as a duplicate key. The order makes the choice deterministic. -#}
{% macro telemetry_duplicates_window() -%}
    partition by vehicle_id, ts
    order by odometer_km desc, battery_pct desc, speed_kmh desc, lat, lon, fault_code nulls last
{%- endmacro %}
