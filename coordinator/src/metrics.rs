//! The coordinator's Prometheus metrics: runs, nodes, tasks, retries, what each model wrote,
//! test results, and the depth of the task queue. Labels are bounded: node names, never run
//! ids.

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use strata_core::manifest::{Node, ResourceType};

use crate::run::{NodeResult, NodeStatus, RunEvent, RunRecord};

/// Buckets of node and run durations, in seconds: 50 ms to 2 h.
const DURATION_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 7200.0,
];

/// The metrics of one coordinator process.
#[derive(Clone, Debug)]
pub struct CoordinatorMetrics {
    /// Where they are registered (served at `/metrics`).
    pub registry: Registry,
    runs: IntCounterVec,
    runs_active: IntGauge,
    run_duration: HistogramVec,
    nodes: IntCounterVec,
    node_duration: HistogramVec,
    tasks: IntCounterVec,
    retries: IntCounter,
    rows: IntCounterVec,
    bytes: IntCounterVec,
    tests: IntCounterVec,
    queue_depth: IntGaugeVec,
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        CoordinatorMetrics::new()
    }
}

impl CoordinatorMetrics {
    /// Fresh metrics in a registry of their own.
    ///
    /// # Panics
    /// Never: the definitions are constants, registered once in a fresh registry.
    pub fn new() -> CoordinatorMetrics {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).unwrap()
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()),
                labels,
            )
            .unwrap()
        };
        let metrics = CoordinatorMetrics {
            registry: Registry::new(),
            runs: counter(
                "strata_runs_total",
                "Runs finished, by status (success, failed, aborted)",
                &["status"],
            ),
            runs_active: IntGauge::new("strata_runs_active", "Runs executing").unwrap(),
            run_duration: histogram(
                "strata_run_duration_seconds",
                "Duration of runs, by status",
                &["status"],
            ),
            nodes: counter(
                "strata_nodes_total",
                "Nodes finished, by resource type, layer and status",
                &["resource_type", "layer", "status"],
            ),
            node_duration: histogram(
                "strata_node_duration_seconds",
                "Duration of nodes, by resource type, layer and node",
                &["resource_type", "layer", "node"],
            ),
            tasks: counter(
                "strata_tasks_total",
                "Task attempts reported by workers, by outcome",
                &["outcome"],
            ),
            retries: IntCounter::new(
                "strata_task_retries_total",
                "Task attempts published again after a failure or a lost worker",
            )
            .unwrap(),
            rows: counter(
                "strata_rows_written_total",
                "Rows written, by layer and model (or seed)",
                &["layer", "node"],
            ),
            bytes: counter(
                "strata_bytes_written_total",
                "Bytes of files written, by layer and model (or seed)",
                &["layer", "node"],
            ),
            tests: counter(
                "strata_tests_total",
                "Data tests finished, by status",
                &["status"],
            ),
            queue_depth: IntGaugeVec::new(
                Opts::new("strata_task_queue_depth", "Tasks waiting on the task queue"),
                &["queue"],
            )
            .unwrap(),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 11] = [
            Box::new(metrics.runs.clone()),
            Box::new(metrics.runs_active.clone()),
            Box::new(metrics.run_duration.clone()),
            Box::new(metrics.nodes.clone()),
            Box::new(metrics.node_duration.clone()),
            Box::new(metrics.tasks.clone()),
            Box::new(metrics.retries.clone()),
            Box::new(metrics.rows.clone()),
            Box::new(metrics.bytes.clone()),
            Box::new(metrics.tests.clone()),
            Box::new(metrics.queue_depth.clone()),
        ];
        for collector in collectors {
            metrics.registry.register(collector).unwrap();
        }
        metrics
    }

    /// A run starts.
    pub fn run_started(&self) {
        self.runs_active.inc();
    }

    /// A run ended with `record`.
    pub fn run_finished(&self, record: &RunRecord) {
        self.runs_active.dec();
        let status = if record.success { "success" } else { "failed" };
        self.runs.with_label_values(&[status]).inc();
        self.run_duration
            .with_label_values(&[status])
            .observe(Duration::from_millis(record.elapsed_ms).as_secs_f64());
    }

    /// A run stopped without a record (its result queue failed).
    pub fn run_aborted(&self) {
        self.runs_active.dec();
        self.runs.with_label_values(&["aborted"]).inc();
    }

    /// What a run event tells: task outcomes and retries.
    pub fn observe(&self, event: &RunEvent) {
        match event {
            RunEvent::TaskReported { error, .. } => {
                let outcome = if error.is_some() { "failed" } else { "success" };
                self.tasks.with_label_values(&[outcome]).inc();
            }
            RunEvent::TaskDispatched { attempt, .. } if *attempt > 1 => self.retries.inc(),
            _ => {}
        }
    }

    /// A node of the run finished.
    pub fn node_finished(&self, node: &Node, result: &NodeResult) {
        let layer = node.layer.as_deref().unwrap_or_default();
        let kind = node.resource_type.as_str();
        self.nodes
            .with_label_values(&[kind, layer, result.status.as_str()])
            .inc();
        self.node_duration
            .with_label_values(&[kind, layer, &node.name])
            .observe(Duration::from_millis(result.duration_ms).as_secs_f64());
        if node.resource_type == ResourceType::Test {
            self.tests
                .with_label_values(&[result.status.as_str()])
                .inc();
        } else if result.status == NodeStatus::Success {
            let written = [layer, node.name.as_str()];
            self.rows
                .with_label_values(&written)
                .inc_by(u64::try_from(result.rows).unwrap_or_default());
            self.bytes
                .with_label_values(&written)
                .inc_by(u64::try_from(result.bytes).unwrap_or_default());
        }
    }

    /// The depth of task queue `queue`.
    pub fn queue_depth(&self, queue: &str, depth: usize) {
        self.queue_depth
            .with_label_values(&[queue])
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
}
