//! The scheduler driven with scripted task results and a made-up clock: no queue, no workers,
//! no waiting.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use strata_core::manifest::ResourceType;
use strata_proto::v1::{FailureClass, ShuffleLocation, Task, TaskKind, TaskResult};

use super::{Action, Completion, Job, PUBLISH_TRIES, Policy, Scheduler};
use crate::run::{NodeResult, NodeStatus, RunEvent};

const RUN: &str = "run-1";
const BACKOFF: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(10);

fn job(id: &str, waits_for: &[&str]) -> Job {
    Job {
        unique_id: id.to_string(),
        name: id.to_string(),
        resource_type: ResourceType::Model,
        relation_name: None,
        retries: None,
        waits_for: waits_for.iter().map(|id| id.to_string()).collect(),
    }
}

fn policy() -> Policy {
    Policy {
        threads: 4,
        fail_fast: false,
        retries: 2,
        retry_backoff: BACKOFF,
        task_timeout: TIMEOUT,
    }
}

fn task(id: &str, node: &str) -> Task {
    Task {
        run_id: RUN.to_string(),
        task_id: id.to_string(),
        node_unique_id: node.to_string(),
        kind: TaskKind::Model as i32,
        ..Task::default()
    }
}

fn map_task(id: &str, node: &str, partition: u32) -> Task {
    Task {
        kind: TaskKind::ShuffleMap as i32,
        stage: 0,
        partition,
        ..task(id, node)
    }
}

fn ok(task_id: &str, attempt: u32) -> TaskResult {
    TaskResult {
        run_id: RUN.to_string(),
        task_id: task_id.to_string(),
        attempt,
        worker_id: String::from("worker-a"),
        rows: 10,
        ..TaskResult::default()
    }
}

fn failed(task_id: &str, attempt: u32, class: FailureClass) -> TaskResult {
    TaskResult {
        failure_class: class as i32,
        error: String::from("scripted failure"),
        rows: 0,
        ..ok(task_id, attempt)
    }
}

fn location(map: u32, address: &str) -> ShuffleLocation {
    ShuffleLocation {
        stage: 0,
        map_partition: map,
        address: address.to_string(),
    }
}

/// The scheduler, its clock, and what it asked for since the last look.
struct Script {
    scheduler: Scheduler,
    now: Instant,
}

/// What one batch of actions held, apart from events.
#[derive(Debug, Default)]
struct Asked {
    plans: Vec<String>,
    publishes: Vec<(Task, u32)>,
    completions: Vec<Completion>,
    finished: Vec<NodeResult>,
}

impl Asked {
    fn published(&self) -> Vec<(String, u32)> {
        self.publishes
            .iter()
            .map(|(task, attempt)| (task.task_id.clone(), *attempt))
            .collect()
    }
}

impl Script {
    fn new(jobs: Vec<Job>, policy: Policy) -> Script {
        let mut scheduler = Scheduler::new(RUN, jobs, policy);
        scheduler.start();
        Script {
            scheduler,
            now: Instant::now(),
        }
    }

    fn asked(&mut self) -> Asked {
        let mut asked = Asked::default();
        while let Some(action) = self.scheduler.next_action() {
            match action {
                Action::Plan { node } => asked.plans.push(node),
                Action::Publish { task, attempt } => asked.publishes.push((*task, attempt)),
                Action::Complete(completion) => asked.completions.push(*completion),
                Action::Emit(event) => {
                    if let RunEvent::Finished { result, .. } = *event {
                        asked.finished.push(result);
                    }
                }
            }
        }
        asked
    }

    fn plan(&mut self, node: &str, tasks: Vec<Task>, later: Vec<Vec<Task>>) {
        self.scheduler
            .planned(node, Ok((tasks, VecDeque::from(later))), self.now);
    }

    fn report(&mut self, result: TaskResult) {
        self.scheduler.task_result(result, self.now);
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.scheduler.tick(self.now);
    }

