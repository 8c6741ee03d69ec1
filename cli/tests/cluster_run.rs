//! The distributed mode end to end, as separate OS processes: the real RabbitMQ, `strata
//! worker` processes, and `strata build --cluster` as the coordinator. The tables must equal
//! those of an embedded build — with three workers, with a worker killed by SIGKILL or drained
//! by SIGTERM in the middle of the run, and next to a malformed message on the task queue.

mod common;

use std::time::Duration;

use common::{
    Scenario, Workers, assert_same_tables, broker_url, build, finish_build, medallion, send_signal,
    start_build, unique_queue, wait_for, workers_used,
};
use strata_amqp::AmqpQueue;
use strata_core::queue::{
    Consumer, DEAD_LETTER_QUEUE, JobQueue, Message, ORIGIN_HEADER, REASON_HEADER,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_build_what_embedded_mode_builds() {
    let scenario = Scenario::new("30000");
    let (project, embedded, clustered, queue) = (
        &scenario.project,
        &scenario.embedded,
        &scenario.clustered,
        &scenario.queue,
    );
    let _workers = Workers::start(3, "w", queue);
    let record = build(project, clustered, Some(queue));
    assert_eq!(record["success"], true);
    let used = workers_used(&record);
    assert!(
        used.len() >= 2,
        "tasks should spread over workers: {used:?}"
    );
    assert!(
        used.iter().all(|worker| worker.starts_with("w-")),
        "{used:?}"
    );
    // The dedup window of silver_events needs all rows of an event id together: a shuffle,
    // with map and reduce tasks spread over the workers.
    let silver = record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["name"] == "silver_events")
        .unwrap();
    let stages = silver["stages"]
        .as_array()
        .expect("silver_events is shuffled");
    let (map, reduce) = (&stages[0], &stages[stages.len() - 1]);
    assert_eq!(
        (map["kind"].as_str(), reduce["kind"].as_str()),
        (Some("map"), Some("reduce"))
    );
    assert!(map["tasks"].as_u64().unwrap() >= 2, "{silver:#}");
    assert!(reduce["tasks"].as_u64().unwrap() >= 2, "{silver:#}");
    assert!(
        map["bytes"].as_i64().unwrap() > 0,
        "bytes moved over Flight: {silver:#}"
    );
    let workers: std::collections::BTreeSet<&str> = stages
        .iter()
        .flat_map(|stage| stage["workers"].as_array().unwrap())
        .filter_map(|worker| worker.as_str())
        .collect();
    assert!(
        workers.len() >= 2,
        "stages on different workers: {silver:#}"
    );
    assert_same_tables(embedded, clustered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_loses_nothing() {
    let scenario = Scenario::new("60000");
    let (project, embedded, clustered, queue) = (
        &scenario.project,
        &scenario.embedded,
        &scenario.clustered,
        &scenario.queue,
    );
    let mut workers = Workers::start(2, "k", queue);
    let mut running = start_build(project, clustered, Some(queue));
    // Once the first model is committed the run is under way: kill a worker, no goodbye.
    scenario.wait_for_first_commit();
    let mut victim = workers.0.remove(0);
    victim.kill().unwrap();
    victim.wait().unwrap();
    assert!(
        running.try_wait().unwrap().is_none(),
        "the run ended before the kill: give it more data"
    );
    let record = finish_build(running);
    assert_eq!(record["success"], true);
    assert_same_tables(embedded, clustered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_worker_and_the_run_goes_on() {
    let scenario = Scenario::new("60000");
    let (project, embedded, clustered, queue) = (
        &scenario.project,
        &scenario.embedded,
        &scenario.clustered,
        &scenario.queue,
    );
    let mut workers = Workers::start(2, "d", queue);
    let running = start_build(project, clustered, Some(queue));
    scenario.wait_for_first_commit();
    let mut drained = workers.0.remove(0);
    send_signal(&drained, "-TERM");
    let status = drained.wait().unwrap();
    assert!(status.success(), "a drained worker exits cleanly: {status}");
    let record = finish_build(running);
    assert_eq!(record["success"], true);
    assert_same_tables(embedded, clustered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_task_is_dead_lettered_and_workers_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let project = medallion(dir.path(), "5000");
    let queue = unique_queue("tasks");
    let amqp = AmqpQueue::connect(&broker_url()).await.unwrap();
    amqp.publish(&queue, Message::new(b"\xff\x00 not a task".to_vec()))
        .await
        .unwrap();
    let _workers = Workers::start(1, "m", &queue);
    let record = build(&project, &dir.path().join("warehouse"), Some(&queue));
    assert_eq!(record["success"], true);
    let mut dead = amqp.consume(DEAD_LETTER_QUEUE, 10).await.unwrap();
    let reason = loop {
        let delivery = tokio::time::timeout(Duration::from_secs(20), dead.next())
            .await
            .expect("the malformed task reaches the dead-letter queue")
            .unwrap()
            .unwrap();
        if delivery.message.headers.get(ORIGIN_HEADER) == Some(&queue) {
            let reason = delivery.message.headers[REASON_HEADER].clone();
            delivery.ack().await.unwrap();
            break reason;
        }
        // Someone else's dead letter: put it back.
        delivery.retry_after(Duration::ZERO).await.unwrap();
    };
    assert!(reason.contains("malformed task"), "{reason}");
    drop(dead);
    amqp.delete(&queue).await.unwrap();
    amqp.close().await;
}

/// SplitMix64: a seeded, reproducible sequence for the fault trials.
fn split_mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_kill_trials_never_lose_or_duplicate_rows() {
    let trials: u64 = std::env::var("STRATA_FAULT_TRIALS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let project = medallion(dir.path(), "30000");
    let embedded = dir.path().join("embedded");
    build(&project, &embedded, None);
    let mut seed = 0x5EED_u64;
    for trial in 0..trials {
        // A random moment of the run: before any result, mid-model, during commits.
        let delay = Duration::from_millis(split_mix(&mut seed) % 2500);
        let victim_index = usize::try_from(split_mix(&mut seed) % 2).unwrap();
        let clustered = dir.path().join(format!("clustered-{trial}"));
        let queue = unique_queue("trial");
        let mut workers = Workers::start(2, &format!("t{trial}"), &queue);
        let running = start_build(&project, &clustered, Some(&queue));
        std::thread::sleep(delay);
        let mut victim = workers.0.remove(victim_index);
        victim.kill().unwrap();
        victim.wait().unwrap();
        let record = finish_build(running);
        assert_eq!(
            record["success"], true,
            "trial {trial} (kill after {delay:?})"
        );
        assert_same_tables(&embedded, &clustered).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_is_noticed_by_its_silence() {
    let scenario = Scenario::new("30000");
    let (project, embedded, clustered, queue) = (
        &scenario.project,
        &scenario.embedded,
        &scenario.clustered,
        &scenario.queue,
    );
    let workers = Workers::start_with_args(
        2,
        "s",
        queue,
        &[
            "--heartbeat-interval-ms",
            "200",
            "--fetch-timeout-secs",
            "2",
        ],
    );
    let mut running = common::start_build_with_args(
        project,
        clustered,
        Some(queue),
        &["--task-timeout-secs", "3"],
    );
    scenario.wait_for_first_commit();
    // SIGSTOP: the process and its connections stay, it just stops answering — the broker
    // never hands its tasks to anyone else; only the missing heartbeats tell.
    send_signal(&workers.0[0], "-STOP");
    assert!(
        running.try_wait().unwrap().is_none(),
        "the run ended before the stop: give it more data"
    );
    let record = finish_build(running);
    assert_eq!(record["success"], true, "{record:#}");
    assert_same_tables(embedded, clustered).await;
    drop(workers); // SIGKILL ends the stopped worker too
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_joins_mid_run_takes_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let project = medallion(dir.path(), "30000");
    let clustered = dir.path().join("clustered");
    let queue = unique_queue("tasks");
    let _first = Workers::start(1, "early", &queue);
    let mut running = start_build(&project, &clustered, Some(&queue));
    wait_for(&clustered.join("bronze/bronze_users/_delta_log"));
    assert!(
        running.try_wait().unwrap().is_none(),
        "the run ended before the second worker joined: give it more data"
    );
    let _second = Workers::start(1, "late", &queue);
    let record = finish_build(running);
    assert_eq!(record["success"], true);
    let used = workers_used(&record);
    assert!(
        used.contains("late-0"),
        "the worker that joined took no task: {used:?}"
    );
}
