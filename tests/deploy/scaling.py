#!/usr/bin/env python3
"""Queue-driven scaling with real processes: this script plays KEDA's part for a run of
examples/medallion on the real RabbitMQ. Every half second it reads the task queue's length and
sizes a pool of `strata worker` processes by KEDA's formula — desired = ceil(length / target per
replica), bounded by min and max — starting workers at once when more are wanted, and draining
the newest with SIGTERM after a cool-down when fewer are. The run starts with one worker; the
pool must grow while tasks wait and shrink back afterwards; the tables must equal an embedded
build's, every node succeed on its first attempt (no task lost or done twice).

With --netns each worker runs in a network namespace of its own, joined to this host by a veth
pair (10.201.<n>.2 in the namespace, 10.201.<n>.1 here), so that Flight shuffles between workers
cross real interfaces and the host's routing, not loopback. RabbitMQ listens on loopback only on
these machines: a forwarder here relays each namespace's AMQP connection to it.
"""
import asyncio
import threading
import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from deltalake import DeltaTable

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BROKER = os.environ.get("STRATA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")


class Namespaces:
    """Network namespaces for workers, each joined to the host by a veth pair, and an AMQP
    relay on each host-side address. Everything is removed by close()."""

    def __init__(self):
        self.made = []
        self.forwarding = open("/proc/sys/net/ipv4/ip_forward").read().strip()
        with open("/proc/sys/net/ipv4/ip_forward", "w") as handle:
            handle.write("1")  # packets between two namespaces go through the host
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def make(self, index):
        name, host_if, ns_if = f"strata-scale-{os.getpid()}-{index}", f"vss{index}", f"vsw{index}"
        host_ip, ns_ip = f"10.201.{index + 1}.1", f"10.201.{index + 1}.2"
        def ip(*args):
            subprocess.run(["ip", *args], check=True)
        ip("netns", "add", name)
        self.made.append((name, host_if))
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", name)
        ip("addr", "add", f"{host_ip}/24", "dev", host_if)
        ip("link", "set", host_if, "up")
        for args in (("addr", "add", f"{ns_ip}/24", "dev", ns_if), ("link", "set", ns_if, "up"),
                     ("link", "set", "lo", "up"), ("route", "add", "default", "via", host_ip)):
            ip("netns", "exec", name, "ip", *args)
        asyncio.run_coroutine_threadsafe(self.relay(host_ip), self.loop).result(timeout=10)
        return name, host_ip, ns_ip

    async def relay(self, host_ip):
        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass  # a worker drained or killed: its connection ends either way
            finally:
                writer.close()

        async def connected(reader, writer):
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", 5672)
            asyncio.ensure_future(pipe(reader, upstream_writer))
            asyncio.ensure_future(pipe(upstream_reader, writer))

        await asyncio.start_server(connected, host_ip, 5672)

    def close(self):
        for name, host_if in self.made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        with open("/proc/sys/net/ipv4/ip_forward", "w") as handle:
            handle.write(self.forwarding)
        self.loop.call_soon_threadsafe(self.loop.stop)


def queue_length(queue):
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "messages_ready"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue:
            return int(parts[1])
    return 0


def desired(length, target, low, high):
    return max(low, min(high, math.ceil(length / target)))


def tables(warehouse):
    found = {}
    for folder, dirs, _ in os.walk(warehouse):
        if "_delta_log" in dirs:
            found[os.path.relpath(folder, warehouse)] = folder
            dirs.clear()
    return found


