{#- The data window of a daily-partitioned run.

    Dagster passes `--vars '{"window_start": "YYYY-MM-DD", "window_end": "YYYY-MM-DD"}'` (end exclusive,
    any number of days). Every daily model reads only its window, and `delete_window` empties that
    window in the existing table first, so a re-run replaces the window and never duplicates it.
    The SQL these macros emit is the same on DuckDB and Trino (standard typed literals only).
-#}

{% macro window_bound(name) -%}
    {%- set value = var(name) | string | trim -%}
    {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', value) -%}
        {{ exceptions.raise_compiler_error(
            "var " ~ name ~ " must be an ISO date YYYY-MM-DD, got '" ~ value ~ "'") }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}

{% macro window_start() -%}
    {{ return(window_bound('window_start')) }}
{%- endmacro %}

{% macro window_end() -%}
    {{ return(window_bound('window_end')) }}
{%- endmacro %}

{#- `column >= start and column < end`; data_type is 'timestamp' (default) or 'date'. -#}
{% macro window_filter(column, data_type='timestamp') -%}
    {%- if data_type == 'date' -%}
        {{ column }} >= date '{{ window_start() }}' and {{ column }} < date '{{ window_end() }}'
    {%- elif data_type == 'timestamp' -%}
        {{ column }} >= timestamp '{{ window_start() }} 00:00:00' and {{ column }} < timestamp '{{ window_end() }} 00:00:00'
    {%- else -%}
        {{ exceptions.raise_compiler_error("window_filter: data_type must be 'timestamp' or 'date', got " ~ data_type) }}
    {%- endif -%}
{%- endmacro %}

{#- Pre-hook of every daily model: on an incremental run, delete the window's rows from the existing
    table before the window is appended again (incremental_strategy 'append'). Dates that no longer
    have rows are thus emptied too. On the first build (or --full-refresh) the table is created from
    the window's rows and there is nothing to delete. -#}
{% macro delete_window(column, data_type='date') -%}
    {%- if is_incremental() -%}
        delete from {{ this }} where {{ window_filter(column, data_type) }}
    {%- endif -%}
{%- endmacro %}
