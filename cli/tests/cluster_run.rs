//! The distributed mode end to end, as separate OS processes: the real RabbitMQ, `strata
//! worker` processes, and `strata build --cluster` as the coordinator. The tables must equal
//! those of an embedded build, also when a worker is killed with SIGKILL in the middle.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn broker_url() -> String {
    std::env::var("STRATA_AMQP_URL")
        .unwrap_or_else(|_| String::from("amqp://guest:guest@127.0.0.1:5672/%2f"))
}

/// Worker processes, killed when the test ends however it ends.
struct Workers(Vec<Child>);

impl Workers {
    fn start(count: usize, prefix: &str, queue: &str) -> Workers {
        Workers(
            (0..count)
                .map(|index| {
                    Command::new(STRATA)
                        .args(["worker", "--slots", "2", "--memory-limit-mib", "1024"])
                        .args(["--worker-id", &format!("{prefix}-{index}")])
                        .args(["--amqp-url", &broker_url(), "--task-queue", queue])
                        .stdout(Stdio::null())
                        .stderr(Stdio::inherit())
                        .spawn()
                        .expect("strata worker starts")
                })
                .collect(),
        )
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(STRATA)
        .args(args)
        .output()
        .expect("strata runs")
}

fn medallion(dir: &Path, events: &str) -> PathBuf {
    let project = dir.join("medallion");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/medallion");
    copy_project(&source, &project);
    let data = project.join("data");
    let output = strata(&[
        "generate-sample-data",
        "--events",
        events,
        "--batches",
        "3",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    project
}

fn copy_project(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        if ["target", "data", "warehouse"]
            .iter()
            .any(|skip| name == *skip)
        {
            continue;
        }
        if entry.path().is_dir() {
            copy_project(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

fn build(project: &Path, warehouse: &Path, cluster: Option<&str>) -> serde_json::Value {
    let mut args = vec![
        "build",
        "--project-dir",
        project.to_str().unwrap(),
        "--warehouse",
        warehouse.to_str().unwrap(),
        "--threads",
        "4",
        "--output",
        "json",
    ];
    let url = broker_url();
    if let Some(queue) = cluster {
        args.extend(["--cluster", &url, "--task-queue", queue]);
    }
    let output = Command::new(STRATA)
        .args(&args)
        .output()
        .expect("strata build runs");
    let record: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&output.stderr)));
    assert!(output.status.success(), "{record:#}");
    record
}

/// Every row of a Delta table as text, sorted; `_ingested_at` (the moment of the run) is left out.
async fn rows(table_uri: &Path) -> Vec<String> {
    let url = url::Url::from_directory_path(table_uri).unwrap();
    let table = deltalake::DeltaTableBuilder::from_url(url)
        .unwrap()
        .load()
        .await
        .unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("t", table.table_provider().await.unwrap())
        .unwrap();
    let batches = ctx
        .sql("select * from t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut rows = Vec::new();
    for batch in &batches {
        let columns: Vec<(usize, ArrayFormatter)> = batch
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, field)| field.name() != "_ingested_at")
            .map(|(index, _)| {
                (
                    index,
                    ArrayFormatter::try_new(
                        batch.column(index).as_ref(),
                        &FormatOptions::default(),
                    )
                    .unwrap(),
                )
            })
            .collect();
        for row in 0..batch.num_rows() {
            let values: Vec<String> = columns
                .iter()
                .map(|(_, formatter)| formatter.value(row).to_string())
                .collect();
            rows.push(values.join("|"));
        }
    }
    rows.sort();
    rows
}

fn tables(warehouse: &Path) -> Vec<PathBuf> {
    let mut tables = Vec::new();
    for schema in std::fs::read_dir(warehouse).unwrap().flatten() {
        if schema.file_name().to_string_lossy().starts_with('_') {
            continue;
        }
        for table in std::fs::read_dir(schema.path()).unwrap().flatten() {
            tables.push(table.path());
        }
    }
    tables.sort();
    tables
}

async fn assert_same_tables(expected: &Path, actual: &Path) {
    let expected_tables = tables(expected);
    assert_eq!(expected_tables.len(), 8, "{expected_tables:?}");
    for table in expected_tables {
        let relative = table.strip_prefix(expected).unwrap();
        let (want, got) = (rows(&table).await, rows(&actual.join(relative)).await);
        assert_eq!(want.len(), got.len(), "{} row count", relative.display());
        assert!(want == got, "{} differs", relative.display());
    }
}

fn workers_used(record: &serde_json::Value) -> std::collections::BTreeSet<String> {
    record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|node| node["workers"].as_array().cloned().unwrap_or_default())
        .filter_map(|worker| worker.as_str().map(str::to_string))
        .collect()
}

fn unique_queue(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("strata-test.{name}.{}.{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_build_what_embedded_mode_builds() {
    let dir = tempfile::tempdir().unwrap();
    let project = medallion(dir.path(), "30000");
    let embedded = dir.path().join("embedded");
    let clustered = dir.path().join("clustered");
    build(&project, &embedded, None);
    let queue = unique_queue("tasks");
    let _workers = Workers::start(3, "w", &queue);
    let record = build(&project, &clustered, Some(&queue));
    assert_eq!(record["success"], true);
    let used = workers_used(&record);
    assert!(
        used.len() >= 2,
        "tasks should spread over workers: {used:?}"
    );
    assert!(
        used.iter().all(|worker| worker.starts_with("w-")),
        "{used:?}"
    );
    assert_same_tables(&embedded, &clustered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let project = medallion(dir.path(), "60000");
    let embedded = dir.path().join("embedded");
    let clustered = dir.path().join("clustered");
    build(&project, &embedded, None);
    let queue = unique_queue("tasks");
    let mut workers = Workers::start(2, "k", &queue);
    let victim = workers.0.remove(0);
    let killer = std::thread::spawn(move || {
        let mut victim = victim;
        std::thread::sleep(Duration::from_millis(700));
        let _ = victim.kill(); // SIGKILL: no draining, no goodbye
        let _ = victim.wait();
    });
    let record = build(&project, &clustered, Some(&queue));
    killer.join().unwrap();
    assert_eq!(record["success"], true);
    assert_same_tables(&embedded, &clustered).await;
}
