//! The worker's side of shuffles: map tasks write one Arrow IPC file per reduce partition
//! into the [`ShuffleStore`], and the [`ShuffleFlightService`] serves them over Arrow Flight
//! (`DoGet` with a [`ShuffleTicket`]) to the reduce tasks of other workers — only to callers
//! that prove the cluster secret. How plans are cut into stages and read back is in
//! `strata_engine::{stages, exchange}`.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::metrics::Time;
use datafusion::physical_plan::repartition::{BatchPartitioner, RepartitionExec};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::{Stream, StreamExt, TryStreamExt};
use strata_engine::exchange::{AUTHORIZATION, ClusterSecret, REMOVE_RUN, ShuffleTicket};

/// Where a worker keeps the map outputs it wrote:
/// `<root>/<run id>/<node>/<stage>/<map>/<partition>.arrow`, where the shuffle's name is
/// `<run id>/<node>` (stages are numbered per model).
#[derive(Debug, Clone)]
pub struct ShuffleStore {
    root: PathBuf,
}

impl ShuffleStore {
    /// A store under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> ShuffleStore {
        ShuffleStore { root: root.into() }
    }

    fn map_folder(&self, shuffle: &str, stage: u32, map: u32) -> PathBuf {
        let mut folder = self.root.clone();
        for part in shuffle.splitn(2, '/') {
            folder.push(safe(part));
        }
        folder.join(stage.to_string()).join(map.to_string())
    }

    fn file(&self, ticket: &ShuffleTicket) -> PathBuf {
        self.map_folder(&ticket.run, ticket.stage, ticket.map)
            .join(format!("{}.arrow", ticket.partition))
    }

    /// Removes every map output of a run (every shuffle named `<run>/…`).
    pub fn remove_run(&self, run: &str) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.root.join(safe(run))) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}

