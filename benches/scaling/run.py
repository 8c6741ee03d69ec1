#!/usr/bin/env python3
"""Scaling benchmark: `examples/medallion` on a cluster of 1 worker, then of 2 workers, each
worker pinned to its own core with `taskset`, on the same raw events, in one invocation.

1. `strata build --cluster` of the whole project (bronze to gold, tests included) with 1 worker
   on core 0, then into a fresh warehouse with 2 workers on cores 0 and 1: the speed-up is the
   ratio of the two walls (issue 14's target: at least 1.7x).
2. The shuffle-heavy models alone (every model whose record shows a map stage in step 1), with
   `strata run --cluster --select ...` over each step-1 warehouse: the same ratio for the part of
   the work that moves rows between workers over Arrow Flight.

Each worker has one slot and sees one CPU (so DataFusion plans one partition per task); the
coordinator (the `strata build --cluster` process itself) is not pinned: on a 2-core machine it
shares the cores with the workers, which costs the 2-worker run a little. Wall time from process
start to exit; peak RSS from wait4 for the coordinator and each worker. Where the time goes:
each node's duration from the run record, side by side.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BROKER = "amqp://guest:guest@127.0.0.1:5672/%2f"


class Cluster:
    """`count` `strata worker` processes on one queue, worker i pinned to core i."""

    def __init__(self, strata, count, queue):
        self.queue = queue
        self.workers = []
        for index in range(count):
            self.workers.append(subprocess.Popen(
                ["taskset", "-c", str(index % os.cpu_count()), strata, "worker", "--task-queue", queue,
                 "--slots", "1", "--worker-id", f"bench-{index}", "--flight-listen", "127.0.0.1:0",
                 "--flight-advertise", "127.0.0.1", "--amqp-url", BROKER],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        time.sleep(1.0)

    def stop(self):
        """Drains every worker (SIGTERM) and returns their peak RSS in MiB."""
        peaks = []
        for worker in self.workers:
            worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            _, _, usage = os.wait4(worker.pid, 0)
            peaks.append(usage.ru_maxrss / 1024.0)
        self.workers = []
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", self.queue],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return peaks

    def kill(self):
        for worker in self.workers:
            worker.kill()


def timed(label, command, cwd):
    """Runs `command`; returns (wall s, peak RSS MiB, the run record) or exits on failure."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{label}: FAILED (exit {code})\n    " + "\n    ".join(output.strip().splitlines()[-12:]))
    return wall, usage.ru_maxrss / 1024.0, json.loads(output[output.index("{"):])


def on_cluster(strata, workers, command, project, label):
    """Runs a `strata … --cluster` command against `workers` pinned workers."""
    queue = f"strata.bench.scaling.{os.getpid()}.{workers}"
    cluster = Cluster(strata, workers, queue)
    try:
        wall, coordinator_rss, record = timed(label, [*command, "--cluster", BROKER, "--task-queue", queue,
                                                      "--output", "json"], project)
    except BaseException:
        cluster.kill()
        raise
    worker_rss = cluster.stop()
    return {"wall": wall, "coordinator_rss": coordinator_rss, "worker_rss": worker_rss, "record": record}


def shuffled_models(record):
    return sorted(node["name"] for node in record["nodes"]
                  if any(stage["kind"] == "map" for stage in node.get("stages", [])))


def report(title, one, two):
    ratio = one["wall"] / two["wall"]
    print(f"\n{title}")
    for label, result in (("1 worker ", one), ("2 workers", two)):
        workers = ", ".join(f"{rss:.0f}" for rss in result["worker_rss"])
        print(f"  {label}: {result['wall']:8.2f} s   peak RSS coordinator {result['coordinator_rss']:.0f} MiB, "
              f"workers {workers} MiB")
    print(f"  speed-up 1 -> 2 workers: {ratio:.2f}x (target >= 1.7x)")
    durations = {}
    for column, result in enumerate((one, two)):
        for node in result["record"]["nodes"]:
            durations.setdefault(node["name"], [None, None])[column] = node["duration_ms"] / 1000.0
    print(f"  {'node':<44} {'1 worker':>9} {'2 workers':>9} {'ratio':>6}")
    for name, (first, second) in sorted(durations.items(), key=lambda item: -(item[1][0] or 0)):
        if first is None or second is None or first < 0.05:
            continue
        print(f"  {name:<44} {first:8.2f}s {second:8.2f}s {first / max(second, 1e-3):5.2f}x")
    return ratio


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strata", required=True)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--partitions", type=int, default=4, help="shuffle partitions of a run")
    parser.add_argument("--data-cache", default="/var/cache/strata-bench-data")
    args = parser.parse_args()
    if shutil.which("taskset") is None:
        raise SystemExit("taskset is missing (Debian package util-linux)")
    if os.cpu_count() < 2:
        raise SystemExit("the benchmark pins two workers to two cores; this machine has one")

    data = os.path.join(args.data_cache, f"events-{args.events}")
    if not os.path.isdir(os.path.join(data, "events")):
        subprocess.run([args.strata, "generate-sample-data", "--events", str(args.events), "--batches", "8",
                        "--out", data], check=True)
    work = tempfile.mkdtemp(prefix="strata-scaling-bench-")
    try:
        project = os.path.join(work, "project")
        shutil.copytree(os.path.join(ROOT, "examples", "medallion"), project,
                        ignore=shutil.ignore_patterns("target", "data", "warehouse"))
        os.symlink(data, os.path.join(project, "data"))
        print(f"examples/medallion on {args.events:,} raw events; {os.cpu_count()} cores; "
              f"{args.partitions} shuffle partitions; each worker 1 slot on its own core")

        builds = {}
        for workers in (1, 2):
            warehouse = os.path.join(work, f"warehouse-{workers}")
            builds[workers] = on_cluster(
                args.strata, workers,
                [args.strata, "build", "--project-dir", project, "--warehouse", warehouse,
                 "--shuffle-partitions", str(args.partitions)],
                project, f"build on {workers} worker(s)")
        build_ratio = report("strata build --cluster (the whole project)", builds[1], builds[2])

        shuffled = shuffled_models(builds[1]["record"])
        alone = {}
        for workers in (1, 2):
            warehouse = os.path.join(work, f"warehouse-{workers}")
            alone[workers] = on_cluster(
                args.strata, workers,
                [args.strata, "run", "--project-dir", project, "--warehouse", warehouse,
                 "--shuffle-partitions", str(args.partitions), "--select", *shuffled],
                project, f"shuffled models on {workers} worker(s)")
        shuffle_ratio = report(f"strata run --cluster of the shuffled models alone ({', '.join(shuffled)})",
                               alone[1], alone[2])
        print(f"\nsummary: build {build_ratio:.2f}x, shuffled models {shuffle_ratio:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
