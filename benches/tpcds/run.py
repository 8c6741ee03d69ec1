#!/usr/bin/env python3
"""TPC-DS through Strata: the 99 queries as dbt models, compared with DuckDB and timed.

1. Generates TPC-DS data at `--scale` (once; kept in /var/cache/strata-bench-data) with DuckDB's
   own generator (`dsdgen`, from the
   `duckdb-extension-tpcds` package; it is built for DuckDB 1.5.5, so a side virtualenv with
   both pinned is created under /var/cache on first use) as one Parquet file per table, and takes
   the 99 queries from the same extension (`tpcds_queries()`). Nothing of TPC-DS is stored in
   this repository: the project is generated here, each run.
2. Writes a dbt project: a source `tpcds` whose tables read those files, and one table model per
   query in which each bare table name (outside string literals) becomes `{{ source(...) }}`.
3. `strata build` of the project, timed (wall, peak RSS from wait4), then a comparison: DuckDB
   runs every compiled query over the same files, and each Strata table is `equal` (names,
   types, rows with doubles to 6 places), `equal at 2 decimals` (by column position, numbers
   rounded to 2 places; what differs is said), or has DIFFERENT ROWS.
4. DuckDB alone running the 99 queries over the same files, timed the same way, for the ratio.

Differences are printed, not hidden: the expected ones (decimal types, names of unaliased
expressions) are listed in docs/dbt-compatibility.md.
"""
import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
GENERATOR_ENV = "/var/cache/strata-tpcds-venv"
DATA_CACHE = "/var/cache/strata-bench-data"
GENERATOR_PINS = ["duckdb==1.5.5", "duckdb-extension-tpcds==1.5.5"]

GENERATE = r"""
import glob, os, sys
import duckdb, duckdb_extension_tpcds
out, scale = sys.argv[1], float(sys.argv[2])
extension = glob.glob(os.path.join(os.path.dirname(duckdb_extension_tpcds.__file__), "**", "*.duckdb_extension"), recursive=True)[0]
con = duckdb.connect()
con.execute(f"load '{extension}'")
con.execute(f"call dsdgen(sf={scale})")
for (table,) in con.execute("show tables").fetchall():
    os.makedirs(os.path.join(out, "data", table), exist_ok=True)
    con.execute(f"copy {table} to '{os.path.join(out, 'data', table, 'part-0.parquet')}' (format parquet)")
os.makedirs(os.path.join(out, "queries"), exist_ok=True)
for number, query in con.execute("select query_nr, query from tpcds_queries()").fetchall():
    with open(os.path.join(out, "queries", f"q{number:02d}.sql"), "w") as handle:
        handle.write(query)
"""