    /// Records the completion as the driver would after a successful commit (or a failure).
    fn commit(&mut self, completion: &Completion) {
        let status = if completion.class == FailureClass::Unspecified {
            NodeStatus::Success
        } else {
            NodeStatus::Error
        };
        let record = NodeResult {
            status,
            attempts: completion.progress.attempts,
            error: (!completion.result.error.is_empty()).then(|| completion.result.error.clone()),
            ..super::skipped(&job(&completion.node, &[]), String::new())
        };
        self.scheduler.completed(record);
    }
}

#[test]
fn a_transient_failure_is_retried_after_the_backoff_and_then_succeeds() {
    let mut script = Script::new(vec![job("m", &[])], policy());
    assert_eq!(script.asked().plans, ["m"]);
    script.plan("m", vec![task("t1", "m")], vec![]);
    assert_eq!(script.asked().published(), [("t1".to_string(), 1)]);

    script.report(failed("t1", 1, FailureClass::Transient));
    assert!(
        script.asked().publishes.is_empty(),
        "retried before the backoff"
    );
    script.advance(BACKOFF / 2);
    assert!(
        script.asked().publishes.is_empty(),
        "retried before the backoff"
    );
    assert!(script.scheduler.next_wake(script.now) <= script.now + BACKOFF / 2);
    script.advance(BACKOFF / 2);
    assert_eq!(script.asked().published(), [("t1".to_string(), 2)]);

    // A late result of the first attempt changes nothing.
    script.report(ok("t1", 1));
    assert!(script.asked().completions.is_empty());
    script.report(ok("t1", 2));
    let asked = script.asked();
    let [completion] = asked.completions.as_slice() else {
        panic!("one completion expected, got {asked:?}");
    };
    assert_eq!(completion.class, FailureClass::Unspecified);
    assert_eq!(completion.result.rows, 10);
    assert_eq!(completion.progress.attempts, 2);
    script.commit(completion);
    assert_eq!(script.asked().finished[0].status, NodeStatus::Success);
    assert!(script.scheduler.is_done());
}

#[test]
fn exhausted_retries_fail_the_node_and_skip_its_dependants() {
    let mut script = Script::new(vec![job("a", &[]), job("b", &["a"])], policy());
    assert_eq!(script.asked().plans, ["a"], "b waits for a");
    script.plan("a", vec![task("t1", "a")], vec![]);
    script.asked();
    for attempt in 1..=2 {
        script.report(failed("t1", attempt, FailureClass::Transient));
        script.advance(BACKOFF * 2u32.pow(attempt - 1));
        assert_eq!(
            script.asked().published(),
            [("t1".to_string(), attempt + 1)]
        );
    }
    script.report(failed("t1", 3, FailureClass::Transient));
    let asked = script.asked();
    let [completion] = asked.completions.as_slice() else {
        panic!("one completion expected, got {asked:?}");
    };
    assert_eq!(completion.class, FailureClass::Transient);
    assert_eq!(completion.result.error, "scripted failure");
    script.commit(completion);
    let finished = script.asked().finished;
    assert_eq!(finished.len(), 2);
    assert_eq!(finished[0].status, NodeStatus::Error);
    assert_eq!(finished[1].unique_id, "b");
    assert_eq!(finished[1].status, NodeStatus::Skipped);
    assert!(script.scheduler.is_done());
}

#[test]
fn an_interrupted_attempt_is_handed_on_at_once_without_using_a_retry() {
    let mut script = Script::new(vec![job("m", &[])], policy());
    script.asked();
    script.plan("m", vec![task("t1", "m")], vec![]);
    script.asked();
    // Three drains in a row: more than the two retries the policy allows.
    for attempt in 1..=3 {
        script.report(TaskResult {
            rows: 7,
            quarantined_rows: 1,
            ..failed("t1", attempt, FailureClass::Interrupted)
        });
        script.advance(Duration::ZERO);
        assert_eq!(
            script.asked().published(),
            [("t1".to_string(), attempt + 1)],
            "handed on without a backoff"
        );
    }
    // The retries are all still there.
    for attempt in 4..=5 {
        script.report(failed("t1", attempt, FailureClass::Transient));
        script.advance(BACKOFF * 8);
        assert_eq!(
            script.asked().published(),
            [("t1".to_string(), attempt + 1)]
        );
    }
    script.report(ok("t1", 6));
    let asked = script.asked();
    let [completion] = asked.completions.as_slice() else {
        panic!("one completion expected, got {asked:?}");
    };
    assert_eq!(completion.class, FailureClass::Unspecified);
    assert_eq!(
        completion.result.rows,
        10 + 3 * 7,
        "the drained attempts' rows count"
    );
    assert_eq!(completion.result.quarantined_rows, 3);
}

