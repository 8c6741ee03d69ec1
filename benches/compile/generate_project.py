#!/usr/bin/env python3
"""Writes a synthetic dbt project of N models and M generic tests for compile benchmarks.

The DAG is both deep (a chain runs through every layer) and wide (each model reads one to three
earlier models); models use macros, vars and config(); property files declare columns and tests
of all four built-in kinds. The output is deterministic for the same arguments.
"""
import argparse
import os
import random

TEST_KINDS = ["not_null", "unique", "accepted_values", "relationships"]


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def generate(root, models, tests, seed=7):
    rng = random.Random(seed)
    write(os.path.join(root, "dbt_project.yml"), f"""name: synthetic
version: "1.0"
config-version: 2
profile: synthetic
vars:
  min_amount: 0
  currency: EUR
models:
  synthetic:
    +materialized: view
    silver:
      +materialized: table
    gold:
      +materialized: table
      +tags: [reporting]
""")
    write(os.path.join(root, "profiles.yml"), """synthetic:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: ":memory:"
""")
    write(os.path.join(root, "macros", "helpers.sql"), """
{% macro cents_to_units(column) -%}
    round({{ column }} / 100.0, 2)
{%- endmacro %}

{% macro safe_divide(numerator, denominator) -%}
    case when {{ denominator }} = 0 then null else {{ numerator }} / {{ denominator }} end
{%- endmacro %}

{% macro amount_columns(prefix) -%}
    {{ cents_to_units(prefix ~ '.amount') }} as amount_units,
    {{ safe_divide(prefix ~ '.amount', prefix ~ '.quantity') }} as unit_price
{%- endmacro %}
""")
    sources = max(1, models // 20)
    source_tables = "\n".join(f"      - name: table_{i}" for i in range(sources))
    write(os.path.join(root, "models", "sources.yml"), f"""version: 2
sources:
  - name: raw
    meta:
      external_location: "data/{{name}}.parquet"
    tables:
{source_tables}
""")
    bronze = max(1, models // 10)
    gold = max(1, models // 5)
    names = []
    for index in range(models):
        if index < bronze:
            layer = "bronze"
        elif index >= models - gold:
            layer = "gold"
        else:
            layer = "silver"
        name = f"{layer}_model_{index:05d}"
        if index < bronze:
            body = f"""select
    id,
    amount,
    quantity,
    '{{{{ var("currency") }}}}' as currency
from {{{{ source('raw', 'table_{index % sources}') }}}}
where amount >= {{{{ var('min_amount') }}}}
"""
        else:
            parents = {names[-1]} if index % 10 else set()  # a long chain makes the DAG deep
            parents.update(rng.sample(names, k=min(len(names), rng.randint(1, 3))))
            parents = sorted(parents)
            first = parents[0]
            joins = "\n".join(
                f"left join {{{{ ref('{parent}') }}}} as p{number} on p{number}.id = p0.id"
                for number, parent in enumerate(parents[1:], start=1)
            )
            config = "{{ config(tags=['hot']) }}\n" if index % 7 == 0 else ""
            body = f"""{config}select
    p0.id,
    p0.amount,
    p0.quantity,
    {{{{ amount_columns('p0') }}}}
from {{{{ ref('{first}') }}}} as p0
{joins}
{{% if is_incremental() %}}where p0.id > 0{{% endif %}}
"""
        write(os.path.join(root, "models", layer, f"{name}.sql"), body)
        names.append(name)
    # Tests spread over models, in property files of 50 models each.
    per_model = [[] for _ in names]
    for number in range(tests):
        per_model[number % len(names)].append(TEST_KINDS[(number // len(names)) % len(TEST_KINDS)])
    for chunk_start in range(0, len(names), 50):
        entries = []
        for offset, name in enumerate(names[chunk_start:chunk_start + 50]):
            model_index = chunk_start + offset
            columns = {}
            for position, kind in enumerate(per_model[model_index]):
                column = ["id", "amount", "quantity", "amount_units", "unit_price"][position % 5]
                if kind == "accepted_values":
                    test = f"          - accepted_values:\n              values: [{position}, {position + 1}, {position + 2}]\n              quote: false"
                elif kind == "relationships":
                    parent = names[max(0, model_index - 1 - position)]
                    test = f"          - relationships:\n              to: ref('{parent}')\n              field: id"
                else:
                    test = f"          - {kind}"
                columns.setdefault(column, []).append(test)
            column_text = "\n".join(
                f"      - name: {column}\n        data_tests:\n" + "\n".join(column_tests)
                for column, column_tests in columns.items()
            )
            entries.append(f"  - name: {name}\n    description: Synthetic model {name}.\n    columns:\n{column_text}")
        layer = names[chunk_start].split("_")[0]
        write(os.path.join(root, "models", layer, f"properties_{chunk_start:05d}.yml"),
              "version: 2\nmodels:\n" + "\n".join(entries) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--tests", type=int, default=5000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    generate(args.out, args.models, args.tests)
    print(f"wrote {args.models} models and {args.tests} tests to {args.out}")


if __name__ == "__main__":
    main()
