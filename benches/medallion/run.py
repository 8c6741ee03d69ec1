#!/usr/bin/env python3
"""Medallion benchmark: examples/medallion on N raw events, three ways, on this machine, now.

1. `strata build` (embedded mode: seeds, models, tests; Delta tables), and `strata run`
   (models only);
2. the same project through dbt-duckdb (`dbt build`: seeds, models, tests, DuckDB tables);
3. DataFusion alone (Python package, same engine version): the compiled SQL of every model
   with COPY ... TO Parquet — no Delta, no tests, no orchestration.

With `--variant conditional`, `daily_user_activity` is replaced by
benches/medallion/variants/daily_user_activity.sql (conditional sums, min and max beside the
distinct count). After the build, each model's pool peak and the process's allocation peak
while it ran are printed from Strata's run record.

Each runs as a child process; wall time and peak RSS come from wait4. Every child runs under
an address-space limit (--memory-limit-gib) so that a query that blows up fails instead of
taking the machine down.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def measure(label, command, cwd, limit_bytes, env=None):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=limit)
    output = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    rss = usage.ru_maxrss / 1024.0
    state = "ok" if code == 0 else f"FAILED (exit {code})"
    print(f"{label:<28} {wall:8.2f} s   peak RSS {rss:8.0f} MiB   {state}", flush=True)
    if code != 0:
        print("    " + "\n    ".join(output.strip().splitlines()[-6:]))
    return wall if code == 0 else None, rss


def ratio(results, a, b):
    (wa, ra), (wb, rb) = results[a], results[b]
    if wa is None or wb is None:
        return "n/a (a run failed)"
    return f"wall {wa / wb:.2f}x, peak RSS {ra / rb:.2f}x"


def print_memory_per_model(project):
    """Each model's pool peak and allocation peak from Strata's run record."""
    with open(os.path.join(project, "target", "run_results.json")) as handle:
        record = json.load(handle)
    print(f"{'model (strata build)':<28} {'wall':>8}   {'pool peak':>10}   {'allocated peak':>14}")
    for node in record["nodes"]:
        if node["resource_type"] != "model":
            continue
        print(f"{node['unique_id'].split('.')[-1]:<28} {node['duration_ms'] / 1000:6.2f} s   "
              f"{node.get('peak_memory_bytes', 0) / 2**20:6.0f} MiB   "
              f"{node.get('peak_allocated_bytes', 0) / 2**20:10.0f} MiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strata", required=True)
    parser.add_argument("--python", required=True, help="python of the venv with dbt-duckdb and datafusion")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit-gib", type=float, default=12.0)
    parser.add_argument("--data-cache", default="/var/cache/strata-bench-data")
    parser.add_argument("--variant", choices=["plain", "conditional"], default="plain",
                        help="conditional: daily_user_activity with conditional sums beside the distinct count")
    parser.add_argument("--skip-datafusion", action="store_true", help="leave out DataFusion alone")
    parser.add_argument("--pool-sweep", default="",
                        help="comma-separated task pool sizes in MiB: strata build again with each "
                             "(--memory-limit-mib), into a fresh warehouse, after dbt-duckdb")
    args = parser.parse_args()
    limit = int(args.memory_limit_gib * (1 << 30))

    data = os.path.join(args.data_cache, f"events-{args.events}")
    if not os.path.isdir(os.path.join(data, "events")):
        subprocess.run([args.strata, "generate-sample-data", "--events", str(args.events), "--batches", "8", "--out", data], check=True)
    work = tempfile.mkdtemp(prefix="strata-medallion-bench-")
    try:
        project = os.path.join(work, "project")
        shutil.copytree(os.path.join(ROOT, "examples", "medallion"), project,
                        ignore=shutil.ignore_patterns("target", "data", "warehouse"))
        os.symlink(data, os.path.join(project, "data"))
        if args.variant == "conditional":
            shutil.copy(os.path.join(HERE, "variants", "daily_user_activity.sql"),
                        os.path.join(project, "models", "gold", "daily_user_activity.sql"))
        with open(os.path.join(project, "profiles.yml"), "w") as handle:
            handle.write(f"medallion:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: {work}/dbt.duckdb\n      threads: {args.threads}\n")
        print(f"examples/medallion ({args.variant}) on {args.events:,} raw events; {os.cpu_count()} cores; threads {args.threads}; "
              f"address-space limit {args.memory_limit_gib} GiB per run")
        results = {}
        subprocess.run([args.strata, "compile", "--project-dir", project], check=True, stdout=subprocess.DEVNULL)
        # dbt writes its own target/manifest.json; keep Strata's for DataFusion alone.
        manifest = os.path.join(work, "strata-manifest.json")
        shutil.copy(os.path.join(project, "target", "manifest.json"), manifest)
        results["strata build"] = measure("strata build (embedded)", [args.strata, "build", "--project-dir", project,
                                           "--threads", str(args.threads), "--warehouse", os.path.join(work, "wh1")], project, limit)
        if results["strata build"][0] is not None:
            print_memory_per_model(project)
        # Models only, on the warehouse the build filled (seeds are there).
        results["strata run"] = measure("strata run (models only)", [args.strata, "run", "--project-dir", project,
                                         "--threads", str(args.threads), "--warehouse", os.path.join(work, "wh1")], project, limit)
        dbt = os.path.join(os.path.dirname(args.python), "dbt")
        env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false", DO_NOT_TRACK="1")
        results["dbt build"] = measure("dbt-duckdb build", [dbt, "build", "--profiles-dir", project, "--project-dir", project],
                                       project, limit, env=env)
        for pool_mib in filter(None, args.pool_sweep.split(",")):
            label = f"strata build --memory-limit-mib {pool_mib}"
            results[label] = measure(label, [args.strata, "build", "--project-dir", project, "--threads",
                                             str(args.threads), "--memory-limit-mib", pool_mib,
                                             "--warehouse", os.path.join(work, f"wh-pool-{pool_mib}")], project, limit)
            if results[label][0] is not None:
                print_memory_per_model(project)
            print(f"{label} / dbt-duckdb build:   {ratio(results, label, 'dbt build')}")
        if args.skip_datafusion:
            print(f"strata build / dbt-duckdb build:   {ratio(results, 'strata build', 'dbt build')}")
            return
        results["datafusion"] = measure("DataFusion alone (COPY TO)", [args.python, os.path.join(HERE, "datafusion_alone.py"),
                                        project, manifest, os.path.join(work, "df")], project, limit)
        # The same comparison without the model DataFusion 55 alone cannot run in bounded memory
        # (count(*) next to count(distinct ...)), to measure Strata's overhead on the rest.
        trap = "daily_user_activity"
        results["strata run -trap"] = measure(f"strata run (without {trap})", [args.strata, "run", "--project-dir", project,
                                               "--threads", str(args.threads), "--warehouse", os.path.join(work, "wh1"),
                                               "--exclude", trap], project, limit)
        results["datafusion -trap"] = measure(f"DataFusion alone (without)", [args.python, os.path.join(HERE, "datafusion_alone.py"),
                                               project, manifest, os.path.join(work, "df2"), trap], project, limit)
        print(f"strata build / dbt-duckdb build:   {ratio(results, 'strata build', 'dbt build')}")
        print(f"strata run / DataFusion alone:     {ratio(results, 'strata run', 'datafusion')}")
        print(f"same, without {trap}:  {ratio(results, 'strata run -trap', 'datafusion -trap')}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