#[test]
fn a_user_error_is_not_retried() {
    let mut script = Script::new(vec![job("m", &[])], policy());
    script.asked();
    script.plan("m", vec![task("t1", "m")], vec![]);
    script.asked();
    script.report(failed("t1", 1, FailureClass::User));
    let asked = script.asked();
    assert!(asked.publishes.is_empty());
    assert_eq!(asked.completions[0].class, FailureClass::User);
}

#[test]
fn a_lost_shuffle_output_runs_its_map_task_again_before_the_reader() {
    let mut script = Script::new(vec![job("m", &[])], policy());
    script.asked();
    let maps = vec![map_task("m0", "m", 0), map_task("m1", "m", 1)];
    script.plan("m", maps, vec![vec![task("r0", "m")]]);
    assert_eq!(script.asked().publishes.len(), 2);
    let mut first = ok("m0", 1);
    first.shuffle_outputs = vec![location(0, "a:1")];
    let mut second = ok("m1", 1);
    second.shuffle_outputs = vec![location(1, "b:1")];
    script.report(first);
    script.report(second);
    let asked = script.asked();
    assert_eq!(asked.published(), [("r0".to_string(), 1)]);
    assert_eq!(asked.publishes[0].0.shuffle_locations.len(), 2);

    // The reader cannot fetch map 1: its worker is gone.
    let mut lost = failed("r0", 1, FailureClass::Transient);
    lost.lost_shuffle_outputs = vec![location(1, "b:1")];
    script.report(lost);
    let asked = script.asked();
    assert_eq!(
        asked.published(),
        [("m1".to_string(), 2)],
        "only the lost map runs again, the reader waits"
    );
    let mut again = ok("m1", 2);
    again.shuffle_outputs = vec![location(1, "c:1")];
    script.report(again);
    let asked = script.asked();
    assert_eq!(asked.published(), [("r0".to_string(), 2)]);
    let addresses: BTreeSet<&str> = asked.publishes[0]
        .0
        .shuffle_locations
        .iter()
        .map(|location| location.address.as_str())
        .collect();
    assert_eq!(addresses, BTreeSet::from(["a:1", "c:1"]));

    script.report(ok("r0", 2));
    let asked = script.asked();
    let completion = &asked.completions[0];
    assert_eq!(completion.class, FailureClass::Unspecified);
    let kinds: Vec<&str> = completion
        .progress
        .stages
        .iter()
        .map(|stage| stage.kind.as_str())
        .collect();
    assert_eq!(kinds, ["map", "reduce"]);
    let expected: BTreeSet<String> = ["a:1", "b:1", "c:1"].map(String::from).into();
    assert_eq!(script.scheduler.shuffle_addresses(), &expected);
}

#[test]
fn a_silent_worker_is_taken_for_lost_and_its_task_goes_again() {
    let mut script = Script::new(vec![job("m", &[])], policy());
    script.asked();
    script.plan("m", vec![task("t1", "m")], vec![]);
    script.asked();
    // Waiting in the queue is not silence: no worker took it yet.
    script.advance(TIMEOUT * 3);
    assert!(script.asked().publishes.is_empty());
    script.scheduler.heartbeat("t1", 1, script.now);
    script.advance(TIMEOUT / 2);
    script.scheduler.heartbeat("t1", 1, script.now);
    script.advance(TIMEOUT / 2);
    assert!(
        script.asked().publishes.is_empty(),
        "heartbeats keep it alive"
    );
    script.advance(TIMEOUT);
    assert!(
        script.asked().publishes.is_empty(),
        "silent, then the backoff"
    );
    script.advance(BACKOFF);
    assert_eq!(script.asked().published(), [("t1".to_string(), 2)]);
    // A heartbeat of the silent attempt does not revive it.
    script.scheduler.heartbeat("t1", 1, script.now);
    script.report(ok("t1", 2));
    assert_eq!(script.asked().completions.len(), 1);
}

