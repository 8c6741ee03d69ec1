//! `strata bench dispatch`: the cost of the dispatch path alone. No-op tasks go from a
//! publisher through the job queue to `strata worker` processes and their results come back;
//! the same tasks through the in-memory queue of embedded mode are the reference, measured in
//! the same run.
//!
//! Two measurements per queue: a burst (every task published at once: tasks per second, and
//! publish-to-result latency with queueing) and a closed loop (one task at a time: the latency
//! of the path itself).

use std::collections::BTreeMap;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use futures::StreamExt;
use prost::Message as _;
use strata_amqp::AmqpQueue;
use strata_core::queue::{Consumer, JobQueue, MemoryQueue, Message};
use strata_proto::v1::{Task, TaskKind, TaskResult};

use crate::project_commands::Output;

/// `strata bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    what: BenchKind,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
enum BenchKind {
    /// No-op tasks through RabbitMQ and worker processes, against the in-memory queue.
    Dispatch(DispatchArgs),
    /// Concurrent SubmitRun calls to a coordinator: submit latency and runs per minute.
    Submit(crate::submit_bench::SubmitBenchArgs),
}

/// `strata bench dispatch`.
#[derive(Debug, Args)]
struct DispatchArgs {
    /// The RabbitMQ broker (also STRATA_AMQP_URL; default the local broker, guest/guest).
    #[arg(long, value_name = "URL")]
    amqp_url: Option<String>,
    /// Tasks in the burst.
    #[arg(long, default_value_t = 2000)]
    tasks: usize,
    /// Tasks in the closed loop, one at a time.
    #[arg(long, default_value_t = 300)]
    sequential: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Slots of each worker.
    #[arg(long, default_value_t = 8)]
    slots: usize,
}

