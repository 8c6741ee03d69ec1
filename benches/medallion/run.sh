#!/usr/bin/env bash
# Medallion benchmark: builds strata (release), creates the pinned Python env (dbt-duckdb,
# DataFusion's Python package), and runs benches/medallion/run.py. Pass --events N etc.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/strata-target}"
cargo build --release --locked -p strata --manifest-path "$root/Cargo.toml"
venv="$("$root/scripts/python-env.sh")"
exec "$venv/bin/python" "$root/benches/medallion/run.py" \
    --strata "$CARGO_TARGET_DIR/release/strata" --python "$venv/bin/python" "$@"
