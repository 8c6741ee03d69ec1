#!/usr/bin/env bash
# The README's main job: builds strata (release), writes sample raw data for
# examples/medallion when it is absent, and builds the pipeline in embedded mode — seeds,
# models and tests in DAG order into Delta tables under examples/medallion/warehouse —
# printing progress and a summary.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/strata-target}"
cargo build --locked --release -p strata --manifest-path "$root/Cargo.toml"
strata="$CARGO_TARGET_DIR/release/strata"
project="$root/examples/medallion"
if [[ ! -d "$project/data/events" ]]; then
    "$strata" generate-sample-data --events "${EVENTS:-1000000}" --out "$project/data"
fi
"$strata" build --project-dir "$project" "$@"
