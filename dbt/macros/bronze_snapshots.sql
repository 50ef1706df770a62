{#- Pinned Bronze reads on Trino: `source('bronze', t)` renders `<relation> for version as of <id>`, the
    Iceberg snapshot of `t` that the Dagster run recorded before starting dbt (STRATA_BRONZE_SNAPSHOTS,
    a JSON object table -> snapshot id, set by assets/transform/dbt_models.py). So every Bronze read of a
    run sees one consistent set of snapshots, and the run's `strata/input_snapshots` names exactly those.
    A staging view built in the run keeps its pin until its next build; a run that reads such a view
    without building it therefore does not record that table (dbt_models.bronze_tables_read).

    DuckDB needs no pin: the platform re-points its `bronze.<t>` views at those snapshots before each run.
    A table without a snapshot when the run started is not in the map and is read as it is (empty).
    Read only while executing (like the data window): dbt re-parses the files that read an environment
    variable whose value changed, and the pins change the SQL only, never a dependency. -#}
{% macro source(source_name, table_name) -%}
    {%- set relation = builtins.source(source_name, table_name) -%}
    {%- if execute and target.type == 'trino' and source_name == 'bronze' -%}
        {%- set pins = fromjson(env_var('STRATA_BRONZE_SNAPSHOTS', '{}')) -%}
        {%- if table_name in pins -%}
            {%- set snapshot = pins[table_name] | string -%}
            {%- if not modules.re.fullmatch('-?[0-9]+', snapshot) -%}
                {{ exceptions.raise_compiler_error(
                    "STRATA_BRONZE_SNAPSHOTS: the snapshot of bronze." ~ table_name
                    ~ " must be an Iceberg snapshot id (an integer), got '" ~ snapshot ~ "'") }}
            {%- endif -%}
            {{ return(relation ~ ' for version as of ' ~ snapshot) }}
        {%- endif -%}
    {%- endif -%}
    {{ return(relation) }}
{%- endmacro %}
