#!/usr/bin/env bash
# Strata's whole test suite — the README's test command; .ci/run calls it.
#
#   1. formatting and lints (cargo fmt --check, clippy -D warnings)
#   2. every Rust test: unit, golden compile, diagnostics, selection, property tests, CLI
#   3. dbt parity: dbt-core (pinned, in a virtualenv this script creates) parses the example,
#      the fixture projects and a generated 200-model project; its graph must match Strata's
#   4. correctness: examples/medallion built by Strata on generated data equals DuckDB's
#      result for the same SQL, read back from the Delta tables with the `deltalake` package;
#      so do the fixture projects under tests/fixtures/execution (a fixture's `runs` file lists
#      the --vars of successive builds, for incremental models over several batches)
#   4b. snapshots: tests/fixtures/snapshots built by Strata and by dbt-duckdb over three
#      successive source states must leave the same history (tests/reference/compare_snapshots.py)
#   5. memory-bound: every distinct-aggregate shape and deduplication over events several times
#      larger than a 64 MiB pool, each `strata run` a child process under an address-space
#      limit, equal to DuckDB (tests/memory_bound/run.py)
#   6. the Grafana dashboards under deploy/grafana (valid, and naming only exported metrics);
#      deploy/ validated offline (kustomize overlays, Kubernetes, KEDA and compose schemas,
#      Dockerfiles); queue-driven scaling of worker processes by KEDA's formula, each worker in
#      its own network namespace;
#      the shuffle Flight server of `strata worker`, read with pyarrow.flight
#   7. the coordinator's gRPC API from Python grpcio + grpcio-reflection (a client written by no
#      one here): services listed through reflection, SubmitRun and GetRun with a bearer token,
#      the run's tables compared with DuckDB
#   8. s3://: examples/medallion with its sources and warehouse on an S3 server (moto, from the
#      virtualenv, started here on a free port), compared with DuckDB the same way; files on
#      the S3 server ingested into an s3:// warehouse
#   9. the ingest agent (tests/ingest/check_ingest.py): PostgreSQL and MariaDB (started here when
#      not running), an HTTP API served by the test and files into bronze, compared row for row with
#      the sources; incremental runs, drift, quarantine, kill -9 trials for each connector
#
# The Rust tests include the distributed mode against the real RabbitMQ: worker processes,
# shuffles over Flight, SIGKILL and SIGTERM of workers, a broker restart, malformed messages.
#
# Services are started here when needed (RabbitMQ for the AMQP tests, an S3 server) and the
# script fails loudly when one cannot start.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/strata-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The secret the test clusters' workers and coordinators share for Flight calls.
export STRATA__CLUSTER__SECRET="${STRATA__CLUSTER__SECRET:-strata-test-cluster-secret-$$-0123456789}"

step() { printf '\n==> %s\n' "$*"; }

for tool in cargo python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool is required but not installed" >&2; exit 1; }
done

# RabbitMQ for the distributed-mode tests: the local broker unless STRATA_AMQP_URL names another.
# Installed with apt when absent and started when not running; the script stops if it cannot.
ensure_rabbitmq() {
    if [[ -n "${STRATA_AMQP_URL:-}" ]]; then
        return
    fi
    if ! command -v rabbitmq-server >/dev/null; then
        echo "rabbitmq-server is not installed: installing it with apt"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server; }; then
            echo "error: cannot install rabbitmq-server; install it or set STRATA_AMQP_URL" >&2
            exit 1
        fi
    fi
    if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
        echo "RabbitMQ is not running: starting it (rabbitmq-server -detached)"
        rabbitmq-server -detached
        if ! timeout 120 rabbitmqctl -q await_startup; then
            echo "error: RabbitMQ did not start within 120 s; see /var/log/rabbitmq/" >&2
            exit 1
        fi
    fi
    echo "RabbitMQ: running"
}

