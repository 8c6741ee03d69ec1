//! The worker's Prometheus metrics: slots, tasks by kind and outcome, their durations, and
//! what they wrote.

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use strata_proto::v1::{FailureClass, Task, TaskKind, TaskResult};

/// Buckets of task durations, in seconds: 10 ms to 30 min.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
];

/// Buckets of a task's peak memory, in bytes: 1 MiB to 16 GiB.
const MEMORY_BUCKETS: [f64; 8] = [
    1_048_576.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
    2_147_483_648.0,
    4_294_967_296.0,
    17_179_869_184.0,
];

/// The metrics of one worker process.
#[derive(Clone, Debug)]
pub struct WorkerMetrics {
    /// Where they are registered (served at `/metrics`).
    pub registry: Registry,
    slots: IntGauge,
    busy: IntGauge,
    tasks: IntCounterVec,
    durations: HistogramVec,
    rows: IntCounter,
    quarantined: IntCounter,
    bytes: IntCounter,
    memory: Histogram,
}

/// Keeps a slot counted as busy while it lives.
pub struct Busy(IntGauge);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl WorkerMetrics {
    /// The metrics of a worker with `slots` task slots.
    ///
    /// # Panics
    /// Never: the metric definitions are constants, registered once in a fresh registry.
    pub fn new(slots: usize) -> WorkerMetrics {
        let registry = Registry::new();
        let metrics = WorkerMetrics {
            slots: IntGauge::new("strata_worker_slots", "Task slots of the worker").unwrap(),
            busy: IntGauge::new("strata_worker_slots_busy", "Task slots running a task").unwrap(),
            tasks: IntCounterVec::new(
                Opts::new(
                    "strata_worker_tasks_total",
                    "Task attempts finished, by kind and outcome",
                ),
                &["kind", "outcome"],
            )
            .unwrap(),
            durations: HistogramVec::new(
                HistogramOpts::new(
                    "strata_worker_task_duration_seconds",
                    "Duration of task attempts, by kind",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["kind"],
            )
            .unwrap(),
            rows: IntCounter::new(
                "strata_worker_rows_written_total",
                "Rows written by model, seed, map and ingest tasks",
            )
            .unwrap(),
            quarantined: IntCounter::new(
                "strata_worker_rows_quarantined_total",
                "Records ingest tasks set aside in quarantine tables",
            )
            .unwrap(),
            bytes: IntCounter::new(
                "strata_worker_bytes_written_total",
                "Bytes of files written by tasks",
            )
            .unwrap(),
            memory: Histogram::with_opts(
                HistogramOpts::new(
                    "strata_worker_task_memory_peak_bytes",
                    "Peak memory-pool reservation of task attempts",
                )
                .buckets(MEMORY_BUCKETS.to_vec()),
            )
            .unwrap(),
            registry,
        };
        for collector in [
            Box::new(metrics.slots.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.busy.clone()),
            Box::new(metrics.tasks.clone()),
            Box::new(metrics.durations.clone()),
            Box::new(metrics.rows.clone()),
            Box::new(metrics.quarantined.clone()),
            Box::new(metrics.bytes.clone()),
            Box::new(metrics.memory.clone()),
        ] {
            metrics.registry.register(collector).unwrap();
        }
        metrics.slots.set(i64::try_from(slots).unwrap_or(i64::MAX));
        metrics
    }

    /// Counts a slot busy until the returned guard is dropped.
    pub fn busy(&self) -> Busy {
        self.busy.inc();
        Busy(self.busy.clone())
    }

    /// Records a finished attempt.
    pub fn finished(&self, task: &Task, result: &TaskResult, elapsed: Duration) {
        let kind = match TaskKind::try_from(task.kind).unwrap_or(TaskKind::Unspecified) {
            TaskKind::Model => "model",
            TaskKind::Seed => "seed",
            TaskKind::Test => "test",
            TaskKind::ShuffleMap => "shuffle_map",
            TaskKind::Noop => "noop",
            TaskKind::Ingest => "ingest",
            TaskKind::Unspecified => "unknown",
        };
        let outcome = match FailureClass::try_from(result.failure_class) {
            Ok(FailureClass::Unspecified) => "success",
            Ok(FailureClass::User) => "user_error",
            Ok(FailureClass::Transient) => "transient_error",
            Ok(FailureClass::Interrupted) => "interrupted",
            _ => "internal_error",
        };
        self.tasks.with_label_values(&[kind, outcome]).inc();
        self.durations
            .with_label_values(&[kind])
            .observe(elapsed.as_secs_f64());
        if task.kind != TaskKind::Test as i32 {
            self.rows
                .inc_by(u64::try_from(result.rows).unwrap_or_default());
        }
        self.quarantined
            .inc_by(u64::try_from(result.quarantined_rows).unwrap_or_default());
        self.bytes
            .inc_by(u64::try_from(result.bytes).unwrap_or_default());
        self.memory.observe(result.peak_memory_bytes.max(0) as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ingest_attempt_counts_its_kind_rows_and_quarantined_records() {
        let metrics = WorkerMetrics::new(2);
        let task = Task {
            kind: TaskKind::Ingest as i32,
            ..Task::default()
        };
        let result = TaskResult {
            rows: 40,
            quarantined_rows: 3,
            ..TaskResult::default()
        };
        metrics.finished(&task, &result, Duration::from_millis(5));
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&metrics.registry.gather())
            .unwrap();
        assert!(
            text.contains(r#"strata_worker_tasks_total{kind="ingest",outcome="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("strata_worker_rows_written_total 40"),
            "{text}"
        );
        assert!(
            text.contains("strata_worker_rows_quarantined_total 3"),
            "{text}"
        );
    }
}
