-- Every booking of a day is counted under exactly one status. Returns the days where they do not add up.
select
    kpi_date,
    bookings_total,
    bookings_reserved + bookings_active + bookings_completed + bookings_cancelled as bookings_by_status
from {{ ref('kpi_daily') }}
where {{ window_filter('kpi_date', 'date') }}
  and bookings_total <> bookings_reserved + bookings_active + bookings_completed + bookings_cancelled
