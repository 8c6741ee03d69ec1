-- Revenue and buyers per plan, country and category; events of unknown users count as 'unknown'.
select
    coalesce(u.plan, 'unknown') as plan,
    coalesce(u.country, 'unknown') as country,
    coalesce(c.category, 'other') as category,
    count(*) as event_count,
    count(distinct e.user_id) as users,
    {{ money_sum('e.amount') }} as revenue
from {{ ref('silver_events') }} as e
left join {{ ref('silver_users') }} as u on e.user_id = u.user_id
left join {{ ref('event_categories') }} as c on e.event_type = c.event_type
group by 1, 2, 3
