//! Helpers of the distributed-mode tests: `strata` processes (workers, coordinators), the
//! medallion project on generated data, and table comparison through delta-rs.
#![allow(dead_code)] // each test binary uses its own share of these

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod otlp;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;

pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// The secret the test clusters' workers and coordinators share for Flight calls.
pub const CLUSTER_SECRET: &str = "strata-test-cluster-secret-0123456789";

pub fn broker_url() -> String {
    std::env::var("STRATA_AMQP_URL")
        .unwrap_or_else(|_| String::from("amqp://guest:guest@127.0.0.1:5672/%2f"))
}

/// Worker processes, killed when the test ends however it ends (their task queue is deleted).
pub struct Workers(pub Vec<Child>, String);

impl Workers {
    pub fn start(count: usize, prefix: &str, queue: &str) -> Workers {
        Workers::start_with_args(count, prefix, queue, &[])
    }

    /// [`Workers::start`] with more `strata worker` arguments.
    pub fn start_with_args(count: usize, prefix: &str, queue: &str, extra: &[&str]) -> Workers {
        Workers::start_with_env(count, prefix, queue, extra, &[])
    }

    /// [`Workers::start_with_args`] with more environment variables.
    pub fn start_with_env(
        count: usize,
        prefix: &str,
        queue: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Workers {
        let children = (0..count)
            .map(|index| {
                Command::new(STRATA)
                    .env("STRATA__CLUSTER__SECRET", CLUSTER_SECRET)
                    .envs(envs.iter().copied())
                    .args(["worker", "--slots", "2", "--memory-limit-mib", "1024"])
                    .args(["--worker-id", &format!("{prefix}-{index}")])
                    .args(["--amqp-url", &broker_url(), "--task-queue", queue])
                    .args([
                        "--flight-listen",
                        "127.0.0.1:0",
                        "--flight-advertise",
                        "127.0.0.1",
                    ])
                    .args(extra)
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("strata worker starts")
            })
            .collect();
        Workers(children, queue.to_string())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Leave the broker as it was: the test's task queue goes too.
        let queue = self.1.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let amqp = strata_amqp::AmqpQueue::connect(&broker_url()).await.ok()?;
                let _ = strata_core::queue::JobQueue::delete(&amqp, &queue).await;
                amqp.close().await;
                Some(())
            })
        })
        .join();
    }
}

pub fn strata(args: &[&str]) -> std::process::Output {
    Command::new(STRATA)
        .env("STRATA__CLUSTER__SECRET", CLUSTER_SECRET)
        .args(args)
        .output()
        .expect("strata runs")
}

pub fn medallion(dir: &Path, events: &str) -> PathBuf {
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

pub fn copy_project(from: &Path, to: &Path) {
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

/// Starts `strata build` with the run record as JSON on standard output.
pub fn start_build(project: &Path, warehouse: &Path, cluster: Option<&str>) -> Child {
    start_build_with_args(project, warehouse, cluster, &[])
}

/// [`start_build`] with more `strata build` arguments.
pub fn start_build_with_args(
    project: &Path,
    warehouse: &Path,
    cluster: Option<&str>,
    extra: &[&str],
) -> Child {
    start_build_with_env(project, warehouse, cluster, extra, &[])
}

/// [`start_build_with_args`] with more environment variables.
pub fn start_build_with_env(
    project: &Path,
    warehouse: &Path,
    cluster: Option<&str>,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> Child {
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
    args.extend(extra);
    Command::new(STRATA)
        .env("STRATA__CLUSTER__SECRET", CLUSTER_SECRET)
        .envs(envs.iter().copied())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strata build starts")
}

/// Waits for a build started with [`start_build`]; it must succeed. Returns its run record.
pub fn finish_build(build: Child) -> serde_json::Value {
    let output = build.wait_with_output().expect("strata build runs");
    let record: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&output.stderr)));
    assert!(output.status.success(), "{record:#}");
    record
}

/// Every row of a Delta table as text, sorted; `_ingested_at` (the moment of the run) is left
/// out and doubles are rounded to 6 decimals.
pub async fn rows(table_uri: &Path) -> Vec<String> {
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
                .map(|(index, formatter)| {
                    let text = formatter.value(row).to_string();
                    // Sums of doubles in another order differ in the last bits.
                    match batch.column(*index).data_type() {
                        DataType::Float64 | DataType::Float32 => text
                            .parse::<f64>()
                            .map_or(text, |value| format!("{value:.6}")),
                        _ => text,
                    }
                })
                .collect();
            rows.push(values.join("|"));
        }
    }
    rows.sort();
    rows
}

pub fn tables(warehouse: &Path) -> Vec<PathBuf> {
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

pub async fn assert_same_tables(expected: &Path, actual: &Path) {
    let expected_tables = tables(expected);
    assert_eq!(expected_tables.len(), 8, "{expected_tables:?}");
    for table in expected_tables {
        let relative = table.strip_prefix(expected).unwrap();
        let (want, got) = (rows(&table).await, rows(&actual.join(relative)).await);
        assert_eq!(want.len(), got.len(), "{} row count", relative.display());
        assert!(want == got, "{} differs", relative.display());
    }
}

pub fn workers_used(record: &serde_json::Value) -> std::collections::BTreeSet<String> {
    record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|node| node["workers"].as_array().cloned().unwrap_or_default())
        .filter_map(|worker| worker.as_str().map(str::to_string))
        .collect()
}

pub fn unique_queue(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("strata-test.{name}.{}.{nanos}", std::process::id())
}

/// Runs `strata build` to the end; it must succeed. Returns its run record.
pub fn build(project: &Path, warehouse: &Path, cluster: Option<&str>) -> serde_json::Value {
    finish_build(start_build(project, warehouse, cluster))
}

/// Waits until `path` exists (a table committed: the run is under way), at most a minute.
pub fn wait_for(path: &Path) {
    let started = Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The setting of most cluster tests: the medallion project on `events` generated events,
/// already built in embedded mode (the tables a cluster must reproduce), a folder for the
/// cluster's warehouse and a task queue of the test's own.
pub struct Scenario {
    /// Holds every folder below; deleted when the test ends.
    pub dir: tempfile::TempDir,
    /// The project.
    pub project: PathBuf,
    /// The embedded build's warehouse.
    pub embedded: PathBuf,
    /// The warehouse for the cluster's build.
    pub clustered: PathBuf,
    /// The task queue for this test's workers.
    pub queue: String,
}

impl Scenario {
    /// Generates the data and runs the embedded build.
    pub fn new(events: &str) -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        let project = medallion(dir.path(), events);
        let embedded = dir.path().join("embedded");
        let clustered = dir.path().join("clustered");
        build(&project, &embedded, None);
        Scenario {
            dir,
            project,
            embedded,
            clustered,
            queue: unique_queue("tasks"),
        }
    }

    /// Waits until the cluster's build has committed its first model.
    pub fn wait_for_first_commit(&self) {
        wait_for(&self.clustered.join("bronze/bronze_users/_delta_log"));
    }
}

/// Sends a signal (`-TERM`, `-STOP`) to a process with kill(1).
pub fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal}: {status}");
}