# PostgreSQL for the ingest agent's tests: the local server unless STRATA_TEST_PG_URL names
# another; started when not running, and the script stops if it cannot reach it.
export STRATA_TEST_PG_URL="${STRATA_TEST_PG_URL:-postgresql://postgres@127.0.0.1:5432/test}"
ensure_postgres() {
    if ! command -v psql >/dev/null; then
        echo "psql is not installed: installing postgresql with apt"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }; then
            echo "error: cannot install postgresql; install it or set STRATA_TEST_PG_URL" >&2
            exit 1
        fi
    fi
    if ! psql "$STRATA_TEST_PG_URL" -qtAc 'select 1' >/dev/null 2>&1; then
        echo "PostgreSQL is not answering at $STRATA_TEST_PG_URL: starting the local cluster"
        version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
        if [[ -n "$version" ]]; then
            pg_ctlcluster "$version" main start 2>/dev/null || service postgresql start || true
        fi
        for _ in $(seq 60); do psql "$STRATA_TEST_PG_URL" -qtAc 'select 1' >/dev/null 2>&1 && break; sleep 1; done
        if ! psql "$STRATA_TEST_PG_URL" -qtAc 'select 1' >/dev/null 2>&1; then
            echo "error: cannot reach PostgreSQL at $STRATA_TEST_PG_URL (a database 'test' the user may create tables in); start it or set STRATA_TEST_PG_URL" >&2
            exit 1
        fi
    fi
    echo "PostgreSQL: running"
}

# MariaDB (or MySQL) for the ingest agent's MySQL connector: the local server unless
# STRATA_TEST_MYSQL_URL names another; started when not running.
export STRATA_TEST_MYSQL_URL="${STRATA_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"
ensure_mariadb() {
    if ! command -v mariadb >/dev/null && ! command -v mysql >/dev/null; then
        echo "mariadb is not installed: installing mariadb-server with apt"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server; }; then
            echo "error: cannot install mariadb-server; install it or set STRATA_TEST_MYSQL_URL" >&2
            exit 1
        fi
    fi
    local client
    client="$(command -v mariadb || command -v mysql)"
    local ping=("$client" -h 127.0.0.1 -u root -e "select 1")
    if [[ "$STRATA_TEST_MYSQL_URL" == "mysql://root@127.0.0.1:3306/test" ]] && ! "${ping[@]}" >/dev/null 2>&1; then
        echo "MariaDB is not answering: starting it"
        service mariadb start 2>/dev/null || service mysql start 2>/dev/null || (mysqld_safe >/dev/null 2>&1 &)
        for _ in $(seq 60); do "${ping[@]}" >/dev/null 2>&1 && break; sleep 1; done
        if ! "${ping[@]}" >/dev/null 2>&1; then
            echo "error: cannot reach MariaDB at 127.0.0.1:3306 as root; start it or set STRATA_TEST_MYSQL_URL" >&2
            exit 1
        fi
        "$client" -h 127.0.0.1 -u root -e "create database if not exists test"
    fi
    echo "MariaDB: running"
}

step "services"
ensure_rabbitmq
ensure_postgres
ensure_mariadb

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
s3_server_pid=""
service_pids=()
service_queue="strata-test.grpc-client.$$"
cleanup() {
    [[ -n "$s3_server_pid" ]] && kill "$s3_server_pid" 2>/dev/null
    for pid in "${service_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rabbitmqctl -q delete_queue "$service_queue" >/dev/null 2>&1 || true
    rm -rf "$synthetic" "$medallion"
}
trap cleanup EXIT
"$venv/bin/python" benches/compile/generate_project.py --models 200 --tests 800 --out "$synthetic/project" >/dev/null
"$venv/bin/python" tests/dbt_parity/check.py \
    --strata "$CARGO_TARGET_DIR/debug/strata" --dbt "$venv/bin/dbt" \
    examples/medallion \
    tests/fixtures/compile/basic/project \
    tests/fixtures/compile/config_precedence/project \
    tests/fixtures/compile/custom_generic_tests/project \
    tests/fixtures/compile/ephemeral_chain/project \
    tests/fixtures/compile/test_forms/project \
    tests/fixtures/compile/naming_macros/project \
    tests/fixtures/execution/packages \
    tests/fixtures/execution/versions \
    tests/fixtures/snapshots \
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
    runs=("{}")
    [[ -f "$fixture/runs" ]] && mapfile -t runs < "$fixture/runs"
    for vars in "${runs[@]}"; do
        "$strata" build --project-dir "$medallion/$name" --threads 2 --vars "$vars"
    done
    # DuckDB computes every model from scratch over all the data: compile without
    # is_incremental() to get that SQL.
    "$strata" compile --project-dir "$medallion/$name" --vars "${runs[-1]}" >/dev/null
    "$venv/bin/python" tests/reference/compare_duckdb.py \
        --project "$medallion/$name" --warehouse "$medallion/$name/warehouse"
done

step "snapshots vs dbt-duckdb over three source states"
"$venv/bin/python" tests/reference/compare_snapshots.py \
    --strata "$strata" --dbt "$venv/bin/dbt" --project tests/fixtures/snapshots

