//! The job-queue conformance suite against the real RabbitMQ (`STRATA_AMQP_URL`, default the
//! local broker at 127.0.0.1:5672 with guest/guest; scripts/test.sh starts it when it is not
//! running). Queue names are unique per run and deleted afterwards.

use strata_amqp::AmqpQueue;
use strata_core::queue::{JobQueue, Message, conformance};

fn broker_url() -> String {
    std::env::var("STRATA_AMQP_URL")
        .unwrap_or_else(|_| String::from("amqp://guest:guest@127.0.0.1:5672/%2f"))
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("strata-test.{name}.{}.{nanos}", std::process::id())
}

async fn connect() -> AmqpQueue {
    AmqpQueue::connect(&broker_url()).await.unwrap_or_else(|err| {
        panic!(
            "RabbitMQ is needed at {}: {err} (scripts/test.sh starts it; or set STRATA_AMQP_URL)",
            broker_url()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_queue_conforms() {
    let queue = connect().await;
    let name = unique("conformance");
    conformance::run_all(&queue, &name).await;
    let names = conformance::queue_names(&name);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    queue.delete_queues(&names).await.unwrap();
    queue.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_counts_ready_messages() {
    let queue = connect().await;
    let name = unique("depth");
    for index in 0..3u8 {
        queue
            .publish(&name, Message::new(vec![index]))
            .await
            .unwrap();
    }
    assert_eq!(queue.depth(&name).await.unwrap(), 3);
    queue.delete_queues(&[&name]).await.unwrap();
    queue.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_a_clear_error() {
    let err = match AmqpQueue::connect("amqp://guest:secret@127.0.0.1:1/%2f").await {
        Ok(_) => panic!("port 1 has no broker"),
        Err(err) => err.to_string(),
    };
    assert!(
        err.contains("connecting to amqp://guest:***@127.0.0.1:1"),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
}
