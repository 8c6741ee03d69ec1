#!/usr/bin/env python3
"""Snapshots against dbt-duckdb: the same project built by Strata and by dbt-duckdb over the
same successive source states must leave the same history.

The project's `runs` file lists the --vars of each state. Both tools `build` the project once
per state, each in its own copy. Then every snapshot and table model is read back — Strata's
Delta tables with the `deltalake` package, dbt-duckdb's from its database file — and compared
row for row, columns in order. Values that record the moment a tool ran (the `check`
strategy's change times, hard-delete times) cannot be equal between two runs: every
timestamp at or after the start of this script compares as NOW, and a `dbt_scd_id` hashed
from such a time as HASH(NOW); everything else, including the `timestamp` strategy's
`dbt_scd_id`, must be equal exactly.
"""
import argparse
import datetime
import json
import os
import shutil
import tempfile

import deltalake
import duckdb

from side_by_side import report, run, two_copies

STARTED = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(seconds=5)


def normalize(value):
    if isinstance(value, datetime.datetime):
        plain = value.astimezone(datetime.timezone.utc).replace(tzinfo=None) if value.tzinfo else value
        return "NOW" if plain >= STARTED else plain.isoformat(sep=" ")
    if isinstance(value, float):
        return round(value, 6)
    return value


def comparable(rows, columns):
    out = []
    for row in rows:
        row = [normalize(value) for value in row]
        if "dbt_scd_id" in columns and "dbt_updated_at" in columns:
            if row[columns.index("dbt_updated_at")] == "NOW":
                row[columns.index("dbt_scd_id")] = "HASH(NOW)"
        out.append(tuple(row))
    return sorted(out, key=lambda row: [("" if v is None else str(v)) for v in row])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strata", required=True)
    parser.add_argument("--dbt", required=True)
    parser.add_argument("--project", required=True)
    args = parser.parse_args()
    with open(os.path.join(args.project, "runs")) as handle:
        states = [line.strip() for line in handle if line.strip()]

    work = tempfile.mkdtemp(prefix="strata-snapshots-")
    try:
        strata_project, dbt_project, database = two_copies(args.project, work)
        for vars_text in states:
            run([args.strata, "build", "--project-dir", ".", "--threads", "2", "--vars", vars_text], strata_project)
            run([args.dbt, "build", "--profiles-dir", ".", "--project-dir", ".", "--vars", vars_text], dbt_project)
        with open(os.path.join(strata_project, "target", "manifest.json")) as handle:
            manifest = json.load(handle)

        con = duckdb.connect(database, read_only=True)
        problems, compared = [], 0
        for node in sorted(manifest["nodes"].values(), key=lambda n: n["unique_id"]):
            kind, materialized = node["resource_type"], node["config"]["materialized"]
            if not (kind == "snapshot" or (kind == "model" and materialized in ("table", "incremental"))):
                continue
            name = node["name"]
            found = con.execute("select table_schema from information_schema.tables where table_name = ?",
                                [name]).fetchall()
            if len(found) != 1:
                problems.append(f"{name}: dbt-duckdb has {len(found)} tables of that name")
                continue
            expected_cursor = con.execute(f'select * from "{found[0][0]}"."{name}"')
            expected_columns = [d[0] for d in expected_cursor.description]
            expected = comparable(expected_cursor.fetchall(), expected_columns)
            location = os.path.join(strata_project, "warehouse", node["relation"]["schema"], node["relation"]["identifier"])
            table = deltalake.DeltaTable(location).to_pyarrow_table()
            actual_columns = table.column_names
            actual = comparable([tuple(row.values()) for row in table.to_pylist()], actual_columns)
            compared += 1
            if expected_columns != actual_columns:
                problems.append(f"{name}: columns differ: dbt-duckdb {expected_columns}, strata {actual_columns}")
            elif expected != actual:
                only_dbt = [row for row in expected if row not in actual]
                only_strata = [row for row in actual if row not in expected]
                problems.append(f"{name}: rows differ\n  only in dbt-duckdb: {only_dbt}\n  only in strata: {only_strata}")
            else:
                print(f"ok   {kind} {name}: {len(actual)} rows equal after {len(states)} states")
        report("snapshots", problems, compared)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
