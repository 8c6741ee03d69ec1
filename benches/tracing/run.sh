#!/usr/bin/env bash
# Tracing overhead benchmark: builds strata (release) and runs benches/tracing/run.py.
# Pass --events N, --rounds N.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/strata-target}"
cargo build --release --locked -p strata --manifest-path "$root/Cargo.toml"
exec python3 "$root/benches/tracing/run.py" --strata "$CARGO_TARGET_DIR/release/strata" "$@"
