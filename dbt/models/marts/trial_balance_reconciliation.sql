{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['daily'],
        contract={'enforced': true},
        pre_hook="{{ delete_window('posting_date') }}",
        on_schema_change='append_new_columns',
        properties={'partitioning': "ARRAY['posting_date']"},
    )
}}
-- Per day: the trial balance against the ledger's control totals. `balanced` holds when the lines net
-- to exactly zero and lines, debits and credits all equal the control totals.
with lines as (
    select
        cast(posted_at as date) as posting_date,
        count(*) as lines,
        sum(case when amount > 0 then amount else 0 end) as debit_total,
        -sum(case when amount < 0 then amount else 0 end) as credit_total,
        sum(amount) as net_amount
    from {{ ref('stg_journal_lines') }}
    where {{ window_filter('posted_at') }}
    group by cast(posted_at as date)
),

control as (
    select
        cast(batch_hour as date) as posting_date,
        sum(line_count) as control_lines,
        sum(debit_total) as control_debit_total,
        sum(credit_total) as control_credit_total
    from {{ ref('stg_journal_control_totals') }}
    where {{ window_filter('batch_hour') }}
    group by cast(batch_hour as date)
)

select
    c.posting_date,
    coalesce(l.lines, 0) as lines,
    cast(c.control_lines as bigint) as control_lines,
    cast(coalesce(l.debit_total, 0) as decimal(19, 4)) as debit_total,
    cast(c.control_debit_total as decimal(19, 4)) as control_debit_total,
    cast(coalesce(l.credit_total, 0) as decimal(19, 4)) as credit_total,
    cast(c.control_credit_total as decimal(19, 4)) as control_credit_total,
    cast(coalesce(l.net_amount, 0) as decimal(19, 4)) as net_amount,
    (
        coalesce(l.net_amount, 0) = 0
        and coalesce(l.lines, 0) = c.control_lines
        and coalesce(l.debit_total, 0) = c.control_debit_total
        and coalesce(l.credit_total, 0) = c.control_credit_total
    ) as balanced
from control as c
left join lines as l
    on l.posting_date = c.posting_date
