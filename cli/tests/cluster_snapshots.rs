//! Snapshots in the distributed mode: `tests/fixtures/snapshots` over its three source states,
//! built by `strata build --cluster` on two `strata worker` processes over the real RabbitMQ,
//! keeps the same history as embedded builds of the same states. Only what records the
//! moment of each run (the check strategy's change times, hard-delete times, ids hashed from
//! them) may differ.

mod common;

use std::path::Path;

use common::{
    Workers, copy_project, finish_build, rows, start_build_with_args, unique_queue, workers_used,
};

/// A row with every time of this decade's runs (not of the fixture's 2024 data) as NOW, and
/// in such a row the 32-hex-digit ids hashed from it as HASH.
fn masked(rows: Vec<String>) -> Vec<String> {
    let mut masked: Vec<String> = rows
        .into_iter()
        .map(|row| {
            let cells: Vec<&str> = row.split('|').collect();
            let is_now =
                |cell: &str| cell.len() >= 19 && cell.as_bytes()[4] == b'-' && cell[..4] >= *"2025";
            let any_now = cells.iter().any(|cell| is_now(cell));
            cells
                .iter()
                .map(|cell| {
                    if is_now(cell) {
                        "NOW"
                    } else if any_now
                        && cell.len() == 32
                        && cell.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        "HASH"
                    } else {
                        cell
                    }
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    masked.sort();
    masked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_keep_the_same_history_in_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/snapshots");
    let project = dir.path().join("project");
    copy_project(&fixture, &project);
    copy_project(&fixture.join("data"), &project.join("data"));
    let states = std::fs::read_to_string(fixture.join("runs")).unwrap();
    let (clustered, embedded) = (dir.path().join("clustered"), dir.path().join("embedded"));

    let queue = unique_queue("snapshots");
    let _workers = Workers::start(2, "snap", &queue);
    for state in states.lines().filter(|line| !line.trim().is_empty()) {
        let record = finish_build(start_build_with_args(
            &project,
            &clustered,
            Some(&queue),
            &["--vars", state],
        ));
        assert_eq!(record["success"], true, "{record:#}");
        let used = workers_used(&record);
        assert!(
            !used.is_empty() && used.iter().all(|worker| worker.starts_with("snap-")),
            "{used:?}"
        );
        finish_build(start_build_with_args(
            &project,
            &embedded,
            None,
            &["--vars", state],
        ));
    }
    for table in [
        "snapshots/customers_timestamp",
        "snapshots/customers_check",
        "snapshots/customers_history",
        "main/current_customers",
    ] {
        let want = masked(rows(&embedded.join(table)).await);
        let got = masked(rows(&clustered.join(table)).await);
        assert!(!want.is_empty(), "{table} is empty");
        assert_eq!(want, got, "{table}");
    }
    // Three states, three versions of the table: one commit per run.
    let log = clustered.join("snapshots/customers_timestamp/_delta_log");
    assert!(log.join("00000000000000000002.json").is_file());
    assert!(!log.join("00000000000000000003.json").is_file());
}
