#!/usr/bin/env bash
# Scaling benchmark: builds strata (release) and runs benches/scaling/run.py — examples/medallion
# on 1 then 2 workers pinned to one core each (RabbitMQ must be running). Pass --events N,
# --partitions N.
set -euo pipefail
# Workers and coordinators share a secret for Flight calls (docs/running.md).
export STRATA__CLUSTER__SECRET="${STRATA__CLUSTER__SECRET:-strata-bench-secret-$$-0123456789}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/strata-target}"
cargo build --release --locked -p strata --manifest-path "$root/Cargo.toml"
exec python3 "$root/benches/scaling/run.py" --strata "$CARGO_TARGET_DIR/release/strata" "$@"
