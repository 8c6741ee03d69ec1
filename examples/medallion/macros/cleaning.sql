{# Event types arrive as 'Page_View ', ' CLICK' …: compare them lowercased and trimmed. #}
{% macro normalize_event_type(column) -%}
    lower(trim({{ column }}))
{%- endmacro %}

{# Revenue sums ignore unparsable amounts and round to cents. #}
{% macro money_sum(column) -%}
    round(coalesce(sum({{ column }}), 0), 2)
{%- endmacro %}
