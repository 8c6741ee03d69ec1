//! The distributed mode in one process: a coordinator service and two workers (each with its
//! Flight server) over the in-memory queue, started from settings as the role libraries start
//! them. A shuffled model's map and reduce stages run on the workers, the reducers fetching
//! map outputs over Flight with the cluster secret; the tables equal an embedded build's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use strata_coordinator::prepare::{RunSpec, prepare};
use strata_core::queue::MemoryQueue;
use strata_core::settings::Settings;
use strata_embedded::InProcessCluster;
use strata_tests::medallion_with_data;

fn cluster_settings(data_dir: &std::path::Path) -> Settings {
    let mut settings = Settings::default();
    settings.cluster.secret = Some("in-process-cluster-secret-0123".into());
    settings.worker.flight_listen = String::from("127.0.0.1:0");
    settings.worker.flight_advertise = Some(String::from("127.0.0.1"));
    settings.worker.slots = 2;
    settings.worker.id = Some(String::from("inproc"));
    settings.engine.memory_limit_mib = Some(512);
    settings.coordinator.listen = String::from("127.0.0.1:0");
    settings.coordinator.data_dir = data_dir.to_path_buf();
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_cluster_runs_shuffles_on_its_workers() {
    let (dir, project) = medallion_with_data("20000");
    let settings = cluster_settings(&dir.path().join("coordinator"));
    let cluster = InProcessCluster::start(&settings, 2).await.unwrap();
    assert!(cluster.address().port() > 0);

    let warehouse = dir.path().join("clustered");
    let spec = RunSpec {
        shuffle_partitions: 2,
        warehouse: Some(warehouse.display().to_string()),
        ..RunSpec::new(project.clone())
    };
    let prepared = prepare(&spec, &BTreeMap::new()).await.unwrap();
    let record = cluster
        .coordinator()
        .run(&prepared.request, "run-in-process-1", |_| {})
        .await
        .unwrap();
    let failures: Vec<_> = record
        .nodes
        .iter()
        .filter(|node| !node.status.is_ok())
        .map(|node| (node.name.clone(), node.error.clone()))
        .collect();
    assert!(record.success, "{failures:?}");
    let ids: BTreeSet<String> = cluster.worker_ids().into_iter().collect();
    let used: BTreeSet<String> = record
        .nodes
        .iter()
        .flat_map(|node| node.workers.iter().cloned())
        .collect();
    assert!(used.is_subset(&ids), "{used:?} not among {ids:?}");
    let shuffled = record
        .nodes
        .iter()
        .find(|node| node.stages.iter().any(|stage| stage.kind == "map"))
        .expect("a model ran as map and reduce stages");
    assert_eq!(shuffled.stages.last().unwrap().kind, "reduce");

    let embedded = RunSpec {
        warehouse: Some(dir.path().join("embedded").display().to_string()),
        ..RunSpec::new(project)
    };
    let prepared = prepare(&embedded, &BTreeMap::new()).await.unwrap();
    let reference = strata_embedded::run(&settings, &prepared.request, "run-embedded-1", |_| {})
        .await
        .unwrap();
    /// One value of every node of a run, by node id.
    fn per_node<T>(
        record: &strata_coordinator::RunRecord,
        value: impl Fn(&strata_coordinator::run::NodeResult) -> T,
    ) -> BTreeMap<String, T> {
        record
            .nodes
            .iter()
            .map(|node| (node.unique_id.clone(), value(node)))
            .collect()
    }
    let rows = |record| per_node(record, |node| node.rows);
    let failures = |record| per_node(record, |node| node.failures);
    assert_eq!(rows(&record), rows(&reference));
    assert_eq!(failures(&record), failures(&reference));
    assert!(
        failures(&reference)
            .values()
            .any(|failed| failed.unwrap_or(0) > 0),
        "the warn-level relationships test finds the events of unknown users"
    );
    cluster.stop().await.unwrap();
}

#[tokio::test]
async fn a_worker_without_the_cluster_secret_does_not_start() {
    let queue = Arc::new(MemoryQueue::new());
    let mut settings = Settings::default();
    settings.worker.flight_listen = String::from("127.0.0.1:0");
    let err = strata_worker::start_on(queue.clone(), &settings)
        .await
        .err()
        .expect("no secret, no worker");
    assert!(err.to_string().contains("no cluster secret"), "{err}");
    settings.cluster.secret = Some("short".into());
    let err = strata_worker::start_on(queue, &settings)
        .await
        .err()
        .expect("a weak secret, no worker");
    assert!(err.to_string().contains("at least 16 characters"), "{err}");
}

#[tokio::test]
async fn a_coordinator_without_the_cluster_secret_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.coordinator.listen = String::from("127.0.0.1:0");
    settings.coordinator.data_dir = dir.path().to_path_buf();
    let err =
        strata_coordinator::start_on(Arc::new(MemoryQueue::new()), &settings, &BTreeMap::new())
            .await
            .err()
            .expect("no secret, no coordinator");
    assert!(err.to_string().contains("no cluster secret"), "{err}");
}