COMPARE = r"""
import json, os, sys
import deltalake, duckdb
project = sys.argv[1]
manifest = json.load(open(os.path.join(project, "target", "manifest.json")))
record = json.load(open(os.path.join(project, "target", "run_results.json")))
succeeded = {node["unique_id"] for node in record["nodes"] if node["status"] == "success"}
con = duckdb.connect()
for node in manifest["nodes"].values():
    if node["resource_type"] == "source":
        relation = node["relation"]
        con.execute(f"create schema if not exists {relation['schema']}")
        con.execute(f"create view {relation['schema']}.{relation['identifier']} as select * from read_parquet('{node['source']['location']}')")

def rows(table, digits):
    columns = con.execute(f"describe {table}").fetchall()
    parts = []
    for index, (name, data_type, *_) in enumerate(columns):
        quoted = '"' + name.replace('"', '""') + '"'
        numeric = data_type.startswith("DECIMAL") or data_type in ("DOUBLE", "FLOAT", "HUGEINT")
        parts.append(f"round(cast({quoted} as double), {digits}) as c{index}" if numeric else f"{quoted} as c{index}")
    return [(name, data_type) for name, data_type, *_ in columns], f"select {', '.join(parts)} from {table}"

def same(left, right):
    return con.execute(f"select count(*) from (({left} except all {right}) union all ({right} except all {left}))").fetchone()[0] == 0

counts = {}
for node_id, node in sorted(manifest["nodes"].items()):
    if node["resource_type"] != "model":
        continue
    name = node["name"]
    if node_id not in succeeded:
        verdict = "strata failed"
    else:
        try:
            con.execute(f"create or replace table expected as {node['compiled_code']}")
        except duckdb.Error as error:
            verdict = "duckdb cannot run it: " + str(error).splitlines()[0]
        else:
            location = os.path.join(project, "warehouse", node["relation"]["schema"], node["relation"]["identifier"])
            con.register("actual_arrow", deltalake.DeltaTable(location).to_pyarrow_table())
            con.execute("create or replace table actual as select * from actual_arrow")
            con.unregister("actual_arrow")
            (expected_columns, expected_6), (actual_columns, actual_6) = rows("expected", 6), rows("actual", 6)
            if same(expected_6, actual_6) and expected_columns == actual_columns:
                verdict = "equal"
            elif same(rows("expected", 2)[1], rows("actual", 2)[1]):
                kinds = []
                if [n for n, _ in expected_columns] != [n for n, _ in actual_columns]:
                    kinds.append("names")
                if [t for _, t in expected_columns] != [t for _, t in actual_columns]:
                    kinds.append("types")
                if not same(expected_6, actual_6):
                    kinds.append("digits beyond the 2nd")
                verdict = "equal at 2 decimals; differ in " + ", ".join(kinds)
            else:
                verdict = "DIFFERENT ROWS"
    counts[verdict.split(":")[0].split(";")[0]] = counts.get(verdict.split(":")[0].split(";")[0], 0) + 1
    if verdict != "equal":
        print(f"{name}: {verdict}")
print("summary: " + ", ".join(f"{count} {verdict}" for verdict, count in sorted(counts.items())))
"""

DUCKDB_ALONE = r"""
import glob, os, sys
import duckdb
data, queries = sys.argv[1], sys.argv[2]
con = duckdb.connect()
for folder in sorted(glob.glob(os.path.join(data, "*"))):
    con.execute(f"create view {os.path.basename(folder)} as select * from read_parquet('{folder}/*.parquet')")
for path in sorted(glob.glob(os.path.join(queries, "*.sql"))):
    with open(path) as handle:
        try:
            con.execute(f"create table {os.path.basename(path)[:-4]} as {handle.read().rstrip().rstrip(';')}")
        except duckdb.Error as error:
            print(f"duckdb failed {os.path.basename(path)}: {str(error).splitlines()[0]}")
"""


