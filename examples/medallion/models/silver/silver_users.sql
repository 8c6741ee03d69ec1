select
    try_cast(user_id as bigint) as user_id,
    trim(user_name) as user_name,
    try_cast(signup_date as date) as signup_date,
    lower(trim(plan)) as plan,
    upper(trim(country)) as country
from {{ ref('bronze_users') }}
where try_cast(user_id as bigint) is not null
