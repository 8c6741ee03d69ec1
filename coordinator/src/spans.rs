//! The coordinator's spans of a run: `run` → `node` → `stage` → `task` → `publish`, and the
//! Delta commit of each node. A node runs as one stage, or as map stages and a reduce stage
//! when it is shuffled; a stage's span ends when the next one starts. A worker's `attempt` span is the child of its task's span through the
//! `traceparent` the task carries, so one trace holds the whole run across processes.
//!
//! Without an exporting pipeline the spans cost little, and tasks still carry the run's trace
//! id in their `traceparent`.

use std::collections::HashMap;

use strata_core::manifest::Node;
use strata_proto::v1::Task;
use strata_telemetry::end_now;
use tracing::Span;
use tracing::field::Empty;

use crate::run::{NodeResult, NodeStatus, RunEvent, RunRecord, random_hex};

/// The open spans of one run.
pub(crate) struct RunSpans {
    run: Span,
    trace_id: String,
    nodes: HashMap<String, Span>,
    /// The open stage of each node: its label and span.
    stages: HashMap<String, (String, Span)>,
    /// Each task's span, with its node's id.
    tasks: HashMap<String, (String, Span)>,
    /// The last failure a worker reported for each task: the reason of its retry.
    last_errors: HashMap<String, String>,
}

impl RunSpans {
    /// The run's span, in trace `trace_id` (kept across a coordinator restart, so that a
    /// resumed run continues its trace).
    pub(crate) fn new(run_id: &str, trace_id: &str, nodes: usize, resumed: bool) -> RunSpans {
        let run = tracing::info_span!(
            "run",
            otel.name = %format!("run {run_id}"),
            otel.status_code = Empty,
            strata.run_id = %run_id,
            strata.nodes = nodes,
            strata.resumed = resumed,
            strata.success = Empty,
            strata.failed_nodes = Empty,
        );
        strata_telemetry::set_remote_parent(&run, &format!("00-{trace_id}-{}-01", random_hex(8)));
        RunSpans {
            run,
            trace_id: trace_id.to_string(),
            nodes: HashMap::new(),
            stages: HashMap::new(),
            tasks: HashMap::new(),
            last_errors: HashMap::new(),
        }
    }

    /// The run's W3C trace id.
    pub(crate) fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The run's span.
    pub(crate) fn run(&self) -> &Span {
        &self.run
    }

    /// The span of `node`, opened when first asked for.
    pub(crate) fn node(&mut self, node: &Node) -> Span {
        let run = &self.run;
        self.nodes
            .entry(node.unique_id.clone())
            .or_insert_with(|| {
                tracing::info_span!(
                    parent: run,
                    "node",
                    otel.name = %format!("{} {}", node.resource_type.as_str(), node.name),
                    otel.status_code = Empty,
                    otel.status_message = Empty,
                    strata.node_id = %node.unique_id,
                    strata.resource_type = node.resource_type.as_str(),
                    strata.layer = node.layer.as_deref().unwrap_or_default(),
                    strata.materialization = %node.config.materialized,
                    strata.relation = node.relation_name.as_deref().unwrap_or_default(),
                    strata.status = Empty,
                    strata.rows_out = Empty,
                    strata.bytes_written = Empty,
                    strata.memory_peak_bytes = Empty,
                    strata.allocated_peak_bytes = Empty,
                    strata.failing_rows = Empty,
                    strata.attempts = Empty,
                    strata.tasks = Empty,
                    strata.workers = Empty,
                    strata.delta_version = Empty,
                )
            })
            .clone()
    }

    /// Opens the span of a task of `node` and returns the `traceparent` the task carries: the
    /// task span's, or (when nothing is exported) one in the run's trace.
    pub(crate) fn task(&mut self, node: &Node, task: &Task) -> String {
        let parent = self.stage(node, task);
        let span = tracing::info_span!(
            parent: &parent,
            "task",
            otel.name = %format!("task {}", task.task_id),
            otel.kind = "producer",
            otel.status_code = Empty,
            strata.task_id = %task.task_id,
            strata.node_id = %node.unique_id,
            strata.stage = task.stage,
        );
        let traceparent = strata_telemetry::span_traceparent(&span)
            .unwrap_or_else(|| format!("00-{}-{}-01", self.trace_id, random_hex(8)));
        self.tasks
            .insert(task.task_id.clone(), (node.unique_id.clone(), span));
        traceparent
    }

    /// The span of the stage `task` belongs to; opening a node's next stage ends the one
    /// before it.
    fn stage(&mut self, node: &Node, task: &Task) -> Span {
        let label = stage_label(task);
        if let Some((open, span)) = self.stages.get(&node.unique_id) {
            if *open == label {
                return span.clone();
            }
            end_now(span);
        }
        let parent = self.node(node);
        let span = tracing::info_span!(
            parent: &parent,
            "stage",
            otel.name = %format!("{label} {}", node.name),
            strata.node_id = %node.unique_id,
            strata.stage = %label,
        );
        self.stages
            .insert(node.unique_id.clone(), (label, span.clone()));
        span
    }