/// A run id as a single path component (no separators, no `..`).
fn safe(run: &str) -> String {
    run.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What a map task wrote: rows and bytes over all its partition files.
#[derive(Debug, Default, Clone, Copy)]
pub struct MapOutput {
    /// Rows written.
    pub rows: i64,
    /// Bytes written.
    pub bytes: i64,
}

/// Runs map task `map` of `stage`: the repartition's input for partition `map`, split by the
/// repartition's hash into one IPC file per output partition (every file is written, empty
/// ones too, so a reduce task finds all it asks for).
///
/// # Errors
/// Returns an error when the plan is not a hash repartition, or execution or writing fails.
pub async fn run_map(
    plan: Arc<dyn ExecutionPlan>,
    ctx: Arc<TaskContext>,
    store: &ShuffleStore,
    run: &str,
    stage: u32,
    map: u32,
) -> Result<MapOutput> {
    let Some(repartition) = plan.downcast_ref::<RepartitionExec>() else {
        return Err(DataFusionError::Internal(String::from(
            "a map stage must be a hash repartition",
        )));
    };
    let partitioning = repartition.partitioning().clone();
    let partitions = partitioning.partition_count();
    let input = repartition.input().clone();
    let inputs = input.output_partitioning().partition_count();
    let schema = input.schema();
    let folder = store.map_folder(run, stage, map);
    std::fs::create_dir_all(&folder)?;
    let mut writers = (0..partitions)
        .map(|partition| {
            let file = std::fs::File::create(folder.join(format!("{partition}.arrow")))?;
            Ok(FileWriter::try_new(std::io::BufWriter::new(file), &schema)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut partitioner =
        BatchPartitioner::try_new(partitioning, Time::new(), map as usize, inputs)?;
    let mut stream = input.execute(map as usize, ctx)?;
    let mut output = MapOutput::default();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        output.rows += i64::try_from(batch.num_rows()).unwrap_or(i64::MAX);
        partitioner.partition(
            batch,
            |partition, part| Ok(writers[partition].write(&part)?),
        )?;
    }
    for writer in &mut writers {
        writer.finish()?;
    }
    for partition in 0..partitions {
        output.bytes +=
            i64::try_from(std::fs::metadata(folder.join(format!("{partition}.arrow")))?.len())
                .unwrap_or(i64::MAX);
    }
    Ok(output)
}

/// Serves a [`ShuffleStore`] over Arrow Flight: `DoGet` with a [`ShuffleTicket`] streams one
/// partition file; the action `remove_run` (body: the run id) deletes a run's outputs.
#[derive(Debug, Clone)]
pub struct ShuffleFlightService {
    store: Arc<ShuffleStore>,
    secret: ClusterSecret,
    served: Arc<std::sync::Mutex<std::collections::VecDeque<ServedRequest>>>,
}

/// A `DoGet` the server answered: the ticket and the trace context it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedRequest {
    /// The ticket.
    pub ticket: String,
    /// The `traceparent` metadata, when the client sent one.
    pub traceparent: Option<String>,
}

/// How many recent requests [`ShuffleFlightService::recent_requests`] keeps.
const RECENT_REQUESTS: usize = 256;

impl ShuffleFlightService {
    /// A service over `store`, answering only calls that carry `secret`.
    pub fn new(store: Arc<ShuffleStore>, secret: ClusterSecret) -> ShuffleFlightService {
        ShuffleFlightService {
            store,
            secret,
            served: Arc::default(),
        }
    }

    /// The most recent `DoGet` requests, oldest first (for diagnostics: which run's trace
    /// fetched what).
    pub fn recent_requests(&self) -> Vec<ServedRequest> {
        self.served
            .lock()
            .map(|served| served.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Serves on `listener` until `shutdown` resolves.
    ///
    /// # Errors
    /// Returns the transport's error.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> std::result::Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(FlightServiceServer::new(self))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                shutdown,
            )
            .await
    }
}

/// Refuses a call that does not carry the cluster secret.
fn authenticate<T>(
    secret: &ClusterSecret,
    request: &tonic::Request<T>,
) -> std::result::Result<(), tonic::Status> {
    let header = request
        .metadata()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if secret.admits(header) {
        Ok(())
    } else {
        Err(tonic::Status::unauthenticated(
            "this Flight server serves only its cluster: send the cluster secret as 'authorization: Bearer <secret>'",
        ))
    }
}

type Streamed<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, tonic::Status>> + Send>>;

fn unimplemented<T>(what: &str) -> std::result::Result<T, tonic::Status> {
    Err(tonic::Status::unimplemented(format!(
        "{what}: a Strata worker serves only DoGet of shuffle tickets and the remove_run action"
    )))
}

/// Reads an IPC file in a blocking thread and hands its batches over a bounded channel, so a
/// slow reader holds back the disk reads instead of buffering the file in memory.
fn read_ipc(
    path: PathBuf,
    ticket: &ShuffleTicket,
) -> std::result::Result<(SchemaRef, Streamed<RecordBatch>), tonic::Status> {
    let file = std::fs::File::open(&path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => tonic::Status::not_found(format!(
            "no shuffle output {ticket} on this worker (never written here, or its run ended)"
        )),
        _ => tonic::Status::internal(err.to_string()),
    })?;
    let reader = FileReader::try_new(std::io::BufReader::new(file), None)
        .map_err(|err| tonic::Status::internal(err.to_string()))?;
    let schema = reader.schema();
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        for batch in reader {
            let item = batch.map_err(|err| tonic::Status::internal(err.to_string()));
            if sender.blocking_send(item).is_err() {
                break;
            }
        }
    });
    Ok((schema, Box::pin(tokio_stream_from(receiver))))
}

fn tokio_stream_from<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[tonic::async_trait]
impl FlightService for ShuffleFlightService {
    type HandshakeStream = Streamed<HandshakeResponse>;
    type ListFlightsStream = Streamed<FlightInfo>;
    type DoGetStream = Streamed<FlightData>;
    type DoPutStream = Streamed<PutResult>;
    type DoExchangeStream = Streamed<FlightData>;
    type DoActionStream = Streamed<arrow_flight::Result>;
    type ListActionsStream = Streamed<ActionType>;

    async fn handshake(
        &self,
        _request: tonic::Request<tonic::Streaming<HandshakeRequest>>,
    ) -> std::result::Result<tonic::Response<Self::HandshakeStream>, tonic::Status> {
        unimplemented("Handshake")
    }

    async fn list_flights(
        &self,
        _request: tonic::Request<Criteria>,
    ) -> std::result::Result<tonic::Response<Self::ListFlightsStream>, tonic::Status> {
        unimplemented("ListFlights")
    }

    async fn get_flight_info(
        &self,
        _request: tonic::Request<FlightDescriptor>,
    ) -> std::result::Result<tonic::Response<FlightInfo>, tonic::Status> {
        unimplemented("GetFlightInfo")
    }

    async fn poll_flight_info(
        &self,
        _request: tonic::Request<FlightDescriptor>,
    ) -> std::result::Result<tonic::Response<PollInfo>, tonic::Status> {
        unimplemented("PollFlightInfo")
    }

    async fn get_schema(
        &self,
        _request: tonic::Request<FlightDescriptor>,
    ) -> std::result::Result<tonic::Response<SchemaResult>, tonic::Status> {
        unimplemented("GetSchema")
    }

