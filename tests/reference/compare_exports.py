#!/usr/bin/env python3
"""`materialized: external` against dbt-duckdb: the same project built by Strata and by
dbt-duckdb must leave the same files (Parquet, CSV, newline-delimited JSON) at the same
locations, with the same columns and rows.

Both tools `build` the project, each in its own copy. Every exported file dbt-duckdb wrote
(outside target/, logs/, seeds/ and Strata's warehouse/) must exist in Strata's copy; both
are read back with DuckDB (`read_parquet`, `read_csv` sniffing the delimiter,
`read_json_auto`) and compared column names first, then rows in any order. The bytes may
differ (compression, a JSON null written or left out); what a reader gets may not — except
for a model without rows, where dbt-duckdb writes one row of NULLs (for its view to filter
out again) and Strata writes the columns and no row: those compare equal.
"""
import argparse
import os
import shutil
import tempfile

import duckdb

from side_by_side import report, run, two_copies

READERS = {".parquet": "read_parquet", ".csv": "read_csv", ".json": "read_json_auto"}
SKIPPED = {"target", "logs", "seeds", "warehouse", "dbt_packages"}


def exported_files(project):
    for folder, subfolders, files in os.walk(project):
        subfolders[:] = [name for name in subfolders if name not in SKIPPED]
        for name in files:
            if os.path.splitext(name)[1] in READERS:
                yield os.path.relpath(os.path.join(folder, name), project)


def contents(con, path):
    reader = READERS[os.path.splitext(path)[1]]
    cursor = con.execute(f"select * from {reader}(?)", [path])
    columns = [description[0] for description in cursor.description]
    rows = sorted(cursor.fetchall(), key=lambda row: [("" if v is None else str(v)) for v in row])
    return columns, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strata", required=True)
    parser.add_argument("--dbt", required=True)
    parser.add_argument("--project", required=True)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="strata-exports-")
    try:
        strata_project, dbt_project, _ = two_copies(args.project, work)
        run([args.strata, "build", "--project-dir", ".", "--threads", "2"], strata_project)
        run([args.dbt, "build", "--profiles-dir", ".", "--project-dir", "."], dbt_project)

        con = duckdb.connect()
        problems, compared = [], 0
        for path in sorted(exported_files(dbt_project)):
            compared += 1
            written = os.path.join(strata_project, path)
            if not os.path.exists(written):
                problems.append(f"{path}: dbt-duckdb wrote it, Strata did not")
                continue
            expected_columns, expected = contents(con, os.path.join(dbt_project, path))
            actual_columns, actual = contents(con, written)
            if expected_columns != actual_columns:
                problems.append(f"{path}: columns differ: dbt-duckdb {expected_columns}, strata {actual_columns}")
            elif expected != actual and not (actual == [] and expected == [tuple([None] * len(expected_columns))]):
                problems.append(f"{path}: rows differ\n  dbt-duckdb: {expected}\n  strata:     {actual}")
            else:
                print(f"ok   {path}: {len(actual)} rows equal")
        report("exports", problems, compared)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
