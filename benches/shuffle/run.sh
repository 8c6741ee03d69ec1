#!/usr/bin/env bash
# Shuffle benchmark: builds strata (release), creates the pinned Python env (DataFusion's
# Python package), and runs benches/shuffle/run.py (RabbitMQ must be running). Pass --events N,
# --partitions N, --workers N.
set -euo pipefail
# Workers and coordinators share a secret for Flight calls (docs/running.md).
export STRATA__CLUSTER__SECRET="${STRATA__CLUSTER__SECRET:-strata-bench-secret-$$-0123456789}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/strata-target}"
cargo build --release --locked -p strata --manifest-path "$root/Cargo.toml"
venv="$("$root/scripts/python-env.sh")"
exec "$venv/bin/python" "$root/benches/shuffle/run.py" \
    --strata "$CARGO_TARGET_DIR/release/strata" --python "$venv/bin/python" "$@"