def measure(label, command, cwd=None, timeout_s=None):
    """Runs `command`, printing its wall time and peak RSS; killed (and said so) when it runs
    longer than `timeout_s`: a run that hangs is a finding, not a reason to wait forever."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watchdog = threading.Timer(timeout_s, process.kill) if timeout_s else None
    if watchdog:
        watchdog.start()
    output = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    if watchdog:
        watchdog.cancel()
    wall = time.perf_counter() - started
    peak_mib = usage.ru_maxrss / 1024
    if timeout_s and wall >= timeout_s:
        print(f"{label}: KILLED after {timeout_s} s (hung or too slow)")
    print(f"{label}: {wall:.2f} s, peak RSS {peak_mib:.0f} MiB, exit {os.waitstatus_to_exitcode(status)}")
    return wall, peak_mib, output


def generator_python():
    python = os.path.join(GENERATOR_ENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", GENERATOR_ENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", *GENERATOR_PINS], check=True)
    return python


def with_sources(query, tables):
    """`query` with each table it reads replaced by its source(): a lowercase table name right
    after FROM or JOIN, or after a comma of a FROM list, outside string literals and not
    qualifying a column (`store.s_state`). Aliases that happen to be table names
    (`sum(x) AS store_sales`, `…) web_sales,`) stay."""
    tokens = re.findall(r"'(?:[^']|'')*'|\w+|\s+|.", query)
    stop = {"where", "group", "order", "having", "limit", "union", "intersect", "except",
            "select", "window", "qualify"}
    in_from = [False]  # per parenthesis depth: inside a FROM list
    previous = ""
    out = []
    for index, token in enumerate(tokens):
        following = next((t for t in tokens[index + 1:] if not t.isspace()), "")
        lower = token.lower()
        if token == "(":
            in_from.append(False)
        elif token == ")" and len(in_from) > 1:
            in_from.pop()
        elif lower == "from":
            in_from[-1] = True
        elif lower in stop:
            in_from[-1] = False
        reads = previous.lower() in ("from", "join") or (previous == "," and in_from[-1])
        if reads and token in tables and following != ".":
            token = "{{ source('tpcds', '" + token + "') }}"
        out.append(token)
        if not token.isspace():
            previous = token
    return "".join(out).rstrip().rstrip(";") + "\n"


def write_project(work):
    tables = sorted(os.listdir(os.path.join(work, "data")))
    project = os.path.join(work, "project")
    os.makedirs(os.path.join(project, "models"), exist_ok=True)
    with open(os.path.join(project, "dbt_project.yml"), "w") as handle:
        handle.write("name: tpcds\nmodels:\n  tpcds:\n    +materialized: table\n")
    with open(os.path.join(project, "models", "sources.yml"), "w") as handle:
        handle.write("version: 2\nsources:\n  - name: tpcds\n    tables:\n")
        for table in tables:
            location = os.path.join(work, "data", table, "*.parquet")
            handle.write(f"      - name: {table}\n        meta: {{external_location: '{location}'}}\n")
    for name in sorted(os.listdir(os.path.join(work, "queries"))):
        with open(os.path.join(work, "queries", name)) as handle:
            query = handle.read()
        with open(os.path.join(project, "models", f"tpcds_{name}"), "w") as handle:
            handle.write(with_sources(query, tables))
    return project


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strata", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "strata"))
    parser.add_argument("--python", default="/var/cache/strata-venv/bin/python", help="the test virtualenv (duckdb, deltalake)")
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit-mib", type=int,
                        help="each task's memory pool (strata build --memory-limit-mib): every query must "
                             "still finish, spilling, or fail with the clear memory error")
    parser.add_argument("--timeout-s", type=int, default=1800,
                        help="kill strata build after this long (a hang is reported, not waited out)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and print it")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="strata-tpcds-")
    try:
        # The generated data and queries are kept between runs, as the medallion bench keeps
        # its events: generating scale 1 takes longer than building it.
        cached = os.path.join(DATA_CACHE, f"tpcds-sf{args.scale:g}")
        if not os.path.exists(os.path.join(cached, "queries")):
            subprocess.run([generator_python(), "-c", GENERATE, cached, str(args.scale)], check=True)
        for folder in ("data", "queries"):
            os.symlink(os.path.join(cached, folder), os.path.join(work, folder))
        project = write_project(work)
        command = [args.strata, "build", "--project-dir", project, "--threads", str(args.threads)]
        if args.memory_limit_mib:
            command += ["--memory-limit-mib", str(args.memory_limit_mib)]
        strata_wall, strata_rss, output = measure("strata build", command, timeout_s=args.timeout_s)
        print("\n".join(line for line in output.splitlines() if "ERROR" in line or line.startswith("Done.")))
        subprocess.run([args.python, "-c", COMPARE, project], check=True)
        duck_wall, duck_rss, output = measure(
            "duckdb alone (same queries, same files)",
            [args.python, "-c", DUCKDB_ALONE, os.path.join(work, "data"), os.path.join(work, "queries")])
        print(output.strip())
        print(f"strata / duckdb: {strata_wall / duck_wall:.2f}x wall, {strata_rss / duck_rss:.2f}x peak RSS")
    finally:
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
