//! `strata coordinator`: the standing coordinator process. It serves
//! `strata.v1.PipelineService` over gRPC (with health and reflection), executes submitted runs
//! on the RabbitMQ workers, and keeps run state in `<data_dir>/runs.redb`, so a restarted
//! coordinator answers for old runs and resumes unfinished ones.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use strata_amqp::AmqpQueue;
use strata_coordinator::prepare::RunSpec;
use strata_coordinator::service::{Pipeline, ServiceConfig, TlsFiles, Tokens, serve};
use strata_coordinator::store::RedbStore;

use crate::project_commands::Output;
use crate::worker_command::{LOCAL_BROKER, read_config, shutdown_signal};

/// `strata coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// A YAML file with the settings below (listen, amqp_url, task_queue, data_dir,
    /// token_file, tls_cert, tls_key, warehouse, threads, shuffle_partitions,
    /// max_concurrent_runs, task_timeout_secs); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address the gRPC API listens on (default 127.0.0.1:7070).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// The RabbitMQ broker (also STRATA_AMQP_URL; default the local broker).
    #[arg(long, value_name = "URL")]
    amqp_url: Option<String>,
    /// The queue the workers take tasks from.
    #[arg(long, value_name = "NAME")]
    task_queue: Option<String>,
    /// Folder for the run store and uploaded projects (default ./strata-coordinator).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A file of bearer tokens, one per line; every RPC but health then needs one.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --tls-key, the API serves TLS only.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Default warehouse of submitted runs (a run's `warehouse` override wins).
    #[arg(long, value_name = "URL")]
    warehouse: Option<String>,
    /// Runs executing at once; later ones wait queued.
    #[arg(long, value_name = "N")]
    max_concurrent_runs: Option<usize>,
}

/// The config file's settings, each optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoordinatorFile {
    listen: Option<String>,
    amqp_url: Option<String>,
    task_queue: Option<String>,
    data_dir: Option<PathBuf>,
    /// Tokens inline (prefer token_file: config files get copied around).
    tokens: Option<Vec<String>>,
    token_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    warehouse: Option<String>,
    threads: Option<usize>,
    shuffle_partitions: Option<usize>,
    max_concurrent_runs: Option<usize>,
    task_timeout_secs: Option<u64>,
    retries: Option<u32>,
}

/// Reads a token file: one token per line; blank lines and `#` comments are skipped.
pub(crate) fn read_tokens(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect())
}

pub(crate) fn coordinator(
    args: &CoordinatorArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => read_config(
            path,
            "coordinator",
            "listen, amqp_url, task_queue, data_dir, tokens, token_file, tls_cert, tls_key, warehouse, threads, shuffle_partitions, max_concurrent_runs, task_timeout_secs, retries",
        )?,
        None => CoordinatorFile::default(),
    };
    let listen = args
        .listen
        .clone()
        .or(file.listen)
        .unwrap_or_else(|| String::from("127.0.0.1:7070"));
    let url = args
        .amqp_url
        .clone()
        .or(file.amqp_url)
        .or_else(|| env.get("STRATA_AMQP_URL").cloned())
        .unwrap_or_else(|| LOCAL_BROKER.to_string());
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("strata-coordinator"));
    let mut tokens = file.tokens.unwrap_or_default();
    if let Some(path) = args.token_file.as_ref().or(file.token_file.as_ref()) {
        tokens.extend(read_tokens(path)?);
    }
    let tls = match (
        args.tls_cert.clone().or(file.tls_cert),
        args.tls_key.clone().or(file.tls_key),
    ) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        _ => anyhow::bail!("TLS needs both tls_cert and tls_key"),
    };
    let defaults = RunSpec {
        warehouse: args.warehouse.clone().or(file.warehouse),
        threads: file.threads.unwrap_or(4).max(1),
        shuffle_partitions: file.shuffle_partitions.unwrap_or(4),
        task_timeout_secs: file.task_timeout_secs.unwrap_or(60),
        retries: file.retries.unwrap_or(2),
        ..RunSpec::new(PathBuf::new())
    };
    let config = ServiceConfig {
        data_dir: data_dir.clone(),
        task_queue: args
            .task_queue
            .clone()
            .or(file.task_queue)
            .unwrap_or_else(|| strata_core::queue::TASK_QUEUE.to_string()),
        max_concurrent_runs: args
            .max_concurrent_runs
            .or(file.max_concurrent_runs)
            .unwrap_or(8)
            .max(1),
        defaults,
        env: env.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let store = Arc::new(RedbStore::open(&data_dir.join("runs.redb"))?);
        let queue = Arc::new(
            AmqpQueue::connect(&url)
                .await
                .context("cannot reach the broker")?,
        );
        let pipeline = Pipeline::new(queue.clone(), store, config.clone());
        let resumed = pipeline.resume_unfinished()?;
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let address = listener.local_addr()?;
        writeln!(
            out.stdout,
            "coordinator: serving strata.v1.PipelineService on {address}{}, tasks to {}, state in {}{}",
            if tls.is_some() { " (TLS)" } else { "" },
            config.task_queue,
            data_dir.display(),
            if resumed.is_empty() {
                String::new()
            } else {
                format!(", resuming {}", resumed.join(", "))
            }
        )?;
        out.stdout.flush()?;
        serve(pipeline, Tokens::new(tokens), tls, listener, shutdown_signal())
            .await
            .map_err(|err| anyhow::anyhow!("the gRPC server failed: {err}"))?;
        queue.close().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