step "materialized: external files vs dbt-duckdb's"
"$venv/bin/python" tests/reference/compare_exports.py \
    --strata "$strata" --dbt "$venv/bin/dbt" --project tests/fixtures/exports

step "memory-bound: distinct aggregates and deduplication in a 64 MiB pool vs DuckDB"
"$venv/bin/python" tests/memory_bound/run.py --strata "$strata" --python "$venv/bin/python"

step "Grafana dashboards: valid JSON, provisioned datasources, every query names an exported metric"
"$venv/bin/python" tests/observability/check_dashboards.py

step "deploy/: kustomize overlays, Kubernetes and KEDA schemas, compose schema, Dockerfiles"
command -v kubectl >/dev/null || { echo "error: kubectl is required to build the kustomize overlays" >&2; exit 1; }
"$venv/bin/python" tests/deploy/check_deploy.py

step "queue-driven scaling: a KEDA-formula scaler grows and drains strata workers, each in its own network namespace"
scaling_args=()
if [[ "$(id -u)" == 0 ]] && command -v ip >/dev/null; then
    scaling_args+=(--netns)
else
    echo "warning: not root or no ip(8): workers share loopback instead of network namespaces" >&2
fi
"$venv/bin/python" tests/deploy/scaling.py --strata "$strata" "${scaling_args[@]}"

step "ingest agent: PostgreSQL, MySQL/MariaDB, an HTTP API and files into bronze, exactly once (kill -9 trials)"
"$venv/bin/python" tests/ingest/check_ingest.py --strata "$strata"

step "a worker's Flight server from pyarrow.flight"
"$venv/bin/python" tests/reference/flight_interop.py --strata "$strata"

step "the coordinator's gRPC API from Python grpcio + grpcio-reflection"
echo "grpc-client-token" > "$medallion/tokens"
"$strata" coordinator --listen 127.0.0.1:0 --task-queue "$service_queue" \
    --data-dir "$medallion/coordinator" --token-file "$medallion/tokens" \
    > "$medallion/coordinator.out" 2> "$medallion/coordinator.log" &
service_pids+=($!)
"$strata" worker --task-queue "$service_queue" --slots 2 --flight-listen 127.0.0.1:0 \
    --flight-advertise 127.0.0.1 > /dev/null 2> "$medallion/worker.log" &
service_pids+=($!)
for _ in $(seq 100); do grep -q serving "$medallion/coordinator.out" 2>/dev/null && break; sleep 0.1; done
grpc_address="$(sed -n 's/.* on \([0-9.:]*\).*/\1/p' "$medallion/coordinator.out" | head -1)"
if [[ -z "$grpc_address" ]]; then
    echo "error: the coordinator did not start; its log:" >&2
    cat "$medallion/coordinator.log" >&2
    exit 1
fi
"$venv/bin/python" tests/reference/grpc_client.py --address "$grpc_address" \
    --token grpc-client-token --project "$medallion/project" --warehouse "$medallion/grpc-warehouse"
"$venv/bin/python" tests/reference/compare_duckdb.py \
    --project "$medallion/project" --warehouse "$medallion/grpc-warehouse"

step "s3:// warehouse and sources vs DuckDB"
s3_port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" > "$medallion/s3-server.log" 2>&1 &
s3_server_pid=$!
export AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port" AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=strata-test AWS_SECRET_ACCESS_KEY=strata-test
if ! "$venv/bin/python" tests/reference/s3_fill.py --bucket strata-test \
        --upload "$medallion/project/data" --prefix raw; then
    echo "error: the S3 server (moto) did not start; its log:" >&2
    cat "$medallion/s3-server.log" >&2
    exit 1
fi
s3_vars='{raw_data_dir: "s3://strata-test/raw"}'
"$strata" debug --project-dir "$medallion/project" --warehouse s3://strata-test/lake --vars "$s3_vars"
"$strata" build --project-dir "$medallion/project" --threads 2 \
    --warehouse s3://strata-test/lake --vars "$s3_vars"
"$venv/bin/python" tests/reference/compare_duckdb.py --project "$medallion/project" \
    --warehouse s3://strata-test/lake --mirror "s3://strata-test/raw=$medallion/project/data"
"$venv/bin/python" tests/ingest/check_ingest.py --strata "$strata" \
    --s3-files "s3://strata-test/raw/events/*.parquet" --s3-local "$medallion/project/data/events"

