//! A run survives a restart of RabbitMQ (`rabbitmqctl stop_app` / `start_app`) in its middle:
//! the coordinator and the workers reconnect and the tables equal an embedded build's. In a
//! test binary of its own, since it takes the local broker away from everyone for a while.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    Workers, assert_same_tables, build, finish_build, medallion, start_build, unique_queue,
    wait_for,
};

fn rabbitmqctl(command: &str) {
    let status = Command::new("rabbitmqctl")
        .args(["-q", command])
        .status()
        .unwrap_or_else(|err| panic!("rabbitmqctl is needed to restart the broker: {err}"));
    assert!(status.success(), "rabbitmqctl {command}: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let project = medallion(dir.path(), "60000");
    let embedded = dir.path().join("embedded");
    let clustered = dir.path().join("clustered");
    build(&project, &embedded, None);
    let queue = unique_queue("tasks");
    let _workers = Workers::start(2, "r", &queue);
    let mut running = start_build(&project, &clustered, Some(&queue));
    wait_for(&clustered.join("bronze/bronze_users/_delta_log"));
    rabbitmqctl("stop_app");
    assert!(
        running.try_wait().unwrap().is_none(),
        "the run ended before the broker stopped: give it more data"
    );
    std::thread::sleep(Duration::from_secs(2));
    rabbitmqctl("start_app");
    let record = finish_build(running);
    assert_eq!(record["success"], true);
    assert_same_tables(&embedded, &clustered).await;
}
