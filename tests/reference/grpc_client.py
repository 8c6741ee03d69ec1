"""A client of the coordinator's gRPC API written by no one here: Python grpcio with
grpcio-reflection. It learns the services and message types from the server's reflection
(no generated code), checks health without a token, then calls SubmitRun and polls GetRun
with a bearer token until the run ends, and checks that a call without the token is refused.

Usage: grpc_client.py --address 127.0.0.1:7070 --token TOKEN --project DIR --warehouse DIR
"""

import argparse
import sys
import time

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call."""

    def __init__(self, token):
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, details):
        metadata = list(details.metadata or []) + [self.header]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


def fail(message):
    print(f"grpc_client: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()

    plain = grpc.insecure_channel(args.address)
    channel = grpc.intercept_channel(plain, BearerToken(args.token))

    # Reflection: the services and every message type, from the server itself.
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    for wanted in ("strata.v1.PipelineService", "grpc.health.v1.Health"):
        if wanted not in services:
            fail(f"reflection does not list {wanted}: {sorted(services)}")
    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName("strata.v1.PipelineService")
    methods = {method.name for method in service.methods}
    for wanted in ("SubmitRun", "GetRun", "ListRuns", "WatchRun", "CancelRun", "GetNode"):
        if wanted not in methods:
            fail(f"PipelineService has no {wanted}: {sorted(methods)}")

    def call(name, target=channel):
        method = service.FindMethodByName(name)
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        stub = target.unary_unary(
            f"/strata.v1.PipelineService/{name}",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        return request, stub

    # Health needs no token.
    health = pool.FindServiceByName("grpc.health.v1.Health").FindMethodByName("Check")
    check_request = message_factory.GetMessageClass(health.input_type)
    check_response = message_factory.GetMessageClass(health.output_type)
    status = plain.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=check_request.SerializeToString,
        response_deserializer=check_response.FromString,
    )(check_request(service=""))
    if status.status != health.output_type.fields_by_name["status"].enum_type.values_by_name["SERVING"].number:
        fail(f"health says {status}")

    submit_request, submit = call("SubmitRun")
    submitted = submit(
        submit_request(
            project_dir=args.project,
            command="build",
            config_overrides={"warehouse": args.warehouse},
            idempotency_key="python-grpc-client",
        )
    )
    if not submitted.run_id:
        fail(f"SubmitRun returned no run id: {submitted}")

    get_request, get = call("GetRun")
    run_type = service.FindMethodByName("GetRun").output_type
    states = run_type.fields_by_name["status"].enum_type.values_by_number
    deadline = time.monotonic() + args.timeout
    while True:
        run = get(get_request(run_id=submitted.run_id))
        state = states[run.status].name
        if state not in ("RUN_STATUS_QUEUED", "RUN_STATUS_RUNNING"):
            break
        if time.monotonic() > deadline:
            fail(f"run {submitted.run_id} still {state} after {args.timeout}s")
        time.sleep(0.2)
    if state != "RUN_STATUS_SUCCEEDED":
        fail(f"run {submitted.run_id} ended {state}: {run}")

    # Without the token: refused.
    _, anonymous = call("GetRun", target=plain)
    try:
        anonymous(get_request(run_id=submitted.run_id))
        fail("GetRun without a token was answered")
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.UNAUTHENTICATED:
            fail(f"GetRun without a token: {err.code()} instead of UNAUTHENTICATED")

    nodes = len(run.nodes)
    print(
        f"grpc_client: reflection lists {len(services)} services; run {run.run_id} "
        f"{state} with {nodes} nodes; unauthenticated call refused"
    )


if __name__ == "__main__":
    main()