/// Latencies of one measurement, in publish order.
struct Measurement {
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measurement {
    fn percentile(&self, fraction: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn line(&self, label: &str) -> String {
        format!(
            "{label:<34} {:>9.0} tasks/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
            self.per_second(),
            self.percentile(0.50).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
        )
    }
}

fn noop(run_id: &str, index: usize, reply_to: &str) -> Message {
    let task = Task {
        run_id: run_id.to_string(),
        task_id: format!("noop-{index:06}"),
        kind: TaskKind::Noop as i32,
        reply_to: reply_to.to_string(),
        ..Task::default()
    };
    Message::new(task.encode_to_vec())
}

/// Publishes `count` no-op tasks at once (or one at a time when `one_at_a_time`) and waits for
/// every result.
async fn measure<Q: JobQueue>(
    queue: &Arc<Q>,
    task_queue: &str,
    run_id: &str,
    count: usize,
    one_at_a_time: bool,
) -> anyhow::Result<Measurement> {
    let reply_to = format!("{task_queue}.results.{run_id}");
    let mut results = queue.consume(&reply_to, 256).await?;
    let mut published: Vec<Option<Instant>> = vec![None; count];
    let mut latencies = vec![Duration::ZERO; count];
    let started = Instant::now();
    let mut received = 0;
    let mut next_to_publish = 0;
    if !one_at_a_time {
        // The burst: every publish in flight at once (confirms pipelined), as a coordinator
        // handing out a wide layer would.
        let now = Instant::now();
        published.iter_mut().for_each(|sent| *sent = Some(now));
        let publishes =
            (0..count).map(|index| queue.publish(task_queue, noop(run_id, index, &reply_to)));
        futures::stream::iter(publishes)
            .buffer_unordered(256)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()?;
        next_to_publish = count;
    }
    while received < count {
        // The closed loop: the next task once the previous result is back.
        if next_to_publish == received && next_to_publish < count {
            published[next_to_publish] = Some(Instant::now());
            queue
                .publish(task_queue, noop(run_id, next_to_publish, &reply_to))
                .await?;
            next_to_publish += 1;
        }
        let delivery = tokio::time::timeout(Duration::from_secs(60), results.next())
            .await
            .context("no result within a minute: are the workers running?")??
            .context("the result queue closed")?;
        let result = TaskResult::decode(delivery.message.body.as_slice())?;
        delivery.ack().await?;
        let index: usize = result
            .task_id
            .strip_prefix("noop-")
            .and_then(|index| index.parse().ok())
            .context("a result of another benchmark")?;
        if let Some(sent) = published.get(index).copied().flatten() {
            latencies[index] = sent.elapsed();
            received += 1;
        }
    }
    let elapsed = started.elapsed();
    drop(results);
    queue.delete(&reply_to).await?;
    Ok(Measurement { elapsed, latencies })
}

/// Worker processes of this binary, stopped when dropped.
struct WorkerProcesses(Vec<Child>);

impl Drop for WorkerProcesses {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn bench(
    args: &BenchArgs,
    env: &BTreeMap<String, String>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let args = match &args.what {
        BenchKind::Dispatch(args) => args,
        BenchKind::Submit(args) => return crate::submit_bench::bench(args, env, out),
    };
    let url = args
        .amqp_url
        .clone()
        .or_else(|| env.get("STRATA_AMQP_URL").cloned())
        .unwrap_or_else(|| strata_core::settings::LOCAL_BROKER.to_string());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let task_queue = format!("strata.bench.{stamp}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    writeln!(
        out.stdout,
        "dispatch: {} no-op tasks in a burst and {} one at a time; {} worker processes x {} slots",
        args.tasks, args.sequential, args.workers, args.slots
    )?;

    // Reference: the in-memory queue with an in-process worker (embedded mode's path).
    let (memory_burst, memory_loop) = runtime.block_on(async {
        let queue = Arc::new(MemoryQueue::new());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut config = strata_worker::process::embedded_config(
            &strata_core::settings::Settings::default(),
            "bench-memory",
            args.slots * args.workers,
        );
        config.tasks.task_queue = task_queue.clone();
        let worker = tokio::spawn(strata_worker::serve(queue.clone(), config, stopped));
        let burst = measure(&queue, &task_queue, "memory-burst", args.tasks, false).await?;
        let closed_loop =
            measure(&queue, &task_queue, "memory-loop", args.sequential, true).await?;
        let _ = stop.send(true);
        queue.close();
        let _ = worker.await;
        anyhow::Ok((burst, closed_loop))
    })?;

    let executable = std::env::current_exe().context("cannot find the strata executable")?;
    // The workers need a cluster secret (their Flight servers refuse calls without one); a
    // secret of this benchmark's own unless the environment names one.
    let secret = env
        .get("STRATA__CLUSTER__SECRET")
        .cloned()
        .unwrap_or_else(|| format!("strata-bench-dispatch-{}-secret", std::process::id()));
    let _workers = WorkerProcesses(
        (0..args.workers)
            .map(|index| {
                Command::new(&executable)
                    .args(["worker", "--amqp-url", &url, "--task-queue", &task_queue])
                    .args(["--slots", &args.slots.to_string()])
                    .args(["--worker-id", &format!("bench-{index}")])
                    .env("STRATA__CLUSTER__SECRET", &secret)
                    .stdout(Stdio::null())
                    .spawn()
                    .context("cannot start a worker process")
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    );
    let (amqp_burst, amqp_loop) = runtime.block_on(async {
        let queue = Arc::new(
            AmqpQueue::connect(&url)
                .await
                .context("cannot reach the broker")?,
        );
        // Warm-up: the workers connect and the queues exist before the clock starts.
        measure(&queue, &task_queue, "amqp-warmup", 20, false).await?;
        let burst = measure(&queue, &task_queue, "amqp-burst", args.tasks, false).await?;
        let closed_loop = measure(&queue, &task_queue, "amqp-loop", args.sequential, true).await?;
        queue.delete(&task_queue).await?;
        queue.close().await;
        anyhow::Ok((burst, closed_loop))
    })?;

    writeln!(
        out.stdout,
        "{}",
        memory_burst.line("in-memory queue, burst")
    )?;
    writeln!(
        out.stdout,
        "{}",
        amqp_burst.line("RabbitMQ + worker processes, burst")
    )?;
    writeln!(
        out.stdout,
        "{}",
        memory_loop.line("in-memory queue, one at a time")
    )?;
    writeln!(
        out.stdout,
        "{}",
        amqp_loop.line("RabbitMQ + workers, one at a time")
    )?;
    writeln!(
        out.stdout,
        "ratios RabbitMQ / in-memory: burst throughput {:.2}x, one-at-a-time p50 {:.1}x",
        amqp_burst.per_second() / memory_burst.per_second().max(1e-9),
        amqp_loop.percentile(0.5).as_secs_f64()
            / memory_loop.percentile(0.5).as_secs_f64().max(1e-9),
    )?;
    Ok(ExitCode::SUCCESS)
}
