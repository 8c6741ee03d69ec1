#!/usr/bin/env bash
# Strata's whole test suite — the README's test command; .ci/run calls it.
#
#   1. formatting and lints (cargo fmt --check, clippy -D warnings)
#   2. every Rust test: unit, golden compile, diagnostics, selection, property tests, CLI
#   3. dbt parity: dbt-core (pinned, in a virtualenv this script creates) parses the example,
#      the fixture projects and a generated 200-model project; its graph must match Strata's
#   4. correctness: examples/medallion built by Strata on generated data equals DuckDB's
#      result for the same SQL, read back from the Delta tables with the `deltalake` package
#
# Services: the compiler needs none yet. Tests that need RabbitMQ or an S3 server start them
# here (and fail loudly when they cannot) once such tests exist.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/strata-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

for tool in cargo python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool is required but not installed" >&2; exit 1; }
done

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "dbt parity"
venv="$("$root/scripts/python-env.sh")"
cargo build --workspace --locked   # same features as the test build: no rebuild
synthetic="$(mktemp -d)"
medallion="$(mktemp -d)"
trap 'rm -rf "$synthetic" "$medallion"' EXIT
"$venv/bin/python" benches/compile/generate_project.py --models 200 --tests 800 --out "$synthetic/project" >/dev/null
"$venv/bin/python" tests/dbt_parity/check.py \
    --strata "$CARGO_TARGET_DIR/debug/strata" --dbt "$venv/bin/dbt" \
    examples/medallion \
    tests/fixtures/compile/basic/project \
    tests/fixtures/compile/config_precedence/project \
    tests/fixtures/compile/custom_generic_tests/project \
    tests/fixtures/compile/ephemeral_chain/project \
    tests/fixtures/compile/test_forms/project \
    "$synthetic/project"

step "examples/medallion vs DuckDB"
strata="$CARGO_TARGET_DIR/debug/strata"
cp -r examples/medallion "$medallion/project"
rm -rf "$medallion/project/target" "$medallion/project/data" "$medallion/project/warehouse"
"$strata" generate-sample-data --events 50000 --batches 3 --out "$medallion/project/data"
"$strata" build --project-dir "$medallion/project" --threads 2
"$venv/bin/python" tests/reference/compare_duckdb.py \
    --project "$medallion/project" --warehouse "$medallion/project/warehouse"

step "fixture projects vs DuckDB"
for fixture in tests/fixtures/execution/*/; do
    name="$(basename "$fixture")"
    cp -r "$fixture" "$medallion/$name"
    "$strata" build --project-dir "$medallion/$name" --threads 2
    "$venv/bin/python" tests/reference/compare_duckdb.py \
        --project "$medallion/$name" --warehouse "$medallion/$name/warehouse"
done
