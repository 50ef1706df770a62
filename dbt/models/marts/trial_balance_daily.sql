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
-- The nightly trial balance: debits, credits and the net per account and day, in exact decimals.
select
    cast(posted_at as date) as posting_date,
    account,
    count(*) as lines,
    cast(sum(case when amount > 0 then amount else 0 end) as decimal(19, 4)) as debit_total,
    cast(-sum(case when amount < 0 then amount else 0 end) as decimal(19, 4)) as credit_total,
    cast(sum(amount) as decimal(19, 4)) as net_amount
from {{ ref('stg_journal_lines') }}
where {{ window_filter('posted_at') }}
group by cast(posted_at as date), account
