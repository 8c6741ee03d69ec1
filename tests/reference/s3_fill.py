#!/usr/bin/env python3
"""Prepares an S3-compatible server for the s3:// tests: waits until it answers, creates a
bucket, and uploads a local folder under a prefix. Credentials and endpoint come from the
standard AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)."""
import argparse
import os
import sys
import time

import boto3
import botocore.exceptions


def wait_until_up(client, seconds):
    deadline = time.monotonic() + seconds
    while True:
        try:
            client.list_buckets()
            return
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError) as err:
            if time.monotonic() > deadline:
                sys.exit(f"error: the S3 server at {os.environ.get('AWS_ENDPOINT_URL')} did not answer in {seconds} s: {err}")
            time.sleep(0.2)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--upload", metavar="DIR", help="local folder to upload")
    parser.add_argument("--prefix", default="", help="key prefix for the uploaded files")
    parser.add_argument("--wait", type=float, default=30, help="seconds to wait for the server")
    args = parser.parse_args()
    client = boto3.client("s3")
    wait_until_up(client, args.wait)
    client.create_bucket(Bucket=args.bucket)
    uploaded = 0
    if args.upload:
        for root, _, files in os.walk(args.upload):
            for name in files:
                path = os.path.join(root, name)
                key = "/".join(part for part in (args.prefix, os.path.relpath(path, args.upload)) if part)
                client.upload_file(path, args.bucket, key)
                uploaded += 1
    print(f"s3: bucket {args.bucket} ready, {uploaded} files uploaded")


if __name__ == "__main__":
    main()
