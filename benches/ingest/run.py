#!/usr/bin/env python3
"""Ingest benchmark: a PostgreSQL table of N rows (default 10 M) into bronze, against the floor
(`psql \\copy (select …) to` a CSV file) and connectorx reading the same table into Arrow with the
same parallelism, all measured in one run on this machine. Prints wall time and peak RSS of each
and the ratios (targets: strata within 1.5x of the floor, faster than connectorx).

    benches/ingest/run.py --strata target/release/strata [--rows 10000000] [--parallelism 2]

The table is built once (kept between runs when it already has the rows asked for).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

SCHEMA = "ingest_bench"

SOURCES = """version: 2
sources:
  - name: bench
    tables:
      - name: orders
        ingest:
          connector: postgres
          connection: {{env: BENCH_PG_URL}}
          table: {schema}.orders
          split_by: id
          parallelism: {parallelism}
"""


def ensure_table(pg_url, rows):
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        exists = db.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = 'orders'",
            (SCHEMA,),
        ).fetchone()[0]
        if exists and db.execute(f"SELECT count(*) FROM {SCHEMA}.orders").fetchone()[0] == rows:
            return
        print(f"building {SCHEMA}.orders with {rows} rows …", file=sys.stderr)
        db.execute(f"DROP TABLE IF EXISTS {SCHEMA}.orders")
        db.execute(
            f"CREATE TABLE {SCHEMA}.orders (id bigint PRIMARY KEY, customer_id integer, status text, "
            "amount numeric(12, 2), discount double precision, created_at timestamptz, note text)"
        )
        db.execute(
            f"INSERT INTO {SCHEMA}.orders SELECT i, (i * 7919) % 100000, "
            "(ARRAY['placed','shipped','returned','cancelled'])[1 + i % 4], (i % 100000) / 100.0, "
            "CASE WHEN i % 10 = 0 THEN NULL ELSE (i % 7) / 10.0 END, "
            "timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second', "
            "CASE WHEN i % 3 = 0 THEN NULL ELSE 'order note ' || i END "
            f"FROM generate_series(1::bigint, {rows}::bigint) AS i"
        )
        db.execute(f"VACUUM ANALYZE {SCHEMA}.orders")


def measure(command, env=None, cwd=None):
    """Runs `command`; returns (wall seconds, peak RSS MiB of it and its children)."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[0]} failed with status {status}")
    return wall, usage.ru_maxrss / 1024


CONNECTORX = """
import sys, connectorx
table = connectorx.read_sql(sys.argv[1], "SELECT * FROM {schema}.orders", partition_on="id",
                            partition_num=int(sys.argv[2]), return_type="arrow")
print(table.num_rows)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strata", required=True)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--pg", default=os.environ.get("STRATA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    ensure_table(args.pg, args.rows)
    work = Path(tempfile.mkdtemp(prefix="strata-ingest-bench-"))
    try:
        results = {}
        csv_file = work / "orders.csv"
        results["psql \\copy to CSV (floor)"] = measure(
            ["psql", args.pg, "-q", "-c", f"\\copy (SELECT * FROM {SCHEMA}.orders) TO '{csv_file}' WITH (FORMAT csv)"]
        )
        csv_file.unlink()
        script = work / "connectorx_read.py"
        script.write_text(CONNECTORX.format(schema=SCHEMA))
        results[f"connectorx to Arrow ({args.parallelism} partitions)"] = measure(
            [sys.executable, str(script), args.pg, str(args.parallelism)]
        )
        project = work / "project"
        (project / "models").mkdir(parents=True)
        (project / "dbt_project.yml").write_text("name: ingest_bench\nversion: '1'\nconfig-version: 2\n")
        (project / "models" / "sources.yml").write_text(
            SOURCES.format(schema=SCHEMA, parallelism=args.parallelism)
        )
        env = dict(os.environ, BENCH_PG_URL=args.pg, STRATA_LOG="warn")
        results[f"strata ingest to Delta ({args.parallelism} key ranges)"] = measure(
            [str(Path(args.strata).resolve()), "ingest", "--project-dir", str(project)], env=env
        )
        # psql and strata use TLS when the server offers it (sslmode=prefer), connectorx does
        # not: the same landing in clear shows what TLS costs.
        if "sslmode" not in args.pg:
            clear = args.pg + ("&" if "?" in args.pg else "?") + "sslmode=disable"
            shutil.rmtree(project / "warehouse", ignore_errors=True)
            results["strata ingest, sslmode=disable"] = measure(
                [str(Path(args.strata).resolve()), "ingest", "--project-dir", str(project)],
                env=dict(env, BENCH_PG_URL=clear),
            )
        floor = results["psql \\copy to CSV (floor)"][0]
        cx = results[f"connectorx to Arrow ({args.parallelism} partitions)"][0]
        print(f"\ningest benchmark: {args.rows} rows, {os.cpu_count()} cores")
        print(f"{'':<45} {'wall s':>8} {'peak RSS MiB':>13} {'vs floor':>9}")
        for name, (wall, rss) in results.items():
            print(f"{name:<45} {wall:>8.2f} {rss:>13.0f} {wall / floor:>8.2f}x")
        strata_wall = results[f"strata ingest to Delta ({args.parallelism} key ranges)"][0]
        print(f"\nstrata / floor = {strata_wall / floor:.2f} (target <= 1.5)")
        print(f"strata / connectorx = {strata_wall / cx:.2f} (target < 1.0)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
