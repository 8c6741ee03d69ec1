-- Per user and day: how much they did and how varied it was.
select
    user_id,
    event_date,
    count(*) as event_count,
    count(distinct event_type) as distinct_event_types,
    {{ money_sum('amount') }} as revenue
from {{ ref('silver_events') }}
group by user_id, event_date
