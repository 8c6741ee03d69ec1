#!/usr/bin/env bash
# Submission benchmark: a coordinator and two workers (release build) on the local RabbitMQ,
# then `strata bench submit`: --runs concurrent SubmitRun calls of examples/medallion on
# --events generated events (default 100 runs of 2,000 events), each into its own warehouse.
# Prints submit latency p50/p99 and runs per minute, and the same project built one run after
# another by embedded `strata build` as the reference.
set -euo pipefail
# Workers and coordinators share a secret for Flight calls (docs/running.md).
export STRATA__CLUSTER__SECRET="${STRATA__CLUSTER__SECRET:-strata-bench-secret-$$-0123456789}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/strata-target}"
runs=100
events=2000
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --events) events="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--events N]" >&2; exit 2 ;;
    esac
done
# STRATA_PROFILE=debug measures the test build instead (no release build needed).
profile="${STRATA_PROFILE:-release}"
if [[ "$profile" == release ]]; then
    cargo build --release --locked -p strata --manifest-path "$root/Cargo.toml"
else
    cargo build --locked -p strata --manifest-path "$root/Cargo.toml"
fi
strata="$CARGO_TARGET_DIR/$profile/strata"
work="$(mktemp -d)"
queue="strata.bench.submit.$$"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/project"
(cd "$root/examples/medallion" && tar --exclude=target --exclude=warehouse --exclude=data -cf - .) | tar -xf - -C "$work/project"
"$strata" generate-sample-data --events "$events" --batches 2 --out "$work/project/data" >/dev/null
echo "bench-token" > "$work/tokens"

"$strata" coordinator --listen 127.0.0.1:0 --task-queue "$queue" --data-dir "$work/coordinator" \
    --token-file "$work/tokens" --max-concurrent-runs 8 > "$work/coordinator.out" 2> "$work/coordinator.log" &
pids+=($!)
for _ in $(seq 100); do
    grep -q "serving" "$work/coordinator.out" 2>/dev/null && break
    sleep 0.1
done
address="$(sed -n 's/.* on \([0-9.:]*\).*/\1/p' "$work/coordinator.out" | head -1)"
[[ -n "$address" ]] || { cat "$work/coordinator.log" >&2; echo "the coordinator did not start" >&2; exit 1; }
for index in 1 2; do
    "$strata" worker --task-queue "$queue" --slots 2 --worker-id "bench-$index" \
        --flight-listen 127.0.0.1:0 --flight-advertise 127.0.0.1 > /dev/null 2> "$work/worker-$index.log" &
    pids+=($!)
done
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; coordinator at $address"
"$strata" bench submit --coordinator "http://$address" --token-file "$work/tokens" \
    --project-dir "$work/project" --runs "$runs" --warehouse-root "$work/warehouses"
