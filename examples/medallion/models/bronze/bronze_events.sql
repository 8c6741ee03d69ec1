-- Raw events exactly as received, plus lineage columns telling which load brought them.
select
    *,
    '{{ var("batch_id") }}' as _batch_id,
    current_timestamp as _ingested_at,
    '{{ var("source_system") }}' as _source_system
from {{ source('raw', 'events') }}
