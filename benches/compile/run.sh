#!/usr/bin/env bash
# Compile benchmark: builds strata in release mode, creates the pinned Python env with dbt,
# and runs benches/compile/run.py. Arguments are passed on (--models, --tests, --runs).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/strata-target}"
cargo build --release --locked -p strata --manifest-path "$root/Cargo.toml"
venv="$("$root/scripts/python-env.sh")"
exec "$venv/bin/python" "$root/benches/compile/run.py" \
    --strata "$CARGO_TARGET_DIR/release/strata" --dbt "$venv/bin/dbt" "$@"
