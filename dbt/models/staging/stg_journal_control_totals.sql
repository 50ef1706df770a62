{{ config(tags=['daily']) }}
-- Staging: 1:1 with bronze.journal_control_totals, typed columns only (daily over the hourly batches).
select
    batch_id,
    batch_hour,
    cast(line_count as bigint) as line_count,
    cast(debit_total as decimal(19, 4)) as debit_total,
    cast(credit_total as decimal(19, 4)) as credit_total
from {{ source('bronze', 'journal_control_totals') }}