    /// The span of publishing attempt `attempt` of a task on `queue`; a retry is an event on
    /// the task's span with its reason.
    pub(crate) fn publish(&self, task: &Task, attempt: u32, queue: &str) -> Span {
        let parent = self
            .tasks
            .get(&task.task_id)
            .map_or_else(|| self.run.clone(), |(_, span)| span.clone());
        if attempt > 1 {
            let reason = self.last_errors.get(&task.task_id).map_or(
                "no result within the task timeout: its worker was lost",
                String::as_str,
            );
            parent.in_scope(|| {
                // The event's name in the trace is its message: `retry`.
                tracing::info!(
                    strata.task_id = %task.task_id,
                    strata.attempt = attempt,
                    strata.reason = reason,
                    "retry"
                );
            });
        }
        tracing::info_span!(
            parent: &parent,
            "publish",
            otel.name = %format!("{queue} publish"),
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "publish",
            messaging.destination.name = %queue,
            messaging.message.id = %format!("{}#{attempt}", task.task_id),
            strata.attempt = attempt,
        )
    }

    /// Notes what a worker reported about a task (a failure becomes the next retry's reason).
    pub(crate) fn observe(&mut self, event: &RunEvent) {
        if let RunEvent::TaskReported {
            task_id,
            attempt,
            worker,
            error: Some(error),
            ..
        } = event
        {
            if let Some((_, span)) = self.tasks.get(task_id) {
                span.in_scope(|| {
                    tracing::warn!(
                        strata.attempt = attempt,
                        strata.worker_id = %worker,
                        error = %error,
                        "attempt {attempt} failed on {worker}"
                    );
                });
            }
            self.last_errors.insert(task_id.clone(), error.clone());
        }
    }

    /// Records a node's outcome on its span and closes it with its tasks' spans.
    pub(crate) fn node_finished(&mut self, result: &NodeResult) {
        let Some(span) = self.nodes.remove(&result.unique_id) else {
            return;
        };
        span.record("strata.status", result.status.as_str());
        span.record("strata.rows_out", result.rows);
        span.record("strata.bytes_written", result.bytes);
        span.record("strata.memory_peak_bytes", result.peak_memory_bytes);
        span.record("strata.allocated_peak_bytes", result.peak_allocated_bytes);
        span.record("strata.attempts", result.attempts);
        span.record("strata.tasks", result.tasks);
        span.record("strata.workers", result.workers.join(",").as_str());
        if let Some(failures) = result.failures {
            span.record("strata.failing_rows", failures);
        }
        if let Some(version) = result.version {
            span.record("strata.delta_version", version);
        }
        let failed = matches!(result.status, NodeStatus::Error | NodeStatus::Fail);
        if failed {
            span.record("otel.status_code", "ERROR");
            let error = result.error.as_deref().unwrap_or_default();
            span.record("otel.status_message", error);
            span.in_scope(|| tracing::error!(error = %error, "{} failed", result.name));
        }
        let node_tasks: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, (node, _))| *node == result.unique_id)
            .map(|(task, _)| task.clone())
            .collect();
        for task in node_tasks {
            if let Some((_, task_span)) = self.tasks.remove(&task) {
                if failed {
                    task_span.record("otel.status_code", "ERROR");
                }
                end_now(&task_span);
            }
            self.last_errors.remove(&task);
        }
        if let Some((_, stage)) = self.stages.remove(&result.unique_id) {
            end_now(&stage);
        }
        end_now(&span);
    }

    /// Records the run's outcome on its span.
    pub(crate) fn finish(&mut self, record: &RunRecord) {
        self.nodes.clear();
        self.stages.clear();
        self.tasks.clear();
        self.run.record("strata.success", record.success);
        let failed = record
            .nodes
            .iter()
            .filter(|node| matches!(node.status, NodeStatus::Error | NodeStatus::Fail))
            .count();
        self.run.record("strata.failed_nodes", failed);
        if !record.success {
            self.run.record("otel.status_code", "ERROR");
        }
        end_now(&self.run);
    }
}

/// What a task's stage is called: `map stage N` for the map tasks of a shuffle, `reduce stage`
/// for the tasks that read the shuffle and write the table, `stage` for a node run whole.
fn stage_label(task: &Task) -> String {
    if task.kind == strata_proto::v1::TaskKind::ShuffleMap as i32 {
        format!("map stage {}", task.stage)
    } else if !task.plan.is_empty() {
        String::from("reduce stage")
    } else {
        String::from("stage")
    }
}
