//! The `strata` binary as a user runs it: exit codes, files written, output formats.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn strata(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run strata")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        if name == "target" || name == "data" || name == "warehouse" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

fn medallion_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("medallion");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/medallion"),
        &project,
    );
    (dir, project)
}

#[test]
fn compile_writes_sql_and_manifest_from_the_current_folder() {
    let (_dir, project) = medallion_copy();
    let output = strata(&project, &["compile"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("compiled 8 models, 1 seed, 15 tests, 2 sources"),
        "{}",
        text(&output.stdout)
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(project.join("target/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["metadata"]["project_name"], "medallion");
    let sql = std::fs::read_to_string(
        project.join("target/compiled/medallion/models/silver/silver_events.sql"),
    )
    .unwrap();
    assert!(sql.contains("from bronze.bronze_events"), "{sql}");
    assert!(
        sql.contains("lower(trim(event_type)) as event_type"),
        "{sql}"
    );
}

#[test]
fn compile_with_selection_and_vars() {
    let (_dir, project) = medallion_copy();
    let project_arg = project.to_str().unwrap();
    let output = strata(
        Path::new("/"),
        &[
            "compile",
            "--project-dir",
            project_arg,
            "--select",
            "bronze_events",
            "--vars",
            "{batch_id: b42}",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let sql = std::fs::read_to_string(
        project.join("target/compiled/medallion/models/bronze/bronze_events.sql"),
    )
    .unwrap();
    assert!(sql.contains("'b42' as _batch_id"), "{sql}");
    assert!(
        !project
            .join("target/compiled/medallion/models/gold")
            .exists()
    );
}

#[test]
fn a_broken_project_fails_with_located_errors_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    std::fs::write(dir.path().join("dbt_project.yml"), "name: p\n").unwrap();
    std::fs::write(
        dir.path().join("models/a.sql"),
        "select *\nfrom {{ ref('bb') }}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("models/b.sql"), "select 1\n{% if x %}\n").unwrap();
    let output = strata(dir.path(), &["compile"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("unknown model or seed 'bb' (did you mean 'b'?)"),
        "{stderr}"
    );
    assert!(stderr.contains("models/a.sql:2:"), "{stderr}");
    assert!(stderr.contains("jinja syntax error"), "{stderr}");
    assert!(
        stderr.contains("2 errors found; nothing was written"),
        "{stderr}"
    );
    assert!(!dir.path().join("target").exists());
}

#[test]
fn missing_project_and_bad_vars_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let output = strata(dir.path(), &["ls"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("no dbt_project.yml or strata_project.yml"),
        "{}",
        text(&output.stderr)
    );
    let (_dir, project) = medallion_copy();
    let output = strata(&project, &["compile", "--vars", "[1, 2]"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("--vars must be a mapping"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn ls_prints_json_lines() {
    let (_dir, project) = medallion_copy();
    let output = strata(
        &project,
        &[
            "ls",
            "--select",
            "layer:gold",
            "--resource-type",
            "model",
            "--output",
            "json",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let names: Vec<String> = stdout
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "daily_user_activity",
            "user_running_revenue",
            "revenue_by_plan"
        ]
    );
}

#[test]
fn dag_prints_mermaid_and_dot() {
    let (_dir, project) = medallion_copy();
    let output = strata(
        &project,
        &["dag", "--format", "dot", "--select", "+daily_user_activity"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let dot = text(&output.stdout);
    assert!(dot.starts_with("digraph strata {"), "{dot}");
    assert_eq!(dot.matches(" -> ").count(), 3, "{dot}");
    let output = strata(&project, &["dag"]);
    let mermaid = text(&output.stdout);
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");
    assert!(mermaid.contains("[(\"raw.events\")]"), "{mermaid}");
}

#[test]
fn generate_sample_data_writes_the_raw_files() {
    let dir = tempfile::tempdir().unwrap();
    let output = strata(
        dir.path(),
        &[
            "generate-sample-data",
            "--events",
            "5000",
            "--out",
            "data",
            "--batches",
            "3",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("wrote 5000 events"),
        "{}",
        text(&output.stdout)
    );
    for file in [
        "data/events/batch_0001.parquet",
        "data/events/batch_0003.parquet",
        "data/users.csv",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }
}

#[test]
fn build_then_show_and_debug() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("models")).unwrap();
    std::fs::create_dir_all(root.join("seeds")).unwrap();
    std::fs::write(root.join("dbt_project.yml"), "name: tiny\n").unwrap();
    std::fs::write(root.join("seeds/colors.csv"), "id,color\n1,red\n2,blue\n").unwrap();
    std::fs::write(
        root.join("models/upper_colors.sql"),
        "{{ config(materialized='table') }}\nselect id, upper(color) as color from {{ ref('colors') }}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/sources.yml"),
        "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: missing\n        meta: {external_location: data/missing.parquet}\n",
    )
    .unwrap();
    let output = strata(root, &["build"]);
    assert!(
        output.status.success(),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert!(
        text(&output.stdout).contains("Done. PASS=2 WARN=0 ERROR=0 SKIP=0 TOTAL=2"),
        "{}",
        text(&output.stdout)
    );

    let output = strata(root, &["show", "upper_colors", "--limit", "5"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let table = text(&output.stdout);
    assert!(
        table.contains("| id | color |")
            && table.contains("| RED   |")
            && table.contains("| BLUE  |"),
        "{table}"
    );

    let output = strata(root, &["show", "upper_colour"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("did you mean 'upper_colors'?"),
        "{}",
        text(&output.stderr)
    );

    let output = strata(root, &["debug"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a source without files fails debug"
    );
    let report = text(&output.stdout);
    assert!(
        report.contains("warehouse: file://") && report.contains("OK (writable)"),
        "{report}"
    );
    assert!(
        report.contains("source raw.missing:") && report.contains("ERROR: no files"),
        "{report}"
    );
}

#[test]
fn config_show_names_the_source_of_every_setting_and_rejects_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strata.yaml");
    std::fs::write(
        &file,
        "worker:\n  slots: 2\n  heartbeat_interval_ms: 750\nengine:\n  memory_limit_mib: 512\nbroker:\n  url: amqp://strata:file-password@rabbit:5672/%2f\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["config", "show", "--role", "worker", "--json", "--config"])
        .arg(&file)
        .args(["--heartbeat-interval-ms", "900"])
        .env("STRATA__WORKER__SLOTS", "6")
        .env("STRATA__CLUSTER__SECRET", "config-show-secret-0123456789")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let rows: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let row = |key: &str| {
        rows.iter()
            .find(|row| row["key"] == key)
            .unwrap_or_else(|| panic!("{key} missing: {rows:?}"))
            .clone()
    };
    let file_source = format!("file {}", file.display());
    assert_eq!(row("worker.slots")["value"], "6");
    assert_eq!(row("worker.slots")["source"], "env STRATA__WORKER__SLOTS");
    assert_eq!(row("worker.heartbeat_interval_ms")["value"], "900");
    assert_eq!(
        row("worker.heartbeat_interval_ms")["source"],
        "flag --heartbeat-interval-ms"
    );
    assert_eq!(
        row("engine.memory_limit_mib")["source"],
        file_source.as_str()
    );
    assert_eq!(row("worker.fetch_timeout_secs")["source"], "default");
    assert_eq!(row("cluster.secret")["value"], "<redacted>");
    let shown = text(&output.stdout);
    assert!(!shown.contains("config-show-secret") && !shown.contains("file-password"));

    // The table form, for people.
    let table = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["config", "show", "--role", "coordinator"])
        .output()
        .unwrap();
    assert!(table.status.success());
    assert!(
        text(&table.stdout).contains("coordinator.listen")
            && text(&table.stdout).contains("default")
    );

    // The ingest agent's own sections, and nothing of the worker's.
    let agent = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["config", "show", "--role", "ingest-agent", "--json"])
        .env("STRATA__INGEST_AGENT__SLOTS", "3")
        .output()
        .unwrap();
    assert!(agent.status.success(), "{}", text(&agent.stderr));
    let agent = text(&agent.stdout);
    assert!(
        agent.contains(
            r#""key":"ingest_agent.slots","value":"3","source":"env STRATA__INGEST_AGENT__SLOTS""#
        ) && agent
            .contains(r#""key":"broker.ingest_queue","value":"strata.ingest","source":"default""#)
            && !agent.contains("worker."),
        "{agent}"
    );

    std::fs::write(&file, "worker:\n  slotz: 2\n").unwrap();
    let unknown = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["config", "show", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    let stderr = text(&unknown.stderr);
    assert!(
        stderr.contains("unknown setting 'worker.slotz'")
            && stderr.contains("did you mean 'slots'"),
        "{stderr}"
    );
}

/// Memory no pool accounts for (800 MB of strings built by a projection, batch after batch,
/// under a window over all rows) stops the task with an error naming the settings once the
/// process's allocation passes the pool plus the margin; the process exits normally.
/// (The sampling races the sort's own request to the pool; either refusal is clear.)
#[test]
fn memory_outside_the_pool_stops_the_task_clearly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    std::fs::write(
        dir.path().join("dbt_project.yml"),
        "name: outside_the_pool\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("models/wide_window.sql"),
        "select i, count(*) over (order by length(s) rows between unbounded preceding and \
         unbounded following) as n \
         from (select i, repeat('x', 20000) || cast(i as varchar) as s \
               from generate_series(1, 40000) as t(i))\n",
    )
    .unwrap();
    let output = strata(
        dir.path(),
        &["run", "--memory-limit-mib", "64", "--threads", "1"],
    );
    let stdout = text(&output.stdout) + &text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    // The guard's error, or — when the window's sort asks its pool for the rows before the
    // guard's next sample sees them — the pool's refusal: both clear, neither a killed process.
    let stopped_by_the_guard = stdout.contains("engine.memory_margin_percent")
        && stdout.contains("engine.memory_limit_mib");
    let refused_by_the_pool = stdout.contains("needs more memory than the task's pool allows");
    assert!(stopped_by_the_guard || refused_by_the_pool, "{stdout}");
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("target/run_results.json")).unwrap(),
    )
    .unwrap();
    let node = &record["nodes"][0];
    assert_eq!(node["status"], "error", "{node}");
    if stopped_by_the_guard {
        assert!(
            node["peak_allocated_bytes"].as_i64().unwrap() > 320 << 20,
            "{node}"
        );
    }
}
