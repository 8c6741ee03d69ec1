//! `strata worker`: a process of the distributed mode that takes tasks from RabbitMQ, runs them
//! on DataFusion, writes their files to the warehouse and reports results to the coordinator.
//! SIGTERM (or Ctrl-C) drains it: running tasks finish, no new ones start, then it exits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use strata_amqp::AmqpQueue;
use strata_worker::{ExecutionConfig, ShuffleService, WorkerConfig};

use crate::project_commands::Output;

/// The broker when neither the flags, the config file nor STRATA_AMQP_URL name one.
pub(crate) const LOCAL_BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// `strata worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// A YAML file with the settings below (amqp_url, task_queue, slots, memory_limit_mib,
    /// worker_id, spill_dir); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The RabbitMQ broker (also STRATA_AMQP_URL; default the local broker, guest/guest).
    #[arg(long, value_name = "URL")]
    amqp_url: Option<String>,
    /// The queue to take tasks from.
    #[arg(long, value_name = "NAME")]
    task_queue: Option<String>,
    /// Tasks run at the same time (default: the number of CPUs).
    #[arg(long)]
    slots: Option<usize>,
    /// Memory limit of each task's DataFusion memory pool, in MiB (default 4096); a query
    /// that needs more spills to disk or fails with a clear error.
    #[arg(long, value_name = "MIB")]
    memory_limit_mib: Option<usize>,
    /// Folder for spill files (default: the system's temporary folder).
    #[arg(long, value_name = "DIR")]
    spill_dir: Option<PathBuf>,
    /// Name in run records and logs (default: host name and process id).
    #[arg(long, value_name = "NAME")]
    worker_id: Option<String>,
    /// Where the Flight server serving shuffle outputs listens (default 0.0.0.0:0, any port).
    #[arg(long, value_name = "HOST:PORT")]
    flight_listen: Option<String>,
    /// The address other workers reach the Flight server at: a host, or host:port (default:
    /// the host name and the port listened on).
    #[arg(long, value_name = "HOST[:PORT]")]
    flight_advertise: Option<String>,
    /// Folder for shuffle outputs (default: the system's temporary folder).
    #[arg(long, value_name = "DIR")]
    shuffle_dir: Option<PathBuf>,
    /// How often a running task sends a heartbeat to its coordinator, in milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    heartbeat_interval_ms: u64,
    /// How long a shuffle fetch may wait for another worker to answer, in seconds (a stopped
    /// worker holds its connections open).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    fetch_timeout_secs: u64,
}

/// The config file's settings, each optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerFile {
    flight_listen: Option<String>,
    flight_advertise: Option<String>,
    shuffle_dir: Option<PathBuf>,
    amqp_url: Option<String>,
    task_queue: Option<String>,
    slots: Option<usize>,
    memory_limit_mib: Option<usize>,
    spill_dir: Option<PathBuf>,
    worker_id: Option<String>,
}

/// Reads a process's YAML config file; `keys` lists the accepted keys for the error message.
pub(crate) fn read_config<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    process: &str,
    keys: &str,
) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {process} config {}", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| {
        format!(
            "invalid {process} config {}: expected keys {keys}",
            path.display()
        )
    })
}

fn host_name(env: &BTreeMap<String, String>) -> String {
    env.get("HOSTNAME")
        .cloned()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|host| host.trim().to_string())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| String::from("localhost"))
}

fn default_worker_id(env: &BTreeMap<String, String>) -> String {
    format!("{}-{}", host_name(env), std::process::id())
}

pub(crate) fn worker(
    args: &WorkerArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => read_config(
            path,
            "worker",
            "amqp_url, task_queue, slots, memory_limit_mib, spill_dir, worker_id, flight_listen, flight_advertise, shuffle_dir",
        )?,
        None => WorkerFile::default(),
    };
    let url = args
        .amqp_url
        .clone()
        .or(file.amqp_url)
        .or_else(|| env.get("STRATA_AMQP_URL").cloned())
        .unwrap_or_else(|| LOCAL_BROKER.to_string());
    let slots = args
        .slots
        .or(file.slots)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
        .max(1);
    let memory_limit_mib = args
        .memory_limit_mib
        .or(file.memory_limit_mib)
        .unwrap_or(4096)
        .max(64);
    let worker_id = args
        .worker_id
        .clone()
        .or(file.worker_id)
        .unwrap_or_else(|| default_worker_id(env));
    let listen = args
        .flight_listen
        .clone()
        .or(file.flight_listen)
        .unwrap_or_else(|| String::from("0.0.0.0:0"));
    let advertise = args.flight_advertise.clone().or(file.flight_advertise);
    let shuffle_dir = args
        .shuffle_dir
        .clone()
        .or(file.shuffle_dir)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("strata-shuffle-{}", std::process::id()));
    let mut config = WorkerConfig {
        worker_id,
        slots,
        task_queue: args
            .task_queue
            .clone()
            .or(file.task_queue)
            .unwrap_or_else(|| strata_core::queue::TASK_QUEUE.to_string()),
        heartbeat_interval: std::time::Duration::from_millis(args.heartbeat_interval_ms),
        execution: ExecutionConfig {
            fetch_timeout: std::time::Duration::from_secs(args.fetch_timeout_secs.max(1)),
            memory_limit_bytes: memory_limit_mib << 20,
            spill_dir: args.spill_dir.clone().or(file.spill_dir),
            ..ExecutionConfig::default()
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let queue = Arc::new(
            AmqpQueue::connect(&url)
                .await
                .context("cannot reach the broker")?,
        );
        // The Flight server other workers fetch this worker's shuffle outputs from.
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("cannot listen for Flight on {listen}"))?;
        let port = listener.local_addr()?.port();
        let address = match advertise {
            Some(advertise) if advertise.contains(':') => advertise,
            Some(host) => format!("{host}:{port}"),
            None => format!("{}:{port}", host_name(env)),
        };
        let store = Arc::new(strata_worker::shuffle::ShuffleStore::new(&shuffle_dir));
        config.execution.shuffle = Some(ShuffleService {
            store: store.clone(),
            address: address.clone(),
        });
        let (flight_stop, flight_stopped) = tokio::sync::oneshot::channel::<()>();
        let flight = tokio::spawn(
            strata_worker::shuffle::ShuffleFlightService::new(store.clone()).serve(
                listener,
                async move {
                    let _ = flight_stopped.await;
                },
            ),
        );
        writeln!(
            out.stdout,
            "worker {}: {} slots, {} MiB per task, taking tasks from {}, shuffle outputs served at {address}",
            config.worker_id, config.slots, memory_limit_mib, config.task_queue
        )?;
        out.stdout.flush()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        strata_worker::serve(queue.clone(), config.clone(), stopped).await?;
        writeln!(out.stdout, "worker {}: drained, exiting", config.worker_id)?;
        queue.close().await;
        let _ = flight_stop.send(());
        let _ = flight.await;
        let _ = std::fs::remove_dir_all(&shuffle_dir);
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut terminate) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
