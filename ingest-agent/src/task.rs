//! An ingest task as the coordinator sends it: the source table its `ingest` part names is
//! landed, and the outcome reported as a task result — rows, the bronze table's version, the
//! records quarantined, or the failure with the class that decides whether it is retried.

use std::path::Path;
use std::time::Instant;

use futures::FutureExt as _;
use strata_core::manifest::IngestDeclaration;
use strata_proto::v1::{FailureClass, Task, TaskKind, TaskResult};
use strata_worker::TaskRunner;
use tracing::Instrument as _;

use crate::IngestError;
use crate::run::{Draining, IngestTarget, TableReport, land};
use crate::spec::IngestSpec;

/// Runs the ingest tasks an agent takes (see [`run_ingest_task`]).
#[derive(Debug, Clone, Default)]
pub struct IngestRunner {
    /// Stops landings between chunks when the agent drains.
    pub draining: Draining,
}

impl TaskRunner for IngestRunner {
    fn run(
        &self,
        task: &Task,
        attempt: u32,
        worker_id: &str,
    ) -> impl std::future::Future<Output = TaskResult> + Send {
        run_ingest_task(task, attempt, worker_id, &self.draining)
    }
}

/// Lands the source of an ingest task and reports the outcome. Never fails: a failure is in
/// the result with its class, and a panic is an internal failure. The attempt is one span,
/// the child of the task's span in the coordinator (through the task's `traceparent`). When
/// `draining` asks, the landing stops after its current chunk with an interrupted failure
/// carrying what it committed, so that the coordinator hands the rest to another agent.
pub async fn run_ingest_task(
    task: &Task,
    attempt: u32,
    agent_id: &str,
    draining: &Draining,
) -> TaskResult {
    let started = Instant::now();
    let span = attempt_span(task, attempt, agent_id);
    let outcome = std::panic::AssertUnwindSafe(land_task(task, draining))
        .catch_unwind()
        .instrument(span.clone())
        .await
        .unwrap_or_else(|panic| Err(IngestError::Internal(panic_message(panic.as_ref()))));
    let mut result = TaskResult {
        run_id: task.run_id.clone(),
        task_id: task.task_id.clone(),
        attempt,
        worker_id: agent_id.to_string(),
        table_version: -1,
        ..TaskResult::default()
    };
    match outcome {
        Ok(report) => {
            result.rows = i64::try_from(report.rows).unwrap_or(i64::MAX);
            result.quarantined_rows = i64::try_from(report.quarantined).unwrap_or(i64::MAX);
            result.table_version = report.version.unwrap_or(-1);
            span.record("strata.rows_out", report.rows);
            span.record("strata.quarantined_rows", report.quarantined);
            span.record("strata.batches", report.batches);
        }
        Err(err) => {
            if let IngestError::Interrupted {
                rows, quarantined, ..
            } = &err
            {
                // Committed: the coordinator adds them to the next attempt's.
                result.rows = i64::try_from(*rows).unwrap_or(i64::MAX);
                result.quarantined_rows = i64::try_from(*quarantined).unwrap_or(i64::MAX);
            }
            let class = failure_class(&err);
            result.failure_class = class as i32;
            result.error = err.to_string();
            span.record("strata.failure_class", class.as_str_name());
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_message", result.error.as_str());
            span.in_scope(|| tracing::warn!(error = %result.error, "ingest attempt failed"));
        }
    }
    result.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    result
}

