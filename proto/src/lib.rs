//! Strata's wire types, generated from `strata/v1/*.proto`. Domain types live in
//! `strata-core`; conversions between the two live there too.

#![warn(missing_docs)]

/// Package `strata.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/strata.v1.rs"));

    /// The encoded file descriptor set of package `strata.v1`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/strata_descriptor.bin"));
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::v1::{Task, TaskKind, TaskOutput};

    #[test]
    fn tasks_round_trip_through_bytes() {
        let task = Task {
            run_id: String::from("run-1"),
            task_id: String::from("t-7"),
            kind: TaskKind::Model as i32,
            node_unique_id: String::from("model.medallion.silver_events"),
            sql: String::from("select 1"),
            inputs: Vec::new(),
            output: Some(TaskOutput {
                table_uri: String::from("file:///w/silver/silver_events"),
                file_prefix: String::from("run-1-t-7-a1"),
                partition_by: vec![String::from("event_date")],
            }),
            incremental: None,
            reply_to: String::from("strata.results.run-1"),
            ..Task::default()
        };
        let bytes = task.encode_to_vec();
        assert_eq!(Task::decode(bytes.as_slice()).unwrap(), task);
        assert!(Task::decode(&b"\xff\xff\xff"[..]).is_err());
    }
}
