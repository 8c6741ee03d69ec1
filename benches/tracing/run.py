#!/usr/bin/env python3
"""Tracing overhead: `strata build` of examples/medallion with tracing off, then exporting every
span over OTLP/HTTP to a local receiver, alternated over several rounds in one run. Prints wall
time and peak RSS of each and the on/off ratios (target: at most 1.03 for wall time).

The receiver is a small HTTP server here that accepts `POST /v1/traces` (OTLP/HTTP protobuf) and
counts the bytes it is sent, so the exporter does all its work: batching, encoding, sending.
"""
import argparse
import http.server
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Receiver(http.server.BaseHTTPRequestHandler):
    received = 0
    requests = 0

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        Receiver.received += len(body)
        Receiver.requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def build(strata, project, env):
    """One build from scratch: (wall seconds, peak RSS MiB of that process)."""
    warehouse = os.path.join(project, "warehouse")
    shutil.rmtree(warehouse, ignore_errors=True)
    started = time.perf_counter()
    child = subprocess.Popen([strata, "build", "--project-dir", project, "--threads", "2"],
                             env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"strata build failed with {child.returncode}")
    return wall, usage.ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strata", required=True)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    with tempfile.TemporaryDirectory(prefix="strata-tracing-bench-") as work:
        project = os.path.join(work, "medallion")
        shutil.copytree(os.path.join(ROOT, "examples/medallion"), project,
                        ignore=shutil.ignore_patterns("target", "data", "warehouse"))
        subprocess.run([args.strata, "generate-sample-data", "--events", str(args.events),
                        "--batches", "3", "--out", os.path.join(project, "data")],
                       check=True, stdout=subprocess.DEVNULL)
        off_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        on_env = dict(off_env, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                      OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
        build(args.strata, project, off_env)  # warm the page cache
        results = {"off": [], "on": []}
        for _ in range(args.rounds):
            for label, env in (("off", off_env), ("on", on_env)):
                results[label].append(build(args.strata, project, env))
    print(f"tracing overhead, examples/medallion at {args.events:,} events, {args.rounds} rounds "
          f"(alternated), {os.cpu_count()} cores")
    for label in ("off", "on"):
        walls = [wall for wall, _ in results[label]]
        print(f"  tracing {label:3}: wall median {statistics.median(walls):7.2f} s "
              f"(min {min(walls):.2f}), peak RSS {max(rss for _, rss in results[label]):7.0f} MiB")
    ratio = statistics.median(w for w, _ in results["on"]) / statistics.median(w for w, _ in results["off"])
    print(f"  on/off wall ratio (medians): {ratio:.3f}  (target <= 1.03)")
    print(f"  receiver: {Receiver.requests} export requests, {Receiver.received / 1024:.0f} KiB of spans")
    server.shutdown()


if __name__ == "__main__":
    main()
