//! Traces of real runs reach a real OTLP receiver (a tonic server implementing the collector's
//! `TraceService`): one trace per run, whose attempt spans in the worker processes descend
//! from the run span in the coordinator, with Flight client and server spans linked and the
//! rows each model wrote on its span.

mod common;

use common::otlp::{Received, Receiver, descends_from};
use common::*;

const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Waits for a build without blocking the receiver's runtime.
async fn finished(build: std::process::Child) -> serde_json::Value {
    tokio::task::spawn_blocking(move || finish_build(build))
        .await
        .unwrap()
}

fn run_span<'a>(
    trace: &'a std::collections::HashMap<String, Received>,
    run_id: &str,
) -> &'a Received {
    trace
        .values()
        .find(|span| span.span.name == format!("run {run_id}"))
        .unwrap_or_else(|| panic!("no run span among {} spans", trace.len()))
}

/// Every attempt descends from the run span; every model's span carries the rows its Delta
/// table holds.
async fn assert_run_trace(
    receiver: &Receiver,
    record: &serde_json::Value,
    warehouse: &std::path::Path,
) {
    let trace_id = record["trace_id"].as_str().unwrap();
    let trace = receiver.trace(trace_id);
    let run = run_span(&trace, record["run_id"].as_str().unwrap());
    let attempts: Vec<&Received> = trace
        .values()
        .filter(|span| span.span.name.starts_with("attempt "))
        .collect();
    assert!(
        attempts.len() >= record["nodes"].as_array().unwrap().len() / 2,
        "{} attempts",
        attempts.len()
    );
    for attempt in &attempts {
        assert!(
            descends_from(&trace, attempt, &run.span_id()),
            "{} does not descend from the run span",
            attempt.span.name
        );
    }
    for node in record["nodes"].as_array().unwrap() {
        let id = node["unique_id"].as_str().unwrap();
        let span = trace
            .values()
            .find(|span| {
                span.attribute("strata.node_id").as_deref() == Some(id)
                    && span.attribute("strata.resource_type").is_some()
                    && span.span.name.contains(' ')
                    && !span.span.name.starts_with("attempt")
                    && !span.span.name.starts_with("task")
            })
            .unwrap_or_else(|| panic!("no span of node {id}"));
        assert!(descends_from(&trace, span, &run.span_id()), "{id}");
        if node["resource_type"] != "model" {
            continue;
        }
        let relation = node["relation"].as_str().unwrap().replace('"', "");
        let table = warehouse.join(relation.replace('.', "/"));
        if !table.join("_delta_log").exists() {
            continue; // a view: no table of its own
        }
        let rows = rows(&table).await.len();
        assert_eq!(
            span.attribute("strata.rows_out"),
            Some(rows.to_string()),
            "{id}"
        );
    }
}

/// An embedded build of examples/medallion on `events` generated events into `<dir>/warehouse`,
/// exporting its spans to `receiver` (with `extra` variables): the folder and the run record.
async fn traced_embedded_build(
    receiver: &Receiver,
    events: &str,
    extra: &[(&str, &str)],
) -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let project = medallion(dir.path(), events);
    let warehouse = dir.path().join("warehouse");
    let mut envs = vec![(ENDPOINT, receiver.endpoint.as_str())];
    envs.extend_from_slice(extra);
    let record = finished(start_build_with_env(&project, &warehouse, None, &[], &envs)).await;
    (dir, record)
}