#[test]
fn cancelling_mid_stage_ends_every_unfinished_node_and_commits_nothing() {
    let mut script = Script::new(vec![job("a", &[]), job("b", &["a"])], policy());
    script.asked();
    script.plan("a", vec![task("t1", "a"), task("t2", "a")], vec![]);
    script.asked();
    script.report(ok("t1", 1));
    script.scheduler.cancel();
    script.report(ok("t2", 1));
    script.advance(TIMEOUT * 2);
    let asked = script.asked();
    assert!(asked.completions.is_empty() && asked.publishes.is_empty() && asked.plans.is_empty());
    let statuses: Vec<(String, NodeStatus)> = asked
        .finished
        .iter()
        .map(|result| (result.unique_id.clone(), result.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("a".to_string(), NodeStatus::Cancelled),
            ("b".to_string(), NodeStatus::Cancelled)
        ]
    );
    assert!(script.scheduler.is_done());
}

#[test]
fn a_failed_publish_is_tried_again_after_a_backoff() {
    let mut script = Script::new(vec![job("m", &[])], policy());
    script.asked();
    script.plan("m", vec![task("t1", "m")], vec![]);
    script.asked();
    script
        .scheduler
        .publish_failed("t1", 1, "connection reset", script.now);
    assert!(!script.scheduler.is_done(), "the run must not end or hang");
    assert!(script.scheduler.next_wake(script.now) <= script.now + BACKOFF);
    script.advance(BACKOFF);
    assert_eq!(script.asked().published(), [("t1".to_string(), 1)]);
    script.report(ok("t1", 1));
    assert_eq!(
        script.asked().completions[0].class,
        FailureClass::Unspecified
    );
}

#[test]
fn publishes_that_keep_failing_fail_the_node_with_the_brokers_error() {
    let mut script = Script::new(vec![job("m", &[])], policy());
    script.asked();
    script.plan("m", vec![task("t1", "m")], vec![]);
    script.asked();
    for number in 1..PUBLISH_TRIES {
        script
            .scheduler
            .publish_failed("t1", 1, "connection reset", script.now);
        script.advance(BACKOFF * 2u32.pow(number - 1));
        assert_eq!(script.asked().published(), [("t1".to_string(), 1)]);
    }
    script
        .scheduler
        .publish_failed("t1", 1, "connection reset", script.now);
    let asked = script.asked();
    let completion = &asked.completions[0];
    assert_eq!(completion.class, FailureClass::Transient);
    assert!(
        completion.result.error.contains("cannot publish task t1")
            && completion.result.error.contains("connection reset"),
        "{}",
        completion.result.error
    );
    script.commit(completion);
    assert_eq!(script.asked().finished[0].status, NodeStatus::Error);
    assert!(script.scheduler.is_done());
}

#[test]
fn threads_bound_the_nodes_in_flight_and_fail_fast_skips_the_rest() {
    let mut policy = policy();
    policy.threads = 1;
    policy.fail_fast = true;
    let mut script = Script::new(vec![job("a", &[]), job("b", &[]), job("c", &[])], policy);
    assert_eq!(script.asked().plans, ["a"]);
    script
        .scheduler
        .planned("a", Err(String::from("cannot plan")), script.now);
    let finished = script.asked().finished;
    let statuses: Vec<NodeStatus> = finished.iter().map(|result| result.status).collect();
    assert_eq!(
        statuses,
        [NodeStatus::Error, NodeStatus::Skipped, NodeStatus::Skipped]
    );
    assert!(script.scheduler.is_done());
}
