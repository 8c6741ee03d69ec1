{{ config(materialized='ephemeral') }}
-- The seed's mapping of event types to reporting categories, inlined where it is used.
select
    {{ normalize_event_type('event_type') }} as event_type,
    category
from {{ ref('event_type_categories') }}
