{#- Strata's implementation of dbt's own macros, the `dbt` namespace (`dbt.dateadd(…)`, or
    unqualified). Each public macro dispatches like dbt's, so that a project or a package can
    provide `strata__<name>` or `default__<name>`; the defaults here emit SQL that DataFusion
    runs. Written for Strata from dbt's documented signatures. -#}

{#- Tests -#}
{% macro should_store_failures() %}{{ return(config.get('store_failures', false)) }}{% endmacro %}
{% macro should_full_refresh() %}{{ return(config.get('full_refresh', false) or flags.FULL_REFRESH) }}{% endmacro %}

{#- Types -#}
{% macro type_string() %}{{ return(adapter.dispatch('type_string', 'dbt')()) }}{% endmacro %}
{% macro default__type_string() %}varchar{% endmacro %}
{% macro type_timestamp() %}{{ return(adapter.dispatch('type_timestamp', 'dbt')()) }}{% endmacro %}
{% macro default__type_timestamp() %}timestamp{% endmacro %}
{% macro type_float() %}{{ return(adapter.dispatch('type_float', 'dbt')()) }}{% endmacro %}
{% macro default__type_float() %}double{% endmacro %}
{% macro type_numeric() %}{{ return(adapter.dispatch('type_numeric', 'dbt')()) }}{% endmacro %}
{% macro default__type_numeric() %}numeric(28,6){% endmacro %}
{% macro type_bigint() %}{{ return(adapter.dispatch('type_bigint', 'dbt')()) }}{% endmacro %}
{% macro default__type_bigint() %}bigint{% endmacro %}
{% macro type_int() %}{{ return(adapter.dispatch('type_int', 'dbt')()) }}{% endmacro %}
{% macro default__type_int() %}integer{% endmacro %}
{% macro type_boolean() %}{{ return(adapter.dispatch('type_boolean', 'dbt')()) }}{% endmacro %}
{% macro default__type_boolean() %}boolean{% endmacro %}

{#- Casts -#}
{% macro cast(field, type) %}{{ return(adapter.dispatch('cast', 'dbt')(field, type)) }}{% endmacro %}
{% macro default__cast(field, type) %}cast({{ field }} as {{ type }}){% endmacro %}
{% macro safe_cast(field, type) %}{{ return(adapter.dispatch('safe_cast', 'dbt')(field, type)) }}{% endmacro %}
{% macro default__safe_cast(field, type) %}try_cast({{ field }} as {{ type }}){% endmacro %}
{% macro cast_bool_to_text(field) %}{{ return(adapter.dispatch('cast_bool_to_text', 'dbt')(field)) }}{% endmacro %}
{% macro default__cast_bool_to_text(field) %}cast({{ field }} as {{ type_string() }}){% endmacro %}

{#- Dates and times -#}
{% macro current_timestamp() %}{{ return(adapter.dispatch('current_timestamp', 'dbt')()) }}{% endmacro %}
{% macro default__current_timestamp() %}now(){% endmacro %}
{% macro current_timestamp_backcompat() %}{{ current_timestamp() }}{% endmacro %}
{% macro current_timestamp_in_utc_backcompat() %}{{ current_timestamp() }}{% endmacro %}
{% macro date_trunc(datepart, date) %}{{ return(adapter.dispatch('date_trunc', 'dbt')(datepart, date)) }}{% endmacro %}
{% macro default__date_trunc(datepart, date) %}date_trunc('{{ datepart }}', {{ date }}){% endmacro %}
{% macro dateadd(datepart, interval, from_date_or_timestamp) %}{{ return(adapter.dispatch('dateadd', 'dbt')(datepart, interval, from_date_or_timestamp)) }}{% endmacro %}
{% macro default__dateadd(datepart, interval, from_date_or_timestamp) -%}
    {#- A literal count becomes an interval literal (any datepart); a computed count becomes a
        duration for fixed-length dateparts, and an interval made from text for months. -#}
    {%- set part = datepart | lower | trim -%}
    {%- set count = interval | string | trim -%}
    {%- set months = {'year': 12, 'quarter': 3, 'month': 1} -%}
    {%- set days = {'week': 7, 'day': 1} -%}
    {%- set seconds = {'week': 604800, 'day': 86400, 'hour': 3600, 'minute': 60, 'second': 1} -%}
    {%- if count.lstrip('-').isdigit() and part in months -%}
    ({{ from_date_or_timestamp }} + interval '{{ count | int * months[part] }} month')
    {%- elif count.lstrip('-').isdigit() and part in days -%}
    ({{ from_date_or_timestamp }} + interval '{{ count | int * days[part] }} day')
    {%- elif count.lstrip('-').isdigit() and part in seconds -%}
    ({{ from_date_or_timestamp }} + interval '{{ count | int * seconds[part] }} second')
    {%- elif part in seconds -%}
    (cast({{ from_date_or_timestamp }} as timestamp) + arrow_cast(cast({{ interval }} as bigint) * {{ seconds[part] }}, 'Duration(Second)'))
    {%- elif part in months -%}
    ({{ from_date_or_timestamp }} + cast(concat(cast(cast({{ interval }} as bigint) * {{ months[part] }} as varchar), ' month') as interval))
    {%- else -%}
    {{ exceptions.raise_compiler_error("dateadd: unknown date part '" ~ part ~ "'; use year, quarter, month, week, day, hour, minute or second") }}
    {%- endif -%}
{%- endmacro %}
{% macro datediff(first_date, second_date, datepart) %}{{ return(adapter.dispatch('datediff', 'dbt')(first_date, second_date, datepart)) }}{% endmacro %}
{% macro default__datediff(first_date, second_date, datepart) -%}
    {#- Boundaries crossed, as dbt's datediff counts them: the difference of the truncated values. -#}
    {%- set part = datepart | lower | trim -%}
    {%- set first = "cast(" ~ first_date ~ " as timestamp)" -%}
    {%- set second = "cast(" ~ second_date ~ " as timestamp)" -%}
    {%- if part == 'year' -%}
    cast(date_part('year', {{ second }}) - date_part('year', {{ first }}) as bigint)
    {%- elif part == 'quarter' -%}
    cast((date_part('year', {{ second }}) - date_part('year', {{ first }})) * 4 + date_part('quarter', {{ second }}) - date_part('quarter', {{ first }}) as bigint)
    {%- elif part == 'month' -%}
    cast((date_part('year', {{ second }}) - date_part('year', {{ first }})) * 12 + date_part('month', {{ second }}) - date_part('month', {{ first }}) as bigint)
    {%- elif part in ('week', 'day', 'hour', 'minute', 'second') -%}
    {%- set seconds = {'week': 604800, 'day': 86400, 'hour': 3600, 'minute': 60, 'second': 1}[part] -%}
    {%- set unit = 'day' if part == 'week' else part -%}
    {%- if part == 'week' -%}
    cast(floor((date_part('epoch', date_trunc('day', {{ second }})) - date_part('epoch', date_trunc('day', {{ first }}))) / {{ seconds }}) as bigint)
    {%- else -%}
    cast((date_part('epoch', date_trunc('{{ unit }}', {{ second }})) - date_part('epoch', date_trunc('{{ unit }}', {{ first }}))) / {{ seconds }} as bigint)
    {%- endif -%}
    {%- else -%}
    {{ exceptions.raise_compiler_error("datediff: unsupported datepart '" ~ datepart ~ "'; use year, quarter, month, week, day, hour, minute or second") }}
    {%- endif -%}
{%- endmacro %}
{% macro last_day(date, datepart) %}{{ return(adapter.dispatch('last_day', 'dbt')(date, datepart)) }}{% endmacro %}
{% macro default__last_day(date, datepart) -%}
    cast({{ dateadd('day', '-1', dateadd(datepart, '1', date_trunc(datepart, date))) }} as date)
{%- endmacro %}
{% macro date(year, month, day) %}{{ return(adapter.dispatch('date', 'dbt')(year, month, day)) }}{% endmacro %}
{% macro default__date(year, month, day) %}make_date({{ year }}, {{ month }}, {{ day }}){% endmacro %}
{% macro generate_series(upper_bound) %}{{ return(adapter.dispatch('generate_series', 'dbt')(upper_bound)) }}{% endmacro %}
{% macro default__generate_series(upper_bound) -%}
    select unnest(range(1, {{ upper_bound }} + 1)) as generated_number
{%- endmacro %}
{% macro date_spine(datepart, start_date, end_date) %}{{ return(adapter.dispatch('date_spine', 'dbt')(datepart, start_date, end_date)) }}{% endmacro %}
{% macro default__date_spine(datepart, start_date, end_date) -%}
    {#- Every `datepart` from start_date (included) to end_date (excluded), as `date_<datepart>`. -#}
    select cast(date_{{ datepart }} as timestamp) as date_{{ datepart }}
    from (
        select unnest(range(cast({{ start_date }} as timestamp), cast({{ end_date }} as timestamp), interval '1 {{ datepart }}')) as date_{{ datepart }}
    ) as spine
{%- endmacro %}

{#- Strings -#}
{% macro concat(fields) %}{{ return(adapter.dispatch('concat', 'dbt')(fields)) }}{% endmacro %}
{% macro default__concat(fields) %}concat({{ fields | join(', ') }}){% endmacro %}
{% macro hash(field) %}{{ return(adapter.dispatch('hash', 'dbt')(field)) }}{% endmacro %}
{% macro default__hash(field) %}md5(cast({{ field }} as {{ type_string() }})){% endmacro %}
{% macro split_part(string_text, delimiter_text, part_number) %}{{ return(adapter.dispatch('split_part', 'dbt')(string_text, delimiter_text, part_number)) }}{% endmacro %}
{% macro default__split_part(string_text, delimiter_text, part_number) %}split_part({{ string_text }}, {{ delimiter_text }}, {{ part_number }}){% endmacro %}
{% macro position(substring_text, string_text) %}{{ return(adapter.dispatch('position', 'dbt')(substring_text, string_text)) }}{% endmacro %}
{% macro default__position(substring_text, string_text) %}strpos({{ string_text }}, {{ substring_text }}){% endmacro %}
{% macro length(expression) %}{{ return(adapter.dispatch('length', 'dbt')(expression)) }}{% endmacro %}
{% macro default__length(expression) %}length({{ expression }}){% endmacro %}
{% macro replace(field, old_chars, new_chars) %}{{ return(adapter.dispatch('replace', 'dbt')(field, old_chars, new_chars)) }}{% endmacro %}
{% macro default__replace(field, old_chars, new_chars) %}replace({{ field }}, {{ old_chars }}, {{ new_chars }}){% endmacro %}
{% macro right(string_text, length_expression) %}{{ return(adapter.dispatch('right', 'dbt')(string_text, length_expression)) }}{% endmacro %}
{% macro default__right(string_text, length_expression) %}right({{ string_text }}, {{ length_expression }}){% endmacro %}
{% macro escape_single_quotes(expression) %}{{ return(adapter.dispatch('escape_single_quotes', 'dbt')(expression)) }}{% endmacro %}
{% macro default__escape_single_quotes(expression) %}{{ expression | replace("'", "''") }}{% endmacro %}
{% macro string_literal(value) %}{{ return(adapter.dispatch('string_literal', 'dbt')(value)) }}{% endmacro %}
{% macro default__string_literal(value) %}'{{ value }}'{% endmacro %}

{#- Aggregates -#}
{% macro listagg(measure, delimiter_text="','", order_by_clause=none, limit_num=none) %}{{ return(adapter.dispatch('listagg', 'dbt')(measure, delimiter_text, order_by_clause, limit_num)) }}{% endmacro %}
{% macro default__listagg(measure, delimiter_text, order_by_clause, limit_num) -%}
    {%- if limit_num -%}
    {{ exceptions.raise_compiler_error("listagg: limit_num is not supported by Strata; filter the rows before aggregating") }}
    {%- endif -%}
    string_agg({{ measure }}, {{ delimiter_text }}{% if order_by_clause %} {{ order_by_clause }}{% endif %})
{%- endmacro %}
{% macro any_value(expression) %}{{ return(adapter.dispatch('any_value', 'dbt')(expression)) }}{% endmacro %}
{% macro default__any_value(expression) %}first_value({{ expression }}){% endmacro %}
{% macro bool_or(expression) %}{{ return(adapter.dispatch('bool_or', 'dbt')(expression)) }}{% endmacro %}
{% macro default__bool_or(expression) %}bool_or({{ expression }}){% endmacro %}

{#- Set operations -#}
{% macro except() %}{{ return(adapter.dispatch('except', 'dbt')()) }}{% endmacro %}
{% macro default__except() %}except{% endmacro %}
{% macro intersect() %}{{ return(adapter.dispatch('intersect', 'dbt')()) }}{% endmacro %}
{% macro default__intersect() %}intersect{% endmacro %}

{#- Arrays -#}
{% macro array_construct(inputs=[], data_type=none) %}{{ return(adapter.dispatch('array_construct', 'dbt')(inputs, data_type)) }}{% endmacro %}
{% macro default__array_construct(inputs, data_type) %}make_array({{ inputs | join(', ') }}){% endmacro %}
{% macro array_append(array, new_element) %}{{ return(adapter.dispatch('array_append', 'dbt')(array, new_element)) }}{% endmacro %}
{% macro default__array_append(array, new_element) %}array_append({{ array }}, {{ new_element }}){% endmacro %}
{% macro array_concat(array_1, array_2) %}{{ return(adapter.dispatch('array_concat', 'dbt')(array_1, array_2)) }}{% endmacro %}
{% macro default__array_concat(array_1, array_2) %}array_concat({{ array_1 }}, {{ array_2 }}){% endmacro %}

{#- Implementations for Strata of packages' cross-database macros, found by their dispatch
    before the package's own `default__` (see `adapter.dispatch`). -#}
{% macro strata__convert_timezone(column, target_tz, source_tz) -%}
    to_local_time(cast({{ column }} as timestamp) at time zone '{{ source_tz }}' at time zone '{{ target_tz }}')
{%- endmacro %}

{#- dbt's naming macros, for a project's own generate_schema_name / generate_alias_name to
    call. Strata calls a naming macro only when the root project defines it; without one,
    Strata's rule stands (see docs/concepts.md). -#}
{% macro default__generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}
    {%- else -%}{{ target.schema }}_{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
{% macro generate_schema_name_for_env(custom_schema_name, node) -%}
    {%- if target.name == 'prod' and custom_schema_name is not none -%}{{ custom_schema_name | trim }}
    {%- else -%}{{ target.schema }}{%- endif -%}
{%- endmacro %}
{% macro default__generate_alias_name(custom_alias_name=none, node=none) -%}
    {%- if custom_alias_name -%}{{ custom_alias_name | trim }}
    {%- else -%}{{ node.name }}{%- endif -%}
{%- endmacro %}
