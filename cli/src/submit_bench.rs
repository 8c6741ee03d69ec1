//! `strata bench submit`: many concurrent `SubmitRun` calls to a running coordinator. Reports
//! the submit latency (p50/p99, from the call to its answer), the time until every run ended
//! and runs per minute; every run must succeed. The reference, measured in the same
//! invocation, is the same project built the same number of times one after another by
//! `strata build` in embedded mode (one process per run, as a scheduler without a coordinator
//! would do it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use strata_proto::v1 as pb;

use crate::client_commands::{ConnectArgs, connect, failed};
use crate::project_commands::Output;

/// `strata bench submit`.
#[derive(Debug, Args)]
pub struct SubmitBenchArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The project every run builds (a folder the coordinator can read).
    #[arg(long, value_name = "DIR")]
    project_dir: PathBuf,
    /// Runs submitted at once.
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Each run writes to its own warehouse under this folder.
    #[arg(long, value_name = "DIR")]
    warehouse_root: PathBuf,
    /// Embedded builds of the reference (0: skip the reference).
    #[arg(long, default_value_t = 10)]
    reference_runs: usize,
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

pub(crate) fn bench(
    args: &SubmitBenchArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let project = args
        .project_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.project_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let (latencies, wall, failures) = runtime.block_on(async {
        let client = connect(&args.connect, env).await?;
        let started = Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for index in 0..args.runs {
            let mut client = client.clone();
            let request = pb::SubmitRunRequest {
                project: Some(pb::submit_run_request::Project::ProjectDir(
                    project.display().to_string(),
                )),
                command: String::from("build"),
                config_overrides: [(
                    String::from("warehouse"),
                    args.warehouse_root
                        .join(format!("run-{index:04}"))
                        .display()
                        .to_string(),
                )]
                .into(),
                ..pb::SubmitRunRequest::default()
            };
            calls.spawn(async move {
                let call = Instant::now();
                let submitted = client.submit_run(request).await.map_err(failed)?;
                anyhow::Ok((call.elapsed(), submitted.into_inner().run_id))
            });
        }
        let mut latencies = Vec::new();
        let mut run_ids = Vec::new();
        while let Some(joined) = calls.join_next().await {
            let (latency, run_id) = joined??;
            latencies.push(latency);
            run_ids.push(run_id);
        }
        // Every run to its end.
        let mut client = client;
        let mut failures = Vec::new();
        for run_id in &run_ids {
            loop {
                let run = client
                    .get_run(pb::GetRunRequest {
                        run_id: run_id.clone(),
                    })
                    .await
                    .map_err(failed)?
                    .into_inner();
                let status = pb::RunStatus::try_from(run.status).unwrap_or_default();
                if matches!(status, pb::RunStatus::Queued | pb::RunStatus::Running) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                if status != pb::RunStatus::Succeeded {
                    failures.push(format!("{run_id}: {status:?} {}", run.error));
                }
                break;
            }
        }
        latencies.sort();
        anyhow::Ok((latencies, started.elapsed(), failures))
    })?;
    let per_minute = latencies.len() as f64 / wall.as_secs_f64().max(1e-9) * 60.0;
    writeln!(
        out.stdout,
        "submit: {} concurrent SubmitRun of {}: p50 {:.1} ms, p99 {:.1} ms; all ended in {:.1} s = {:.1} runs/min; {} failed",
        latencies.len(),
        project.display(),
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        wall.as_secs_f64(),
        per_minute,
        failures.len()
    )?;
    for failure in &failures {
        writeln!(out.stdout, "  failed: {failure}")?;
    }
    if args.reference_runs > 0 {
        let exe = std::env::current_exe().context("cannot find the strata binary")?;
        let started = Instant::now();
        for index in 0..args.reference_runs {
            let warehouse = args.warehouse_root.join(format!("embedded-{index:04}"));
            let status = std::process::Command::new(&exe)
                .args(["build", "--project-dir"])
                .arg(&project)
                .arg("--warehouse")
                .arg(&warehouse)
                .stdout(std::process::Stdio::null())
                .status()
                .context("cannot run strata build")?;
            anyhow::ensure!(status.success(), "the reference build failed");
        }
        let reference = args.reference_runs as f64 / started.elapsed().as_secs_f64() * 60.0;
        writeln!(
            out.stdout,
            "reference: {} embedded `strata build` one after another: {reference:.1} runs/min; coordinator / reference = {:.2}x",
            args.reference_runs,
            per_minute / reference
        )?;
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
