#!/usr/bin/env python3
"""Compile benchmark: `strata compile` vs `dbt parse` on the same synthetic project.

Each command runs as a child process, several times; wall time and peak RSS (from wait4's
rusage) are reported per run, with the ratio of medians. dbt runs with --no-partial-parse so
that every run is a full parse, as every strata compile is.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generate_project import generate  # noqa: E402


def measure(command, cwd, env=None):
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed:\n{output.decode(errors='replace')[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024.0  # ru_maxrss is in KiB on Linux


def run_many(label, command, cwd, runs, env=None, before=None):
    results = []
    for _ in range(runs):
        if before:
            before()
        results.append(measure(command, cwd, env))
    times = [wall for wall, _ in results]
    peak = max(rss for _, rss in results)
    print(f"{label:<16} median {statistics.median(times):8.3f} s   min {min(times):8.3f} s   peak RSS {peak:8.1f} MiB   ({runs} runs)")
    return statistics.median(times), peak


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strata", required=True, help="path of the strata binary")
    parser.add_argument("--dbt", help="path of the dbt executable (omit to skip dbt)")
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--tests", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="strata-compile-bench-")
    try:
        project = os.path.join(work, "project")
        generate(project, args.models, args.tests)
        print(f"synthetic project: {args.models} models, {args.tests} tests ({project})")
        print(f"machine: {os.cpu_count()} cores; {open('/proc/loadavg').read().split()[0]} load")
        target = os.path.join(project, "target")
        clean = lambda: shutil.rmtree(target, ignore_errors=True)  # noqa: E731
        # Cold: an empty target folder, so every compiled SQL file is created (file creation
        # dominates on some filesystems). Warm: files exist and only changed ones are written.
        cold_time, cold_rss = run_many(
            "strata (cold)", [args.strata, "compile", "--project-dir", project], project, args.runs, before=clean
        )
        strata_time, strata_rss = run_many(
            "strata (warm)", [args.strata, "compile", "--project-dir", project], project, args.runs
        )
        strata_ls, _ = run_many("strata ls", [args.strata, "ls", "--project-dir", project], project, args.runs)
        if args.dbt:
            env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false", DO_NOT_TRACK="1")
            dbt_time, dbt_rss = run_many(
                "dbt parse",
                [args.dbt, "parse", "--no-partial-parse", "--profiles-dir", project, "--project-dir", project],
                project,
                args.runs,
                env=env,
                before=clean,
            )
            print(f"ratio dbt parse / strata compile (warm): wall {dbt_time / strata_time:.1f}x   peak RSS {dbt_rss / strata_rss:.1f}x")
            print(f"ratio dbt parse / strata compile (cold): wall {dbt_time / cold_time:.1f}x   peak RSS {dbt_rss / cold_rss:.1f}x")
            print(f"ratio dbt parse / strata ls (no files written): wall {dbt_time / strata_ls:.1f}x")
        verdict = "met" if strata_time < 1.0 else "MISSED"
        print(f"target (strata compile under 1 s, warm): {verdict}; cold: {cold_time:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
