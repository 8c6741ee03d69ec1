#!/usr/bin/env bash
# The README's main job: builds strata, writes sample raw data for examples/medallion when it
# is absent, and compiles the pipeline (lists its nodes and writes compiled SQL and the
# manifest under examples/medallion/target). Execution (`strata build`) lands with the
# execution-core issue; this script will then run it instead.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/strata-target}"
cargo build --locked --release -p strata --manifest-path "$root/Cargo.toml"
strata="$CARGO_TARGET_DIR/release/strata"
project="$root/examples/medallion"
if [[ ! -d "$project/data/events" ]]; then
    "$strata" generate-sample-data --events "${EVENTS:-1000000}" --out "$project/data"
fi
"$strata" ls --project-dir "$project"
"$strata" compile --project-dir "$project"