    async fn do_get(
        &self,
        request: tonic::Request<Ticket>,
    ) -> std::result::Result<tonic::Response<Self::DoGetStream>, tonic::Status> {
        authenticate(&self.secret, &request)?;
        let text = String::from_utf8_lossy(&request.get_ref().ticket).into_owned();
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        // The server span: the child of the reducer's client span, for as long as the
        // response streams.
        let span = tracing::info_span!(
            "flight.do_get",
            otel.name = "arrow.flight.protocol.FlightService/DoGet",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = "arrow.flight.protocol.FlightService",
            rpc.method = "DoGet",
            strata.shuffle.ticket = %text,
        );
        if let Some(parent) = &traceparent {
            strata_telemetry::set_remote_parent(&span, parent);
        }
        span.in_scope(
            || tracing::debug!(ticket = %text, traceparent = ?traceparent, "shuffle DoGet"),
        );
        if let Ok(mut served) = self.served.lock() {
            if served.len() == RECENT_REQUESTS {
                served.pop_front();
            }
            served.push_back(ServedRequest {
                ticket: text.clone(),
                traceparent,
            });
        }
        let ticket = ShuffleTicket::parse(&text).ok_or_else(|| {
            tonic::Status::invalid_argument(format!(
                "'{text}' is not a shuffle ticket (run/stage/map/partition)"
            ))
        })?;
        let (schema, batches) = read_ipc(self.store.file(&ticket), &ticket)?;
        let batches = batches.map_err(|status| FlightError::Tonic(Box::new(status)));
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(|err| tonic::Status::internal(err.to_string()))
            .map(move |data| {
                // The span ends with the last message sent.
                strata_telemetry::end_now(&span);
                data
            });
        Ok(tonic::Response::new(Box::pin(data)))
    }

    async fn do_put(
        &self,
        _request: tonic::Request<tonic::Streaming<FlightData>>,
    ) -> std::result::Result<tonic::Response<Self::DoPutStream>, tonic::Status> {
        unimplemented("DoPut")
    }

    async fn do_exchange(
        &self,
        _request: tonic::Request<tonic::Streaming<FlightData>>,
    ) -> std::result::Result<tonic::Response<Self::DoExchangeStream>, tonic::Status> {
        unimplemented("DoExchange")
    }

    async fn do_action(
        &self,
        request: tonic::Request<Action>,
    ) -> std::result::Result<tonic::Response<Self::DoActionStream>, tonic::Status> {
        authenticate(&self.secret, &request)?;
        let action = request.into_inner();
        if action.r#type != REMOVE_RUN {
            return unimplemented(&format!("action '{}'", action.r#type));
        }
        let run = String::from_utf8_lossy(&action.body).into_owned();
        self.store
            .remove_run(&run)
            .map_err(|err| tonic::Status::internal(err.to_string()))?;
        Ok(tonic::Response::new(Box::pin(futures::stream::empty())))
    }

    async fn list_actions(
        &self,
        request: tonic::Request<Empty>,
    ) -> std::result::Result<tonic::Response<Self::ListActionsStream>, tonic::Status> {
        authenticate(&self.secret, &request)?;
        let action = ActionType {
            r#type: REMOVE_RUN.to_string(),
            description: String::from("delete the shuffle outputs of the run named in the body"),
        };
        Ok(tonic::Response::new(Box::pin(futures::stream::iter([Ok(
            action,
        )]))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_become_single_path_components() {
        assert_eq!(safe("../run/1"), "___run_1");
    }
}

#[cfg(test)]
mod stage_tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::physical_plan::{ExecutionPlanProperties, displayable};
    use strata_proto::v1::{FileFormat, FileInput, TaskInput, task_input};

    use strata_engine::exchange::ReaderContext;
    use strata_engine::{EngineConfig, plan_shuffle};

    fn write_parquet(path: &std::path::Path, values: &[i64]) {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(values.to_vec()))],
        )
        .unwrap();
        let file = std::fs::File::create(path).unwrap();
        let mut writer =
            datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    #[tokio::test]
    async fn map_tasks_split_the_input_between_them() {
        let dir = tempfile::tempdir().unwrap();
        write_parquet(&dir.path().join("a.parquet"), &[1, 2, 3, 4]);
        write_parquet(&dir.path().join("b.parquet"), &[5, 6, 7]);
        let location = format!("{}/*.parquet", dir.path().display());
        let inputs = vec![TaskInput {
            schema: String::from("raw"),
            name: String::from("t"),
            source: Some(task_input::Source::Files(FileInput {
                location,
                format: FileFormat::Parquet as i32,
                ..FileInput::default()
            })),
        }];
        let staged = plan_shuffle(
            &EngineConfig::default(),
            &inputs,
            "select k, row_number() over (partition by k % 2 order by k) as position from raw.t",
            2,
        )
        .await
        .unwrap()
        .expect("a window over partitions needs a shuffle");
        assert_eq!(staged.map_stages.len(), 1);
        let (plan, maps) = &staged.map_stages[0];
        assert_eq!(*maps, 2, "one map task per file");
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.sql("set datafusion.execution.enable_file_stream_work_stealing = false")
            .await
            .unwrap();
        let context = ReaderContext {
            run: String::from("run/node"),
            ..ReaderContext::default()
        };
        let decoded = strata_engine::stages::decode(plan, &ctx.task_ctx(), context).unwrap();
        let input = decoded.children()[0].clone();
        assert_eq!(
            input.output_partitioning().partition_count(),
            2,
            "{}",
            displayable(decoded.as_ref()).indent(true)
        );
        let store = super::ShuffleStore::new(dir.path().join("shuffle"));
        let mut rows = Vec::new();
        for map in 0..2 {
            let output =
                super::run_map(decoded.clone(), ctx.task_ctx(), &store, "run/node", 0, map)
                    .await
                    .unwrap();
            rows.push(output.rows);
        }
        assert_eq!(
            rows,
            [4, 3],
            "{}",
            displayable(decoded.as_ref()).indent(true)
        );
    }
}

#[cfg(test)]
mod flight_tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::ipc::writer::FileWriter;
    use datafusion::arrow::record_batch::RecordBatch;
    use futures::TryStreamExt;