/// The span of one attempt of an ingest task on this agent.
fn attempt_span(task: &Task, attempt: u32, agent_id: &str) -> tracing::Span {
    let source = task
        .ingest
        .as_ref()
        .map_or("", |ingest| ingest.source_name.as_str());
    let span = tracing::info_span!(
        "attempt",
        otel.name = %format!("ingest {source}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.message.id = %format!("{}#{attempt}", task.task_id),
        strata.run_id = %task.run_id,
        strata.task_id = %task.task_id,
        strata.node_id = %task.node_unique_id,
        strata.attempt = attempt,
        strata.worker_id = %agent_id,
        strata.source = %source,
        strata.rows_out = tracing::field::Empty,
        strata.quarantined_rows = tracing::field::Empty,
        strata.batches = tracing::field::Empty,
        strata.failure_class = tracing::field::Empty,
    );
    strata_telemetry::set_remote_parent(&span, &task.traceparent);
    span
}

/// The source of the task, landed.
async fn land_task(task: &Task, draining: &Draining) -> Result<TableReport, IngestError> {
    let ingest = match (&task.ingest, TaskKind::try_from(task.kind)) {
        (Some(ingest), Ok(TaskKind::Ingest)) => ingest,
        _ => {
            return Err(IngestError::Misrouted {
                task: task.task_id.clone(),
            });
        }
    };
    let spec = serde_json::from_str(&ingest.spec_json).map_err(|err| IngestError::Spec {
        origin: ingest.origin.clone(),
        reason: format!("the task's ingest block is not a JSON object ({err})"),
    })?;
    let declaration = IngestDeclaration {
        spec,
        origin: ingest.origin.clone(),
    };
    let target = IngestTarget {
        name: ingest.source_name.clone(),
        table_uri: ingest.table_uri.clone(),
        spec: IngestSpec::parse(&declaration)?,
    };
    land(
        &target,
        Path::new(&ingest.project_dir),
        ingest.full_refresh,
        draining,
    )
    .await
}

/// Whether retrying can help: not for a wrong block, a missing secret, a policy's refusal or a
/// source that stayed unreachable through its own retries; yes for a read or a commit cut
/// short (landing again goes on from the last commit). A landing stopped by a drain is handed
/// on without using a retry.
pub fn failure_class(error: &IngestError) -> FailureClass {
    match error {
        IngestError::Spec { .. }
        | IngestError::Secret { .. }
        | IngestError::Connect { .. }
        | IngestError::BadRecord { .. }
        | IngestError::Drift { .. }
        | IngestError::State { .. }
        | IngestError::Misrouted { .. } => FailureClass::User,
        IngestError::Interrupted { .. } => FailureClass::Interrupted,
        IngestError::Read { .. } | IngestError::Storage(_) | IngestError::Delta { .. } => {
            FailureClass::Transient
        }
        IngestError::Internal(_) => FailureClass::Internal,
    }
}

/// What a caught panic in a landing says.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = strata_worker::execution::panic_text(panic);
    format!("the ingest agent panicked ({text}); this is a bug in Strata — please report it")
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1::Ingest;

    fn ingest_task(spec_json: &str) -> Task {
        Task {
            run_id: String::from("r1"),
            task_id: String::from("t1"),
            kind: TaskKind::Ingest as i32,
            ingest: Some(Ingest {
                source_name: String::from("landing.events"),
                table_uri: String::from("memory:///bronze/events"),
                spec_json: spec_json.to_string(),
                origin: String::from("models/sources.yml:7"),
                project_dir: String::from("/nonexistent"),
                full_refresh: false,
            }),
            ..Task::default()
        }
    }

    #[tokio::test]
    async fn a_wrong_ingest_block_fails_as_a_user_error_naming_its_file_and_line() {
        let result = run_ingest_task(
            &ingest_task(r#"{"connector": "ftp"}"#),
            1,
            "a1",
            &Draining::default(),
        )
        .await;
        assert_eq!(result.failure_class, FailureClass::User as i32);
        assert!(
            result.error.contains("models/sources.yml:7"),
            "{}",
            result.error
        );
        assert_eq!(result.table_version, -1);
        assert_eq!(result.worker_id, "a1");
    }

    #[tokio::test]
    async fn a_task_that_is_not_an_ingest_task_is_refused_without_landing_anything() {
        let mut task = ingest_task("{}");
        task.kind = TaskKind::Model as i32;
        let result = run_ingest_task(&task, 2, "a1", &Draining::default()).await;
        assert_eq!(result.failure_class, FailureClass::User as i32);
        assert!(result.error.contains("strata worker"), "{}", result.error);
        assert_eq!(result.attempt, 2);
    }

    #[tokio::test]
    async fn an_ingest_task_lands_its_files_and_reports_rows_and_version() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), "id,name\n1,x\n2,y\n").unwrap();
        let warehouse = dir.path().join("warehouse/landing/events");
        let mut task = ingest_task(r#"{"connector": "files", "path": "*.csv"}"#);
        let ingest = task.ingest.as_mut().unwrap();
        ingest.project_dir = dir.path().display().to_string();
        ingest.table_uri = format!("file://{}", warehouse.display());
        let result = run_ingest_task(&task, 1, "a1", &Draining::default()).await;
        assert_eq!(result.error, "");
        assert_eq!(result.rows, 2);
        assert_eq!(result.table_version, 0);
        let again = run_ingest_task(&task, 1, "a1", &Draining::default()).await;
        assert_eq!((again.rows, again.table_version), (0, -1));
    }
}
