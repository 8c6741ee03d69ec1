-- Silver events must be typed and plausible: returns the rows that are not.
select *
from {{ ref('silver_events') }}
where event_id is null
   or event_ts is null
   or event_date is null
   or (amount is not null and amount < 0)
   or event_type <> lower(trim(event_type))