    use strata_engine::exchange::{ClusterSecret, FetchSettings, ShuffleTicket, fetch};

    use super::{ServedRequest, ShuffleFlightService, ShuffleStore};

    fn secret() -> ClusterSecret {
        ClusterSecret::new("flight-test-secret-0123456789").unwrap()
    }

    fn settings(secret: Option<ClusterSecret>) -> FetchSettings {
        FetchSettings {
            timeout: std::time::Duration::from_secs(5),
            secret,
        }
    }

    #[tokio::test]
    async fn fetches_stream_over_flight_with_their_trace_context() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ShuffleStore::new(dir.path()));
        let ticket = ShuffleTicket {
            run: String::from("run-9/model.p.m"),
            stage: 0,
            map: 1,
            partition: 2,
        };
        let file = store.file(&ticket);
        let store_file = file.clone();
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let mut writer =
            FileWriter::try_new(std::fs::File::create(&file).unwrap(), &schema).unwrap();
        for start in [0i64, 100] {
            let values: Vec<i64> = (start..start + 100).collect();
            let batch =
                RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(values))])
                    .unwrap();
            writer.write(&batch).unwrap();
        }
        writer.finish().unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let service = ShuffleFlightService::new(store, secret());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(service.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let batches: Vec<RecordBatch> = fetch(
            address.clone(),
            traceparent.to_string(),
            &settings(Some(secret())),
            ticket.clone(),
        )
        .try_collect()
        .await
        .unwrap();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 200);
        assert_eq!(
            service.recent_requests(),
            [ServedRequest {
                ticket: ticket.to_string(),
                traceparent: Some(traceparent.to_string()),
            }]
        );
        // A missing output is a fetch error naming what was lost.
        let missing = ShuffleTicket {
            partition: 7,
            ..ticket.clone()
        };
        let err = fetch(
            address.clone(),
            String::new(),
            &settings(Some(secret())),
            missing,
        )
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
        let lost = strata_engine::exchange::find_fetch_error(&err).expect("a ShuffleFetchError");
        assert_eq!((lost.stage, lost.map), (0, 1));
        // A caller without the secret, or with another, reads nothing and deletes nothing.
        for wrong in [
            None,
            Some(ClusterSecret::new("another-secret-0123456789").unwrap()),
        ] {
            let err = fetch(
                address.clone(),
                String::new(),
                &settings(wrong.clone()),
                ticket.clone(),
            )
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
            assert!(err.to_string().contains("cluster secret"), "{err}");
            let refused =
                strata_engine::exchange::remove_run(&address, "run-9", &settings(wrong)).await;
            assert!(refused.is_err());
            assert!(
                store_file.exists(),
                "an unauthenticated remove_run deleted outputs"
            );
        }
        strata_engine::exchange::remove_run(&address, "run-9", &settings(Some(secret())))
            .await
            .unwrap();
        assert!(!store_file.exists());
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
