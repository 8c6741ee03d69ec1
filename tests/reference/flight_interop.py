#!/usr/bin/env python3
"""A Strata worker's Flight server, from pyarrow.flight: DoGet streams a shuffle output that
pyarrow itself wrote into the worker's shuffle folder, an unknown ticket is a clear error,
ListActions names remove_run, and DoAction remove_run deletes the run's outputs — each only
with the cluster secret as `authorization: Bearer <secret>`; without it every call is refused.

Starts `strata worker` (RabbitMQ must be running) and stops it with SIGTERM, which must drain
it cleanly."""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.ipc as ipc


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strata", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        queue = f"strata-test.flight.{os.getpid()}"
        secret = "flight-interop-secret-0123456789"
        worker = subprocess.Popen(
            [args.strata, "worker", "--task-queue", queue, "--slots", "1",
             "--flight-listen", "127.0.0.1:0", "--flight-advertise", "127.0.0.1",
             "--shuffle-dir", folder],
            stdout=subprocess.PIPE, text=True,
            env={**os.environ, "STRATA__CLUSTER__SECRET": secret})
        try:
            banner = worker.stdout.readline()
            match = re.search(r"served at (\S+)", banner)
            if not match:
                sys.exit(f"FAIL the worker did not start: {banner!r}")
            address = match.group(1)
            port = address.rsplit(":", 1)[1]
            outputs = os.path.join(folder, f"strata-shuffle-{worker.pid}-{port}",
                                   "run-1", "node1", "0", "1")
            os.makedirs(outputs)
            table = pa.table({"id": pa.array(range(1000), pa.int64()),
                              "name": pa.array([f"row {i}" for i in range(1000)])})
            with ipc.new_file(os.path.join(outputs, "2.arrow"), table.schema) as writer:
                for batch in table.to_batches(max_chunksize=256):
                    writer.write_batch(batch)

            anonymous = flight.connect(f"grpc://{address}")
            for call in (lambda: anonymous.do_get(flight.Ticket(b"run-1/node1/0/1/2")).read_all(),
                         lambda: list(anonymous.do_action(flight.Action("remove_run", b"run-1")))):
                try:
                    call()
                    sys.exit("FAIL a call without the cluster secret was served")
                except flight.FlightUnauthenticatedError as err:
                    if "cluster secret" not in str(err):
                        sys.exit(f"FAIL unclear refusal: {err}")
            if not os.path.exists(os.path.join(outputs, "2.arrow")):
                sys.exit("FAIL an unauthenticated remove_run deleted outputs")
            print("ok   calls without the cluster secret are refused")

            options = flight.FlightCallOptions(
                headers=[(b"authorization", f"Bearer {secret}".encode())])
            client = flight.connect(f"grpc://{address}")
            fetched = client.do_get(flight.Ticket(b"run-1/node1/0/1/2"), options).read_all()
            if not fetched.equals(table):
                sys.exit("FAIL DoGet returned other rows than the file holds")
            print(f"ok   DoGet streamed {fetched.num_rows} rows from {address}")

            try:
                client.do_get(flight.Ticket(b"run-1/node1/0/1/9"), options).read_all()
                sys.exit("FAIL a missing output was served")
            except (flight.FlightError, pa.ArrowException) as err:
                if "no shuffle output run-1/node1/0/1/9" not in str(err):
                    sys.exit(f"FAIL unclear error for a missing output: {err}")
            try:
                client.do_get(flight.Ticket(b"not a ticket"), options).read_all()
                sys.exit("FAIL a malformed ticket was accepted")
            except (flight.FlightError, pa.ArrowException) as err:
                if "is not a shuffle ticket" not in str(err):
                    sys.exit(f"FAIL unclear error for a malformed ticket: {err}")
            print("ok   missing outputs and malformed tickets are clear errors")

            actions = [action.type for action in client.list_actions(options)]
            if actions != ["remove_run"]:
                sys.exit(f"FAIL ListActions gave {actions}")
            list(client.do_action(flight.Action("remove_run", b"run-1"), options))
            if os.path.exists(os.path.dirname(os.path.dirname(os.path.dirname(outputs)))):
                sys.exit("FAIL remove_run left the run's outputs")
            print("ok   remove_run deleted the run's outputs")
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=30)
            subprocess.run(["rabbitmqctl", "-q", "delete_queue", queue],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if code != 0:
            sys.exit(f"FAIL the worker exited with {code} after SIGTERM")
        print("ok   the worker drained and exited on SIGTERM")
    print("flight: 4 passed, 0 failed")


if __name__ == "__main__":
    main()
