{#- Compatibility views: the names a legacy consumer (a BI tool, an old extract) still reads, over the
    governed lower_snake_case tables. Declared once, as data, beside the model they expose, in its YAML:

        config:
          meta:
            legacy_views:
              - name: KPI Daily Report            # the legacy relation name, any characters
                schema: legacy                    # optional, default `legacy`
                columns: {"Report Date": kpi_date, "Segment 8": segment8}   # legacy name: governed column

    Run as the project's on-run-end hook: after every dbt invocation, each model that this invocation
    built successfully gets its views (re)created, `create or replace view`, so a view always follows
    the current columns of its table and fails loudly, naming the view, when one it maps is gone.
    The SQL is the same on DuckDB and Trino (double-quoted identifiers, catalog-qualified names). -#}
{% macro create_legacy_views(results) -%}
    {%- if execute -%}
        {%- for result in results
            if result.node.resource_type == 'model' and result.status == 'success'
            and (result.node.config.meta or {}).get('legacy_views') -%}
            {%- for view in result.node.config.meta['legacy_views'] -%}
                {%- set schema = view.get('schema', 'legacy') -%}
                {%- do run_query(legacy_schema_sql(schema)) -%}
                {%- do run_query(legacy_view_sql(view, result.node.relation_name)) -%}
                {{- log("legacy view " ~ schema ~ "." ~ view['name'] ~ " -> " ~ result.node.relation_name, info=true) -}}
            {%- endfor -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}

{% macro legacy_relation(schema, name) -%}
    {{ adapter.quote(target.database) }}.{{ adapter.quote(schema) }}.{{ adapter.quote(name) }}
{%- endmacro %}

{% macro legacy_schema_sql(schema) -%}
    create schema if not exists {{ adapter.quote(target.database) }}.{{ adapter.quote(schema) }}
{%- endmacro %}

{% macro legacy_view_sql(view, governed_relation) -%}
    {%- if not view.get('columns') -%}
        {{ exceptions.raise_compiler_error("legacy view '" ~ view['name'] ~ "' over " ~ governed_relation
            ~ " declares no columns (meta.legacy_views[].columns: legacy name -> governed column)") }}
    {%- endif -%}
    create or replace view {{ legacy_relation(view.get('schema', 'legacy'), view['name']) }} as
    select
    {%- for legacy_name, governed in view['columns'].items() %}
        {{ adapter.quote(governed) }} as {{ adapter.quote(legacy_name) }}{{ "," if not loop.last }}
    {%- endfor %}
    from {{ governed_relation }}
{%- endmacro %}