def rows(path):
    table = DeltaTable(path).to_pyarrow_table()
    columns = [c for c in table.column_names if c != "_ingested_at"]
    return sorted(json.dumps(row, sort_keys=True, default=str)
                  for row in table.select(columns).to_pylist())


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strata", required=True)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--target", type=int, default=1, help="waiting tasks per replica (a worker's slots)")
    parser.add_argument("--min", type=int, default=1)
    parser.add_argument("--max", type=int, default=4)
    parser.add_argument("--cooldown", type=float, default=3.0)
    parser.add_argument("--netns", action="store_true", help="each worker in its own network namespace")
    args = parser.parse_args()
    namespaces = Namespaces() if args.netns else None
    env = dict(os.environ, STRATA__CLUSTER__SECRET=os.environ.get(
        "STRATA__CLUSTER__SECRET", "strata-scaling-test-secret-0123456789"))
    queue = f"strata-scaling.tasks.{os.getpid()}"
    workers, history = [], []
    with tempfile.TemporaryDirectory(prefix="strata-scaling-") as work:
        project = os.path.join(work, "medallion")
        shutil.copytree(os.path.join(ROOT, "examples/medallion"), project,
                        ignore=shutil.ignore_patterns("target", "data", "warehouse"))
        subprocess.run([args.strata, "generate-sample-data", "--events", str(args.events), "--batches", "3",
                        "--out", os.path.join(project, "data")], check=True, stdout=subprocess.DEVNULL)
        embedded, clustered = os.path.join(work, "embedded"), os.path.join(work, "clustered")
        subprocess.run([args.strata, "build", "--project-dir", project, "--warehouse", embedded],
                       check=True, env=env, stdout=subprocess.DEVNULL)

        def start_worker():
            index = len(history)
            prefix, broker, address = [], BROKER, "127.0.0.1"
            if namespaces:
                name, host_ip, address = namespaces.make(index)
                prefix = ["ip", "netns", "exec", name]
                broker = BROKER.replace("127.0.0.1", host_ip)
            workers.append(subprocess.Popen(
                prefix + [args.strata, "worker", "--slots", str(args.target), "--memory-limit-mib", "512",
                          "--worker-id", f"scaled-{index}@{address}", "--amqp-url", broker,
                          "--task-queue", queue, "--flight-listen", f"{address}:0",
                          "--flight-advertise", address],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            history.append(("start", time.monotonic()))

        def drain_newest():
            worker = workers.pop()
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=600)
            if worker.returncode != 0:
                raise SystemExit(f"a drained worker exited with {worker.returncode}")
            history.append(("drain", time.monotonic()))

        try:
            for _ in range(args.min):
                start_worker()
            build = subprocess.Popen(
                [args.strata, "build", "--project-dir", project, "--warehouse", clustered, "--threads", "8",
                 "--shuffle-partitions", "2", "--cluster", BROKER, "--task-queue", queue, "--output", "json"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            peak, below_since = len(workers), None
            settled_at = None
            while True:
                running = build.poll() is None
                wanted = desired(queue_length(queue), args.target, args.min, args.max)
                if wanted > len(workers):
                    while len(workers) < wanted:
                        start_worker()
                    below_since = None
                elif wanted < len(workers):
                    below_since = below_since or time.monotonic()
                    if time.monotonic() - below_since >= args.cooldown:
                        drain_newest()
                        below_since = None
                else:
                    below_since = None
                peak = max(peak, len(workers))
                if not running and len(workers) == args.min:
                    settled_at = settled_at or time.monotonic()
                    break
                time.sleep(0.5)
            stdout, stderr = build.communicate()
            if build.returncode != 0:
                raise SystemExit(f"the build failed:\n{stderr[-3000:]}")
            record = json.loads(stdout)
        finally:
            for worker in workers:
                worker.kill()
                worker.wait()
            subprocess.run(["rabbitmqctl", "-q", "delete_queue", queue], capture_output=True)
            if namespaces:
                namespaces.close()
        problems = []
        if peak <= args.min:
            problems.append(f"the pool never grew beyond {args.min} worker(s)")
        drains = sum(1 for event, _ in history if event == "drain")
        if drains < peak - args.min:
            problems.append(f"the pool grew to {peak} but only {drains} drains brought it back")
        retried = [n for n in record["nodes"] if n.get("attempts", 1) > 1]
        if retried:
            details = [{key: n.get(key) for key in ("name", "attempts", "tasks", "error", "stages")} for n in retried]
            problems.append(f"nodes retried (a task lost or done twice?): {details}")
        if not record["success"]:
            problems.append("the run failed")
        expected, actual = tables(embedded), tables(clustered)
        if sorted(expected) != sorted(actual):
            problems.append(f"tables differ: {sorted(expected)} vs {sorted(actual)}")
        for name in sorted(set(expected) & set(actual)):
            if rows(expected[name]) != rows(actual[name]):
                problems.append(f"{name}: rows differ from the embedded build")
        used = sorted({w for n in record["nodes"] for w in n.get("workers", [])})
        shuffled = [n["name"] for n in record["nodes"] if len(n.get("stages") or []) > 1]
        print(f"scaling{' (a network namespace per worker)' if args.netns else ''}: "
              f"shuffled models: {', '.join(shuffled) or 'none'}")
        print(f"scaling: {args.events:,} events, target {args.target} task(s) per worker, "
              f"{args.min}..{args.max} workers: peak {peak}, {len(history) - drains} started, "
              f"{drains} drained; workers that ran tasks: {', '.join(used)}; "
              f"{len(expected)} tables compared with the embedded build")
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
