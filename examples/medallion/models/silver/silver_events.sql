-- Typed, cleaned and deduplicated events: a redelivered event keeps its latest ingestion.
with typed as (
    select
        trim(event_id) as event_id,
        try_cast(user_id as bigint) as user_id,
        {{ normalize_event_type('event_type') }} as event_type,
        try_cast(event_timestamp as timestamp) as event_ts,
        try_cast(amount as double) as amount,
        lower(trim(device)) as device,
        _batch_id,
        _ingested_at
    from {{ ref('bronze_events') }}
),

ranked as (
    select
        *,
        row_number() over (partition by event_id order by _ingested_at desc, event_ts desc) as delivery_rank
    from typed
    where event_id is not null
      and event_id <> ''
      and event_ts is not null
      and event_type is not null
)

select
    event_id,
    user_id,
    event_type,
    event_ts,
    cast(event_ts as date) as event_date,
    amount,
    device,
    _batch_id
from ranked
where delivery_rank = 1
