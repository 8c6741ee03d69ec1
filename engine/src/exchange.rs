//! The client side of shuffles: the reader node that fetches map outputs over Arrow Flight,
//! the tickets naming them, the cluster secret every Flight call carries, and the call that
//! asks a worker to delete a run's outputs. The server side is in the worker.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use tracing::Instrument;

use arrow_flight::error::FlightError;
use arrow_flight::{Action, FlightClient, Ticket};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{Stream, StreamExt, TryFutureExt, TryStreamExt};
use strata_proto::v1::ShuffleLocation;

/// The metadata key carrying the cluster secret on Flight calls (`Bearer <secret>`).
pub const AUTHORIZATION: &str = "authorization";

/// The shared secret of a cluster's workers and coordinator: every Flight call between them
/// carries it, and a worker's Flight server refuses calls without it. Its `Debug` output is
/// redacted, so it cannot reach a log line through a settings dump.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Arc<str>);

/// A cluster secret that cannot protect anything.
#[derive(Debug, thiserror::Error)]
#[error(
    "the cluster secret must have at least {MIN_SECRET_LENGTH} characters (it has {length}); generate one with `openssl rand -hex 32`"
)]
pub struct WeakSecret {
    /// The length of the rejected secret.
    pub length: usize,
}

/// Why the settings give no usable cluster secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Neither `cluster.secret` nor `cluster.secret_file` is set.
    #[error(
        "no cluster secret: set cluster.secret_file (or STRATA__CLUSTER__SECRET) to the secret the cluster's workers and coordinator share"
    )]
    Missing,
    /// The secret file cannot be read.
    #[error("cluster secret: {0}")]
    Unreadable(#[from] strata_core::settings::SettingsError),
    /// The secret is too short.
    #[error(transparent)]
    Weak(#[from] WeakSecret),
}

/// The shortest cluster secret accepted.
pub const MIN_SECRET_LENGTH: usize = 16;

impl ClusterSecret {
    /// A secret from its text (surrounding white space, such as a file's last newline, is
    /// dropped).
    ///
    /// # Errors
    /// Returns [`WeakSecret`] for a secret shorter than [`MIN_SECRET_LENGTH`].
    pub fn new(text: &str) -> std::result::Result<ClusterSecret, WeakSecret> {
        let text = text.trim();
        if text.chars().count() < MIN_SECRET_LENGTH {
            return Err(WeakSecret {
                length: text.chars().count(),
            });
        }
        Ok(ClusterSecret(Arc::from(text)))
    }

    /// The secret the settings name (`cluster.secret`, else the file `cluster.secret_file`),
    /// checked.
    ///
    /// # Errors
    /// Returns [`SecretError`] when none is set, its file cannot be read, or it is too short.
    pub fn from_settings(
        settings: &strata_core::settings::ClusterSettings,
    ) -> std::result::Result<ClusterSecret, SecretError> {
        let secret = settings.secret()?.ok_or(SecretError::Missing)?;
        Ok(ClusterSecret::new(secret.expose())?)
    }

    /// The value of the [`AUTHORIZATION`] metadata that proves the secret.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether `header` (an [`AUTHORIZATION`] value) proves this secret. The comparison takes
    /// the same time wherever the first difference is.
    pub fn admits(&self, header: Option<&str>) -> bool {
        let Some(presented) = header.and_then(|value| value.strip_prefix("Bearer ")) else {
            return false;
        };
        let (expected, presented) = (self.0.as_bytes(), presented.as_bytes());
        let differences = expected
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        differences == 0 && expected.len() == presented.len()
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// How a reader fetches map outputs from other workers.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// How long a fetch waits for the worker holding the output to answer (a stopped worker
    /// holds its connections open).
    pub timeout: std::time::Duration,
    /// The secret the calls carry.
    pub secret: Option<ClusterSecret>,
}

/// The fetch timeout of the default settings, without a secret.
impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            timeout: std::time::Duration::from_secs(
                strata_core::settings::WorkerSettings::default().fetch_timeout_secs,
            ),
            secret: None,
        }
    }
}

/// What a decoded reader needs to fetch: the run's shuffle, where each map output is, the
/// trace context and the fetch settings.
#[derive(Debug, Clone, Default)]
pub struct ReaderContext {
    /// The shuffle's name (`<run id>/<node>`, see [`crate::stages::shuffle_name`]).
    pub run: String,
    /// Where the map outputs of the task's stages are.
    pub locations: Vec<ShuffleLocation>,
    /// The task's W3C trace context, sent as Flight metadata.
    pub traceparent: String,
    /// Timeouts and the cluster secret.
    pub fetch: FetchSettings,
}

