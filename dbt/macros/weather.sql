{#- The weather location of a station: the demo's weather API groups consecutive stations into clusters
    of 4 (demo/weather_api.py, STATIONS_PER_LOCATION). Portable: integer `/` differs between DuckDB
    and Trino, `floor` of a decimal quotient does not. -#}
{% macro station_location(station_id) -%}
    (cast(floor(({{ station_id }} - 1) / 4.0) as bigint) + 1)
{%- endmacro %}

{#- `source(source_name, table_name)` when the relation exists, else an empty SELECT of `columns`
    (name -> SQL type). A source fed by an outside API (weather) may not exist yet on a new platform;
    the models built on it are then empty instead of failing the whole `dbt build`. The source is
    referenced unconditionally below so dbt records the dependency while parsing (`execute` false). -#}
{% macro source_or_empty(source_name, table_name, columns) -%}
    {#- The Relation, to ask whether the table exists; `source()` renders the read itself, which on Trino
        is a string pinned to the run's snapshot (macros/bronze_snapshots.sql), not a Relation. -#}
    {%- set relation = builtins.source(source_name, table_name) -%}
    {%- if execute and adapter.get_relation(database=relation.database, schema=relation.schema, identifier=relation.identifier) is none -%}
        (select {% for name, type in columns.items() %}cast(null as {{ type }}) as {{ name }}{{ ", " if not loop.last }}{% endfor %} where 1 = 0)
    {%- else -%}
        {{ source(source_name, table_name) }}
    {%- endif -%}
{%- endmacro %}
