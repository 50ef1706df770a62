{#- Expressions whose DuckDB and Trino spellings or semantics differ, written once as SQL that both
    engines run identically. These are deliberately not adapter-dispatched: the compiled SQL is the
    same on both targets, so the portability test (compile on DuckDB, parse as Trino) covers prod. -#}

{#- ISO day of week, 1 = Monday .. 7 = Sunday. `extract(dow ...)` is 0 = Sunday on DuckDB but
    1 = Monday on Trino, and isodow()/day_of_week() exist on one engine each; 1900-01-01 was a Monday. -#}
{% macro iso_day_of_week(ts) -%}
    (mod(date_diff('day', date '1900-01-01', cast({{ ts }} as date)), 7) + 1)
{%- endmacro %}

{#- Minutes between two timestamps, fractional, as double. DuckDB's date_diff counts unit boundaries
    while Trino's counts whole elapsed units; both agree once sub-second parts are truncated, and
    integer `/` differs too (float on DuckDB, integer on Trino), hence the cast. dbt.datediff is not
    used because its DuckDB rendering contains `::` casts. -#}
{% macro minutes_between(start_ts, end_ts) -%}
    (cast(date_diff('second', date_trunc('second', {{ start_ts }}), date_trunc('second', {{ end_ts }})) as double) / 60)
{%- endmacro %}
