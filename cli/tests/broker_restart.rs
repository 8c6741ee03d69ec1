//! A run survives a restart of RabbitMQ (`rabbitmqctl stop_app` / `start_app`) in its middle:
//! the coordinator and the workers reconnect and the tables equal an embedded build's. In a
//! test binary of its own, since it takes the local broker away from everyone for a while.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Scenario, Workers, assert_same_tables, finish_build, start_build};

fn rabbitmqctl(command: &str) {
    let status = Command::new("rabbitmqctl")
        .args(["-q", command])
        .status()
        .unwrap_or_else(|err| panic!("rabbitmqctl is needed to restart the broker: {err}"));
    assert!(status.success(), "rabbitmqctl {command}: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_a_broker_restart() {
    let scenario = Scenario::new("60000");
    let (project, embedded, clustered, queue) = (
        &scenario.project,
        &scenario.embedded,
        &scenario.clustered,
        &scenario.queue,
    );
    let _workers = Workers::start(2, "r", queue);
    let mut running = start_build(project, clustered, Some(queue));
    scenario.wait_for_first_commit();
    rabbitmqctl("stop_app");
    assert!(
        running.try_wait().unwrap().is_none(),
        "the run ended before the broker stopped: give it more data"
    );
    std::thread::sleep(Duration::from_secs(2));
    rabbitmqctl("start_app");
    let record = finish_build(running);
    assert_eq!(record["success"], true);
    assert_same_tables(embedded, clustered).await;
}
