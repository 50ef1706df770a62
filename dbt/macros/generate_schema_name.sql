{#- Models land in the schema they name (`silver`, `gold`), not dbt's default `<target schema>_<custom>`:
    the platform keys dbt assets as [schema, model] and Trino reads the same names. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
