-- Bookings that break the Silver contract (macros/contract_rules.sql): one row per broken rule, with
-- the offending value as text and the runs that quarantined it. They never reach silver.bookings.
{{ contract_violations(
    ref('stg_bookings'),
    bookings_contract_rules(),
    keys=['booking_id', 'updated_at'],
) }}
