{#- Generic test: every day of the run's window holds the volume a complete day has. A day fails when
    it has no rows at all, or, once `min_history_days` of the `lookback_days` before it have rows,
    when it has fewer than `min_ratio` times their average rows, or rows in fewer distinct hours (of
    `timestamp_column`) than each of them had. So an empty or partial day (a missing or empty hourly
    drop) fails this blocking test in the run that builds it: dbt skips the models downstream of it
    and the day is not published as if it were complete.

    Days of the window are listed explicitly (up to 366 of them), so a day without a single row is
    judged too; a run without a window (a full build) judges the days the table holds.

    A person may deliberately rebuild an incomplete day: the run tag `strata/incomplete_ok=true` sets
    STRATA_INCOMPLETE_OK for dbt (assets/transform/dbt_models.py), which turns this test off for that
    run only; the tag stays on the run and in its audit record. -#}
{% test expected_daily_volume(model, column_name, timestamp_column, min_ratio=0.5, lookback_days=7, min_history_days=3) %}
{%- set start = modules.datetime.date.fromisoformat(window_start()) -%}
{%- set end = modules.datetime.date.fromisoformat(window_end()) -%}
{%- set span = (end - start).days -%}
with volume as (
    select
        {{ column_name }} as partition_date,
        count(*) as row_count,
        count(distinct extract(hour from {{ timestamp_column }})) as hours_with_rows
    from {{ model }}
    where {{ column_name }} < date '{{ window_end() }}'
    group by {{ column_name }}
),

days as (
{%- if 0 < span <= 366 %}
    {%- for offset in range(span) %}
    select date '{{ start + modules.datetime.timedelta(days=offset) }}' as partition_date{% if not loop.last %} union all{% endif %}
    {%- endfor %}
{%- else %}
    select partition_date from volume
    where partition_date >= date '{{ window_start() }}'
{%- endif %}
),

judged as (
    select
        d.partition_date,
        coalesce(max(v.row_count), 0) as row_count,
        coalesce(max(v.hours_with_rows), 0) as hours_with_rows,
        count(h.partition_date) as history_days,
        avg(h.row_count) as history_avg_rows,
        min(h.hours_with_rows) as history_min_hours
    from days as d
    left join volume as v
        on v.partition_date = d.partition_date
    left join volume as h
        on date_diff('day', h.partition_date, d.partition_date) between 1 and {{ lookback_days }}
    group by d.partition_date
)

select *
from judged
where '{{ env_var("STRATA_INCOMPLETE_OK", "false") }}' <> 'true'
    and (
        row_count = 0
        or (
            history_days >= {{ min_history_days }}
            and (row_count < {{ min_ratio }} * history_avg_rows or hours_with_rows < history_min_hours)
        )
    )
{% endtest %}
