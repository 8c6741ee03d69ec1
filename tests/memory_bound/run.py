#!/usr/bin/env python3
"""The memory-bound suite: every aggregate shape and deduplication within a small pool.

Copies tests/fixtures/memory_bound, generates its events with DuckDB (several times larger than
the pool), then runs each model alone with `strata run --memory-limit-mib POOL --threads 2` as
a child process under an address-space limit (RLIMIT_AS). Each run must either succeed, with
its table equal to DuckDB's (tests/reference/compare_duckdb.py), or fail with Strata's clear
memory error naming the setting to raise — never be killed by a signal or the limit. Prints
wall time and peak RSS (wait4) per model, beside the run record's pool and allocation peaks.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import duckdb

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "memory_bound")
COMPARE = os.path.join(ROOT, "tests", "reference", "compare_duckdb.py")
CLEAR_ERROR = "engine.memory_limit_mib"

EVENTS_SQL = """
select
    'evt-' || lpad(cast(e as varchar), 8, '0') as event_id,
    case when e % 101 = 0 then null else (e * 7919) % {users} end as user_id,
    date '2026-01-01' + cast((e * 31) % 60 as integer) as event_day,
    timestamp '2026-01-01' + to_seconds(cast(e % 5184000 as bigint)) as event_time,
    ['view', 'click', 'purchase', 'Click', 'share', 'refund', null][1 + (e * 13) % 7] as event_type,
    case when e % 5 = 0 then null else round(((e * 37) % 100000) / 100.0 - 100, 2) end as amount,
    ['ios', 'android', 'web', null][1 + e % 4] as device,
    case when e % 9 = 0 then null else e % 4 < 2 end as is_mobile,
    timestamp '2026-03-01' + to_hours(cast(delivery as bigint))
        + to_milliseconds(cast(e % 1000 as bigint)) as delivered_at
from (select i % {distinct_events} as e, i // {distinct_events} as delivery
      from range({rows}) as t(i) where i % {parts} = {part})
"""


def generate(folder, rows, parts=4):
    os.makedirs(folder, exist_ok=True)
    con = duckdb.connect()
    for part in range(parts):
        sql = EVENTS_SQL.format(rows=rows, parts=parts, part=part,
                                distinct_events=rows * 7 // 8, users=rows // 10)
        con.execute(f"copy ({sql}) to '{folder}/part-{part}.parquet' (format parquet)")
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))


def arrow_bytes(folder):
    con = duckdb.connect()
    table = con.execute(f"select * from read_parquet('{folder}/*.parquet')").to_arrow_table()
    return table.nbytes


def limit_address_space(limit_bytes):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    return apply


def run_model(strata, project, model, pool_mib, address_space_mib, timeout_s):
    """Runs one model; a run still going after `timeout_s` is killed and reported as hung
    (a query that neither finishes nor fails — every thread parked — is what a memory limit
    must never cause)."""
    started = time.monotonic()
    child = subprocess.Popen(
        [strata, "run", "--project-dir", project, "--select", model,
         "--memory-limit-mib", str(pool_mib), "--threads", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=limit_address_space(address_space_mib << 20))
    killed = threading.Event()

    def kill():
        killed.set()
        child.kill()

    watchdog = threading.Timer(timeout_s, kill)
    watchdog.start()
    try:
        output = child.stdout.read().decode(errors="replace")
        _, status, usage = os.wait4(child.pid, 0)
    finally:
        watchdog.cancel()
    hung = killed.is_set()
    child.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - started, usage.ru_maxrss * 1024, child.returncode, output, hung


def record_peaks(project, model):
    with open(os.path.join(project, "target", "run_results.json")) as handle:
        record = json.load(handle)
    for node in record["nodes"]:
        if node["unique_id"].endswith("." + model):
            return node.get("peak_memory_bytes", 0), node.get("peak_allocated_bytes", 0)
    return 0, 0


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strata", required=True)
    parser.add_argument("--python", default=sys.executable, help="the venv's python for the comparison")
    parser.add_argument("--rows", type=int, default=1_500_000)
    parser.add_argument("--pool-mib", type=int, default=64)
    parser.add_argument("--timeout-s", type=int, default=600,
                        help="a model still running after this long is killed and fails as hung")
    parser.add_argument("--address-space-mib", type=int, default=4096,
                        help="RLIMIT_AS of each strata process (virtual memory: threads' stacks "
                             "and the allocator's reservations count)")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="strata-memory-bound-")
    try:
        project = os.path.join(work, "project")
        shutil.copytree(FIXTURE, project)
        data = os.path.join(project, "data", "events")
        parquet = generate(data, args.rows)
        in_memory = arrow_bytes(data)
        print(f"events: {args.rows} rows, {parquet >> 20} MiB of Parquet, {in_memory >> 20} MiB "
              f"in Arrow; pool {args.pool_mib} MiB per task (2 slots); address space "
              f"{args.address_space_mib} MiB")
        models = sorted(name[:-4] for name in os.listdir(os.path.join(project, "models"))
                        if name.endswith(".sql"))
        problems = []
        print(f"{'model':34} {'result':8} {'wall':>8} {'peak RSS':>10} {'pool peak':>10} {'allocated':>10}")
        for model in models:
            wall, rss, code, output, hung = run_model(args.strata, project, model, args.pool_mib,
                                                      args.address_space_mib, args.timeout_s)
            if hung:
                pool, allocated, result = 0, 0, "HUNG"
                problems.append(f"{model}: still running after {args.timeout_s} s, killed\n{output}")
            elif code == 0:
                pool, allocated = record_peaks(project, model)
                compared = subprocess.run([args.python, COMPARE, "--project", project,
                                           "--warehouse", os.path.join(project, "warehouse")],
                                          capture_output=True, text=True)
                result = "equal" if compared.returncode == 0 else "DIFFERS"
                if compared.returncode != 0:
                    problems.append(f"{model}: differs from DuckDB\n{compared.stdout}{compared.stderr}")
            elif code > 0 and CLEAR_ERROR in output:
                pool, allocated, result = 0, 0, "refused"
                print(f"  {model} failed clearly:\n" + "\n".join(
                    "    " + line for line in output.splitlines() if line.strip()))
            else:
                pool, allocated, result = 0, 0, "KILLED" if code < 0 else "FAILED"
                problems.append(f"{model}: exit {code} without the clear memory error\n{output}")
            print(f"{model:34} {result:8} {wall:7.1f}s {rss / 2**20:8.0f}Mi "
                  f"{pool / 2**20:8.0f}Mi {allocated / 2**20:8.0f}Mi")
        for problem in problems:
            print(f"FAIL {problem}")
        print(f"memory-bound: {len(models) - len(problems)} passed, {len(problems)} failed")
        sys.exit(1 if problems else 0)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
