#!/usr/bin/env python3
"""Correctness against DuckDB: every model Strata built must equal what DuckDB computes.

Reads Strata's manifest (target/manifest.json) and run record (target/run_results.json),
recomputes every source, seed and model in DuckDB from the same input files with the same
compiled SQL, reads Strata's Delta tables with the `deltalake` Python package, and compares
them as multisets (EXCEPT ALL both ways). Doubles are rounded to 6 decimals on both sides
(sums in a different order differ in the last bits); columns whose values depend on the
moment of execution (`_ingested_at`) are left out. Test failure counts must match too.

A warehouse on S3 is read with the standard AWS variables; `--mirror PREFIX=DIR` reads sources
under PREFIX from a local copy in DIR instead (DuckDB has no S3 client here without httpfs).
"""
import argparse
import json
import os
import sys

import deltalake
import duckdb

VOLATILE_COLUMNS = {"_ingested_at"}


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def relation_sql(relation):
    return f"{quote(relation['schema'])}.{quote(relation['identifier'])}"


def order(manifest):
    done, ordered = set(), []
    def visit(node_id):
        if node_id in done:
            return
        done.add(node_id)
        for parent in manifest["parent_map"].get(node_id, []):
            visit(parent)
        ordered.append(node_id)
    for node_id in sorted(manifest["nodes"]):
        visit(node_id)
    return ordered


def load_inputs(con, manifest, project, mirrors):
    for node in manifest["nodes"].values():
        relation = node.get("relation")
        if relation and relation["schema"]:
            con.execute(f"create schema if not exists {quote(relation['schema'])}")
        if node["resource_type"] == "source":
            info = node["source"]
            location = info.get("location")
            if location is None:
                continue  # a warehouse table: the seed or model that loads it is created here
            for prefix, folder in mirrors:
                if location.startswith(prefix):
                    location = folder + location[len(prefix):]
            if "://" not in location:
                location = os.path.join(project, location)
            reader = {"parquet": "read_parquet", "csv": "read_csv_auto", "json": "read_json_auto"}[info["format"]]
            con.execute(f"create view {relation_sql(relation)} as select * from {reader}('{location}')")
        elif node["resource_type"] == "seed":
            path = os.path.join(project, node["original_file_path"])
            types = node["config"].get("column_types", {})
            columns = ", ".join(
                f"cast({quote(c['name'])} as {types[c['name']]}) as {quote(c['name'])}" if c["name"] in types else quote(c["name"])
                for c in node["columns"]
            )
            con.execute(f"create table {relation_sql(relation)} as select {columns} from read_csv_auto('{path}', header=true)")


def storage_options(location):
    """delta-rs options for an S3 location, from the standard AWS variables."""
    if not location.startswith("s3://"):
        return None
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    options = {"AWS_REGION": os.environ.get("AWS_REGION", "us-east-1")}
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        options["AWS_ALLOW_HTTP"] = str(endpoint.startswith("http://")).lower()
    return options


def comparable(con, table_sql, columns):
    parts = []
    for name, data_type in columns:
        if name in VOLATILE_COLUMNS:
            continue
        if data_type.upper() in ("DOUBLE", "FLOAT", "REAL"):
            parts.append(f"round({quote(name)}, 6) as {quote(name)}")
        else:
            parts.append(quote(name))
    return f"select {', '.join(parts)} from {table_sql}"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--project", required=True)
    parser.add_argument("--warehouse", required=True, help="Strata's warehouse: a folder or s3:// URL")
    parser.add_argument("--mirror", action="append", default=[], metavar="PREFIX=DIR",
                        help="read sources whose location starts with PREFIX from DIR")
    args = parser.parse_args()
    mirrors = [tuple(mirror.split("=", 1)) for mirror in args.mirror]
    project = os.path.abspath(args.project)
    with open(os.path.join(project, "target", "manifest.json")) as handle:
        manifest = json.load(handle)
    with open(os.path.join(project, "target", "run_results.json")) as handle:
        record = json.load(handle)
    statuses = {node["unique_id"]: node for node in record["nodes"]}

    con = duckdb.connect()
    load_inputs(con, manifest, project, mirrors)
    problems, compared = [], 0
    for node_id in order(manifest):
        node = manifest["nodes"][node_id]
        if node["resource_type"] != "model" or node["config"]["materialized"] == "ephemeral":
            continue
        sql = node["compiled_code"]
        kind = "view" if node["config"]["materialized"] == "view" else "table"
        try:
            con.execute(f"create {kind} {relation_sql(node['relation'])} as {sql}")
        except duckdb.Error as error:
            problems.append(f"{node['name']}: duckdb cannot run its compiled SQL: {error}".splitlines()[0])
            continue
        if kind == "view" or statuses.get(node_id, {}).get("status") != "success":
            continue
        location = "/".join([args.warehouse.rstrip("/"), node["relation"]["schema"], node["relation"]["identifier"]])
        strata_table = deltalake.DeltaTable(location, storage_options=storage_options(location)).to_pyarrow_table()
        con.register("strata_output", strata_table)
        columns = [(row[0], row[1]) for row in con.execute(f"describe {relation_sql(node['relation'])}").fetchall()]
        strata_columns = [(row[0], row[1]) for row in con.execute("describe strata_output").fetchall()]
        if [c for c, _ in columns] != [c for c, _ in strata_columns]:
            problems.append(f"{node['name']}: columns differ: duckdb {columns} strata {strata_columns}")
            continue
        expected = comparable(con, relation_sql(node["relation"]), columns)
        actual = comparable(con, "strata_output", columns)
        missing = con.execute(f"select count(*) from ({expected} except all {actual})").fetchone()[0]
        extra = con.execute(f"select count(*) from ({actual} except all {expected})").fetchone()[0]
        rows = con.execute(f"select count(*) from {relation_sql(node['relation'])}").fetchone()[0]
        compared += 1
        if missing or extra:
            problems.append(f"{node['name']}: {missing} rows only in duckdb, {extra} only in strata (of {rows})")
        else:
            print(f"ok   {node['name']}: {rows} rows equal")
        con.unregister("strata_output")
    for node_id, node in manifest["nodes"].items():
        if node["resource_type"] != "test" or node_id not in statuses:
            continue
        expected = con.execute(f"select count(*) from ({node['compiled_code']}) as t").fetchone()[0]
        actual = statuses[node_id].get("failures")
        compared += 1
        if actual != expected:
            problems.append(f"test {node['name']}: strata counted {actual} failing rows, duckdb {expected}")
        else:
            print(f"ok   test {node['name']}: {expected} failing rows in both")
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"duckdb: {compared - len(problems)} passed, {len(problems)} failed")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
