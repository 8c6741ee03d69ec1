#!/usr/bin/env python3
"""Shuffle benchmark: examples/medallion's silver_events — a dedup window over every raw event,
partitioned by event id, the shuffle-heaviest model of the pipeline — on N raw events, three
ways, on this machine, now, at the same partition count:

1. `strata run --cluster`: the coordinator and 2 `strata worker` processes over RabbitMQ,
   map and reduce tasks exchanging the rows over Arrow Flight;
2. `strata run` embedded: one process, one task, DataFusion's own in-process repartition;
3. DataFusion alone (Python package, same engine version): the same SQL over the same bronze
   Parquet files, COPY ... TO Parquet.

bronze_events is built first (not timed). Wall time from process start to exit; peak RSS from
wait4 (for the cluster: the coordinator's and each worker's). The bytes moved over Flight come
from the run record.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BROKER = "amqp://guest:guest@127.0.0.1:5672/%2f"


def run(label, command, cwd):
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"{label}: FAILED (exit {code})\n    " + "\n    ".join(output.strip().splitlines()[-8:]))
        return None, usage.ru_maxrss / 1024.0, output
    return wall, usage.ru_maxrss / 1024.0, output


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strata", required=True)
    parser.add_argument("--python", required=True, help="python of the venv with datafusion")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-cache", default="/var/cache/strata-bench-data")
    args = parser.parse_args()

    data = os.path.join(args.data_cache, f"events-{args.events}")
    if not os.path.isdir(os.path.join(data, "events")):
        subprocess.run([args.strata, "generate-sample-data", "--events", str(args.events), "--batches", "8", "--out", data], check=True)
    work = tempfile.mkdtemp(prefix="strata-shuffle-bench-")
    workers = []
    try:
        project = os.path.join(work, "project")
        shutil.copytree(os.path.join(ROOT, "examples", "medallion"), project,
                        ignore=shutil.ignore_patterns("target", "data", "warehouse"))
        os.symlink(data, os.path.join(project, "data"))
        warehouse = os.path.join(work, "warehouse")
        common = ["--project-dir", project, "--warehouse", warehouse]
        subprocess.run([args.strata, "run", *common, "--select", "+bronze_events"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([args.strata, "compile", "--project-dir", project], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(project, "target", "manifest.json")) as handle:
            manifest = json.load(handle)
        silver = next(node for node in manifest["nodes"].values() if node.get("name") == "silver_events")
        print(f"silver_events (dedup window by event id) on {args.events:,} raw events; {os.cpu_count()} cores; "
              f"{args.partitions} partitions; cluster of {args.workers} workers")

        # 1. Cluster.
        queue = f"strata.bench.shuffle.{os.getpid()}"
        for index in range(args.workers):
            workers.append(subprocess.Popen(
                [args.strata, "worker", "--task-queue", queue, "--slots", "1", "--worker-id", f"bench-{index}",
                 "--flight-listen", "127.0.0.1:0", "--flight-advertise", "127.0.0.1", "--amqp-url", BROKER],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        time.sleep(1.0)
        cluster_wall, coordinator_rss, output = run("cluster", [
            args.strata, "run", *common, "--select", "silver_events", "--cluster", BROKER, "--task-queue", queue,
            "--shuffle-partitions", str(args.partitions), "--output", "json"], project)
        worker_rss = []
        for worker in workers:
            worker.terminate()
            _, _, usage = os.wait4(worker.pid, 0)
            worker_rss.append(usage.ru_maxrss / 1024.0)
        workers = []
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", queue], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        moved = stages = None
        if cluster_wall is not None:
            record = json.loads(output[output.index("{"):])
            node = next(node for node in record["nodes"] if node["name"] == "silver_events")
            stages = node.get("stages", [])
            moved = sum(stage["bytes"] for stage in stages if stage["kind"] == "map")

        # 2. Embedded.
        embedded_wall, embedded_rss, _ = run("embedded", [args.strata, "run", *common, "--select", "silver_events",
                                                          "--threads", "2"], project)

        # 3. DataFusion alone.
        # The same Parquet files, in one folder (Delta keeps each attempt's files in a folder).
        bronze = os.path.join(work, "bronze-files")
        os.makedirs(bronze)
        table = os.path.join(warehouse, "bronze", "bronze_events")
        for folder, _, files in os.walk(table):
            for name in files:
                if name.endswith(".parquet") and "_delta_log" not in folder:
                    os.symlink(os.path.join(folder, name), os.path.join(bronze, f"{len(os.listdir(bronze))}-{name}"))
        alone = os.path.join(work, "datafusion-alone")
        statements = [
            "create schema bronze",
            f"create external table bronze.bronze_events stored as parquet location '{bronze}/'",
            f"copy ({silver['compiled_code']}) to '{alone}/' stored as parquet",
        ]
        script = (
            "import json, sys\n"
            "from datafusion import SessionContext, SessionConfig\n"
            f"ctx = SessionContext(SessionConfig().with_target_partitions({args.partitions}))\n"
            f"for statement in json.loads({json.dumps(json.dumps(statements))}):\n"
            "    ctx.sql(statement).collect()\n"
        )
        alone_wall, alone_rss, _ = run("datafusion alone", [args.python, "-c", script], work)

        def line(label, wall, rss):
            shown = f"{wall:8.2f} s" if wall is not None else "  FAILED  "
            print(f"{label:<40} {shown}   peak RSS {rss:8.0f} MiB")
        line(f"strata cluster (coordinator + {args.workers} workers)", cluster_wall, coordinator_rss + sum(worker_rss))
        print(f"    peak RSS: coordinator {coordinator_rss:.0f} MiB, workers " + ", ".join(f"{rss:.0f}" for rss in worker_rss) + " MiB")
        if stages:
            for stage in stages:
                print(f"    {stage['kind']:<6} {stage['tasks']} tasks on {', '.join(stage['workers'])}: "
                      f"{stage['rows']:,} rows, {stage['bytes'] / 1e6:.1f} MB")
            print(f"    bytes moved over Flight: {moved / 1e6:.1f} MB")
        line("strata embedded (one process)", embedded_wall, embedded_rss)
        line("DataFusion alone", alone_wall, alone_rss)
        if cluster_wall and alone_wall:
            print(f"ratios: cluster / DataFusion alone {cluster_wall / alone_wall:.2f}x, "
                  f"embedded / DataFusion alone {embedded_wall / alone_wall:.2f}x" if embedded_wall else "")
    finally:
        for worker in workers:
            worker.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
