{#- The data window of a daily-partitioned run.

    Dagster passes the window as the environment variables STRATA_WINDOW_START / STRATA_WINDOW_END
    ("YYYY-MM-DD", end exclusive, any number of days), not as `--vars`: any change of `--vars` makes
    dbt discard its whole partial parse. By hand, `--vars '{"window_start": ..., "window_end": ...}'`
    still works and wins over the environment; with neither, the window covers all data.
    Every daily model reads only its window, and `delete_window` empties that
    window in the existing table first, so a re-run replaces the window and never duplicates it.
    The SQL these macros emit is the same on DuckDB and Trino (standard typed literals only).
-#}

{#- While dbt parses (`execute` is false) the window is not read: dbt re-parses every file that read an
    environment variable whose value changed since, and the window changes the SQL only, never a ref or
    a config, so parsing does not depend on it. dbt renders the SQL again when it runs a node, with the
    run's window. The daily tests' yml `where` configs (rendered once, at parse time) read the same
    variables inline, so only those three yml files are re-parsed for a new window. -#}
{% macro window_bound(name) -%}
    {%- set defaults = {'window_start': '1900-01-01', 'window_end': '2999-12-31'} -%}
    {%- set value = var(name, none) -%}
    {%- if value is none and not execute -%}
        {%- set value = defaults[name] -%}
    {%- elif value is none -%}
        {%- set value = env_var('STRATA_' ~ name | upper, defaults[name]) -%}
    {%- endif -%}
    {%- set value = value | string | trim -%}
    {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', value) -%}
        {{ exceptions.raise_compiler_error(
            "window bound " ~ name ~ " (var " ~ name ~ " or STRATA_" ~ name | upper
            ~ ") must be an ISO date YYYY-MM-DD, got '" ~ value ~ "'") }}
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
