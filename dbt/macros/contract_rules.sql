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

{#- True when a row breaks any rule of `rules`. -#}
{% macro breaks_any_rule(rules) -%}
    ({% for r in rules %}({{ r.broken_when }}){% if not loop.last %} or {% endif %}{% endfor %})
{%- endmacro %}
