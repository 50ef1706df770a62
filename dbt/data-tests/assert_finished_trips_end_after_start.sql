-- Completed bookings (of the run's window) must have started, ended, and ended no earlier than they
-- started. Returns the offending bookings.
select
    booking_id,
    status,
    started_at,
    ended_at
from {{ ref('fct_bookings') }}
where {{ window_filter('booking_date', 'date') }}
  and status = 'completed'
  and (
      started_at is null
      or ended_at is null
      or ended_at < started_at
  )
