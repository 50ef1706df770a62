{{ config(tags=['daily']) }}
-- Staging: 1:1 with bronze.journal_lines, typed columns only. Tagged `daily`: each day maps to its 24
-- hourly Bronze partitions, so the trial balance of a day waits for all of its ledger drops.
select
    journal_id,
    cast(line_no as bigint) as line_no,
    posted_at,
    account,
    cost_center,
    description,
    cast(amount as decimal(19, 4)) as amount,
    currency,
    cast(amount_txn as decimal(19, 4)) as amount_txn,
    cast(fx_rate as decimal(19, 6)) as fx_rate
from {{ source('bronze', 'journal_lines') }}