/// A Flight client of the worker at `address`, carrying the cluster secret when there is one.
async fn connect(
    address: &str,
    settings: &FetchSettings,
) -> std::result::Result<FlightClient, FlightError> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|err| FlightError::ExternalError(Box::new(err)))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(settings.timeout)
        .connect()
        .await
        .map_err(|err| FlightError::ExternalError(Box::new(err)))?;
    let mut client = FlightClient::new(channel);
    if let Some(secret) = &settings.secret {
        client.add_header(AUTHORIZATION, &secret.header_value())?;
    }
    Ok(client)
}

/// Names one partition of one map output: `shuffle/stage/map/partition`, where the shuffle is
/// `<run id>/<node>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShuffleTicket {
    /// The shuffle: `<run id>/<node>`.
    pub run: String,
    /// The map stage.
    pub stage: u32,
    /// The map task (its input partition).
    pub map: u32,
    /// The reduce partition.
    pub partition: u32,
}

impl fmt::Display for ShuffleTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.run, self.stage, self.map, self.partition
        )
    }
}

impl ShuffleTicket {
    /// Parses `run/stage/map/partition`.
    pub fn parse(text: &str) -> Option<ShuffleTicket> {
        let mut parts = text.rsplitn(4, '/');
        let partition = parts.next()?.parse().ok()?;
        let map = parts.next()?.parse().ok()?;
        let stage = parts.next()?.parse().ok()?;
        let run = parts.next()?.to_string();
        (!run.is_empty()).then_some(ShuffleTicket {
            run,
            stage,
            map,
            partition,
        })
    }
}

/// A map output that could not be fetched: its worker is gone or lost the file.
#[derive(Debug)]
pub struct ShuffleFetchError {
    /// The stage of the lost output.
    pub stage: u32,
    /// The map task that wrote it.
    pub map: u32,
    /// The worker that held it.
    pub address: String,
    /// What failed.
    pub reason: String,
}

impl fmt::Display for ShuffleFetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot fetch shuffle output of stage {} map {} from {}: {}",
            self.stage, self.map, self.address, self.reason
        )
    }
}

impl std::error::Error for ShuffleFetchError {}

/// Finds a [`ShuffleFetchError`] anywhere in a DataFusion error.
pub fn find_fetch_error(err: &DataFusionError) -> Option<&ShuffleFetchError> {
    match err {
        DataFusionError::External(inner) => {
            inner.downcast_ref::<ShuffleFetchError>().or_else(|| {
                inner
                    .downcast_ref::<DataFusionError>()
                    .and_then(find_fetch_error)
            })
        }
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            find_fetch_error(inner)
        }
        DataFusionError::Shared(inner) => find_fetch_error(inner),
        DataFusionError::ArrowError(_, _) => None,
        _ => None,
    }
}

/// Reads one stage's map outputs over Flight: partition *r* of this node is partition *r* of
/// every map output of the stage.
#[derive(Debug)]
pub struct ShuffleReaderExec {
    pub(crate) stage: u32,
    /// Map tasks of the stage: the reader checks it has the output of each, exactly once.
    pub(crate) maps: u32,
    pub(crate) schema: SchemaRef,
    /// The run's shuffle, where its outputs are and how to fetch them (empty while planning).
    context: ReaderContext,
    pub(crate) properties: Arc<PlanProperties>,
}

impl ShuffleReaderExec {
    /// A reader of `stage` (with `maps` map tasks) giving `partitions` partitions.
    pub(crate) fn new(
        stage: u32,
        maps: u32,
        schema: SchemaRef,
        partitions: usize,
        context: ReaderContext,
    ) -> ShuffleReaderExec {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ShuffleReaderExec {
            stage,
            maps,
            schema,
            context,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for ShuffleReaderExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ShuffleReaderExec: stage={}, partitions={}",
            self.stage,
            self.properties.output_partitioning().partition_count()
        )
    }
}

impl ExecutionPlan for ShuffleReaderExec {
    fn name(&self) -> &str {
        "ShuffleReaderExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        // One output per map task: the latest location of each (a map run again replaces its
        // lost output), and every map task must be there — reading fewer would lose rows.
        let mut by_map: std::collections::BTreeMap<u32, &ShuffleLocation> = Default::default();
        for location in self
            .context
            .locations
            .iter()
            .filter(|location| location.stage == self.stage)
        {
            by_map.insert(location.map_partition, location);
        }
        if by_map.len() != self.maps as usize || by_map.keys().any(|map| *map >= self.maps) {
            return Err(DataFusionError::Internal(format!(
                "stage {} has {} map outputs but the reader has locations for maps {:?}",
                self.stage,
                self.maps,
                by_map.keys().collect::<Vec<_>>()
            )));
        }
        let outputs: Vec<&ShuffleLocation> = by_map.into_values().collect();
        let streams: Vec<_> = outputs
            .into_iter()
            .map(|location| {
                fetch(
                    location.address.clone(),
                    self.context.traceparent.clone(),
                    &self.context.fetch,
                    ShuffleTicket {
                        run: self.context.run.clone(),
                        stage: self.stage,
                        map: location.map_partition,
                        partition: u32::try_from(partition).unwrap_or(u32::MAX),
                    },
                )
            })
            .collect();
        // Every map output at once; each stream is pulled only as fast as the plan consumes.
        let merged = futures::stream::select_all(streams);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            merged,
        )))
    }
}