/// Prints the trace as an indented tree (run the test with `--nocapture` to see it).
fn print_tree(trace: &std::collections::HashMap<String, Received>) {
    fn visit(trace: &std::collections::HashMap<String, Received>, id: &str, depth: usize) {
        let mut children: Vec<&Received> = trace
            .values()
            .filter(|span| span.parent_id() == id)
            .collect();
        children.sort_by_key(|span| span.span.start_time_unix_nano);
        for child in children {
            let millis =
                (child.span.end_time_unix_nano - child.span.start_time_unix_nano) / 1_000_000;
            let rows = child
                .attribute("strata.rows_out")
                .map_or_else(String::new, |rows| format!(" rows_out={rows}"));
            println!(
                "{}{} [{}] {millis} ms{rows}",
                "  ".repeat(depth),
                child.span.name,
                child.service
            );
            visit(trace, &child.span_id(), depth + 1);
        }
    }
    let roots: Vec<&Received> = trace
        .values()
        .filter(|span| !trace.contains_key(&span.parent_id()))
        .collect();
    for root in roots {
        println!("{} [{}]", root.span.name, root.service);
        visit(trace, &root.span_id(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_build_is_one_trace() {
    let receiver = Receiver::start().await;
    let (dir, record) = traced_embedded_build(&receiver, "20000", &[]).await;
    let warehouse = dir.path().join("warehouse");
    let trace_id = record["trace_id"].as_str().unwrap();
    let spans = receiver.spans();
    assert!(!spans.is_empty(), "no span reached the receiver");
    assert!(
        spans.iter().all(|span| span.trace_id() == trace_id),
        "one trace per run"
    );
    assert!(spans.iter().all(|span| span.service == "strata"));
    print_tree(&receiver.trace(trace_id));
    assert_run_trace(&receiver, &record, &warehouse).await;
    let commits = spans
        .iter()
        .filter(|span| span.span.name.starts_with("delta commit "))
        .count();
    assert!(commits > 5, "{commits} Delta commit spans");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_run_with_a_killed_worker_is_one_trace_across_processes() {
    let receiver = Receiver::start().await;
    let scenario = Scenario::new("60000");
    let envs = [(ENDPOINT, receiver.endpoint.as_str())];
    let mut workers = Workers::start_with_env(2, "otel", &scenario.queue, &[], &envs);
    let running = start_build_with_env(
        &scenario.project,
        &scenario.clustered,
        Some(&scenario.queue),
        &["--shuffle-partitions", "2"],
        &envs,
    );
    scenario.wait_for_first_commit();
    let mut victim = workers.0.remove(0);
    victim.kill().unwrap();
    victim.wait().unwrap();
    let record = finished(running).await;
    // The surviving worker drains on SIGTERM and exports its spans as it exits.
    for worker in &workers.0 {
        send_signal(worker, "-TERM");
    }
    for worker in &mut workers.0 {
        worker.wait().unwrap();
    }
    let trace_id = record["trace_id"].as_str().unwrap();
    let trace = receiver.trace(trace_id);
    let services: std::collections::BTreeSet<&str> =
        trace.values().map(|span| span.service.as_str()).collect();
    assert!(
        services.contains("strata") && services.contains("strata-worker"),
        "{services:?}"
    );
    assert_run_trace(&receiver, &record, &scenario.clustered).await;
    // Tasks hang from their stage, a stage from its node: map stages then a reduce stage for
    // the shuffled models.
    let stage_of = |task: &Received| {
        trace
            .get(&task.parent_id())
            .filter(|stage| stage.attribute("strata.stage").is_some())
            .unwrap_or_else(|| panic!("{} has no stage span as its parent", task.span.name))
    };
    let mut stage_names = std::collections::BTreeSet::new();
    for task in trace
        .values()
        .filter(|span| span.span.name.starts_with("task "))
    {
        let stage = stage_of(task);
        let node = trace.get(&stage.parent_id()).expect("the stage's node");
        assert!(
            node.attribute("strata.resource_type").is_some(),
            "{}",
            stage.span.name
        );
        stage_names.insert(stage.attribute("strata.stage").unwrap());
    }
    assert!(
        stage_names.contains("map stage 0") && stage_names.contains("reduce stage"),
        "{stage_names:?}"
    );
    // Each Flight server span is the child of a reducer's client span.
    let servers: Vec<&Received> = trace
        .values()
        .filter(|span| {
            span.span.name.ends_with("/DoGet") && span.attribute("strata.shuffle.ticket").is_some()
        })
        .collect();
    for server in &servers {
        let client = trace
            .get(&server.parent_id())
            .expect("the client span of a DoGet");
        assert!(
            client.attribute("strata.shuffle.stage").is_some(),
            "{:?}",
            client.span.name
        );
    }
    // A task retried after the kill: a retry event with its reason on the task's span.
    let retried: Vec<&serde_json::Value> = record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| node["attempts"].as_u64().unwrap_or(1) > 1)
        .collect();
    let retry_events = trace
        .values()
        .filter(|span| span.span.name.starts_with("task "))
        .filter(|span| span.event_names().iter().any(|name| name == "retry"))
        .count();
    assert!(
        retry_events >= retried.len().min(1),
        "{retry_events} retry events for {} retried nodes",
        retried.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_also_go_over_otlp_http() {
    let receiver = Receiver::start_http().await;
    let extra = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", "strata-http-test"),
    ];
    let (dir, record) = traced_embedded_build(&receiver, "5000", &extra).await;
    let warehouse = dir.path().join("warehouse");
    let spans = receiver.spans();
    assert!(!spans.is_empty(), "no span reached the OTLP/HTTP receiver");
    assert!(spans.iter().all(|span| span.service == "strata-http-test"));
    assert_run_trace(&receiver, &record, &warehouse).await;
}
