-- Each user's daily revenue with a running total and the day-over-day change (window functions).
with daily as (
    select
        user_id,
        event_date,
        {{ money_sum('amount') }} as revenue
    from {{ ref('silver_events') }}
    where user_id is not null
    group by user_id, event_date
)

select
    user_id,
    event_date,
    revenue,
    sum(revenue) over (
        partition by user_id order by event_date
        rows between unbounded preceding and current row
    ) as running_revenue,
    revenue - lag(revenue) over (partition by user_id order by event_date) as revenue_change,
    row_number() over (partition by user_id order by event_date) as active_day_number
from daily