/// The stream of one map output partition, fetched over Flight. Failures become
/// [`ShuffleFetchError`]s naming the output.
pub fn fetch(
    address: String,
    traceparent: String,
    settings: &FetchSettings,
    ticket: ShuffleTicket,
) -> Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>> {
    let lost = {
        let (address, stage, map) = (address.clone(), ticket.stage, ticket.map);
        move |reason: String| {
            DataFusionError::External(Box::new(ShuffleFetchError {
                stage,
                map,
                address: address.clone(),
                reason,
            }))
        }
    };
    let lost_again = lost.clone();
    let settings = settings.clone();
    // The client span: the child of the reducer's attempt, the parent of the mapper's server
    // span through the call's `traceparent`. It lasts as long as the stream.
    let span = tracing::info_span!(
        "flight.do_get",
        otel.name = "arrow.flight.protocol.FlightService/DoGet",
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = "arrow.flight.protocol.FlightService",
        rpc.method = "DoGet",
        server.address = %address,
        strata.shuffle.stage = ticket.stage,
        strata.shuffle.map = ticket.map,
        strata.shuffle.partition = ticket.partition,
    );
    strata_telemetry::set_remote_parent(&span, &traceparent);
    let header = strata_telemetry::span_traceparent(&span).unwrap_or(traceparent);
    let stream = async move {
        let mut client = connect(&address, &settings)
            .await
            .map_err(|err| lost(err.to_string()))?;
        if !header.is_empty() {
            client
                .add_header("traceparent", &header)
                .map_err(|err| lost(err.to_string()))?;
        }
        let batches = client
            .do_get(Ticket::new(ticket.to_string()))
            .await
            .map_err(|err| lost(err.to_string()))?;
        Ok::<_, DataFusionError>(batches.map_err(move |err| lost_again(err.to_string())))
    }
    .instrument(span.clone())
    .try_flatten_stream()
    .map(move |batch| {
        // The span ends with the last batch.
        strata_telemetry::end_now(&span);
        batch
    });
    Box::pin(stream)
}

/// The Flight action deleting a run's shuffle outputs.
pub const REMOVE_RUN: &str = "remove_run";

/// Asks the worker at `address` to delete the shuffle outputs of `run`.
///
/// # Errors
/// Returns an error when the worker cannot be reached or refuses.
pub async fn remove_run(
    address: &str,
    run: &str,
    settings: &FetchSettings,
) -> std::result::Result<(), FlightError> {
    let mut client = connect(address, settings).await?;
    let mut responses = client
        .do_action(Action::new(REMOVE_RUN, run.to_string()))
        .await?;
    while responses.next().await.transpose()?.is_some() {}
    Ok(())
}

/// The workers holding any of `locations`, each once, in order.
pub fn addresses(locations: &[ShuffleLocation]) -> std::collections::BTreeSet<String> {
    locations
        .iter()
        .map(|location| location.address.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip_and_reject_garbage() {
        let ticket = ShuffleTicket {
            run: String::from("run-1-ab/c"),
            stage: 2,
            map: 3,
            partition: 4,
        };
        assert_eq!(ShuffleTicket::parse(&ticket.to_string()), Some(ticket));
        assert_eq!(ShuffleTicket::parse("run/x/1/2"), None);
        assert_eq!(ShuffleTicket::parse("1/2/3"), None);
    }

    #[test]
    fn secrets_admit_only_themselves_and_never_print() {
        assert!(ClusterSecret::new("short").is_err());
        let secret = ClusterSecret::new("0123456789abcdef0123\n").unwrap();
        assert!(secret.admits(Some("Bearer 0123456789abcdef0123")));
        assert!(!secret.admits(Some("Bearer 0123456789abcdef012")));
        assert!(!secret.admits(Some("Bearer 0123456789abcdef01234")));
        assert!(!secret.admits(Some("0123456789abcdef0123")));
        assert!(!secret.admits(None));
        assert!(!format!("{secret:?}").contains("0123"));
    }
}
