//! Shuffles between workers.
//!
//! A model whose plan needs rows from every input partition together (a GROUP BY, a
//! partitioned join, a window) is cut by [`plan_stages`] at each hash repartition into stages:
//! - a **map stage** is a serialized `RepartitionExec` (datafusion-proto): map task *p* runs
//!   the repartition's input for partition *p* and writes one Arrow IPC file per output
//!   partition into the worker's [`ShuffleStore`];
//! - the **final stage** is the rest of the plan, where each repartition became a
//!   [`ShuffleReaderExec`]: reduce task *r* fetches partition *r* of every map output over Arrow
//!   Flight (`DoGet`, ticket `run/stage/map/partition`) from whichever worker holds it,
//!   concurrently and with backpressure, finishes the plan and writes the model's files.
//!
//! A failed fetch is reported as a [`ShuffleFetchError`] naming the map output, so the
//! coordinator can run the lost map task again (the error type survives to the task result:
//! Ballista once lost it and never resubmitted, datafusion-ballista #2027).

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightClient, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::Time;
use datafusion::physical_plan::repartition::{BatchPartitioner, RepartitionExec};
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;
use datafusion_proto::physical_plan::{
    DefaultPhysicalExtensionCodec, PhysicalExtensionCodec, PhysicalProtoConverterExtension,
};
use futures::{Stream, StreamExt, TryFutureExt, TryStreamExt};
use prost::Message as _;
use strata_proto::v1::ShuffleLocation;

use crate::first_row::FirstRowPerKeyExec;

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

// ---------------------------------------------------------------------------------------------
// Planning: cutting a plan into stages.

/// A model's plan cut into stages, serialized for workers.
#[derive(Debug, Clone)]
pub struct StagedPlan {
    /// Map stages in dependency order: the serialized `RepartitionExec` and how many input
    /// partitions (map tasks) it has.
    pub map_stages: Vec<(Vec<u8>, u32)>,
    /// The final plan (reading the map stages) and its partitions (reduce tasks).
    pub final_stage: (Vec<u8>, u32),
}

/// The name of a model's shuffle in a run: tickets and store folders start with it.
pub fn shuffle_name(run_id: &str, node: &str) -> String {
    format!("{run_id}/{node}")
}

/// Cuts `plan` at its hash repartitions. Returns `None` when there is none (the plan needs no
/// shuffle) or when a part of it does not survive serialization for another process (each
/// stage is decoded again here and must give back the same schema).
///
/// # Errors
/// Returns an error when serializing fails unexpectedly.
pub fn plan_stages(plan: Arc<dyn ExecutionPlan>, ctx: &TaskContext) -> Result<Option<StagedPlan>> {
    // A table has no row order: a final merge or coalesce would only funnel every row
    // through one task.
    let plan = strip_final_merge(plan);
    let mut stages: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    let cut = plan
        .transform_up(|node| {
            let Some(repartition) = node.downcast_ref::<RepartitionExec>() else {
                return Ok(Transformed::no(node));
            };
            let Partitioning::Hash(_, partitions) = repartition.partitioning() else {
                return Ok(Transformed::no(node));
            };
            let stage = u32::try_from(stages.len()).unwrap_or(u32::MAX);
            let maps = u32::try_from(repartition.input().output_partitioning().partition_count())
                .unwrap_or(u32::MAX);
            let reader =
                ShuffleReaderExec::new(stage, maps, node.schema(), *partitions, Vec::new());
            stages.push(node);
            Ok(Transformed::yes(Arc::new(reader) as Arc<dyn ExecutionPlan>))
        })?
        .data;
    if stages.is_empty() {
        return Ok(None);
    }
    let codec = ShuffleCodec::default();
    let round_trip = |plan: Arc<dyn ExecutionPlan>| -> Option<Vec<u8>> {
        let bytes = encode(plan.clone(), &codec).ok()?;
        let decoded = datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(
            &bytes, ctx, &codec,
        )
        .ok()?;
        (decoded.schema() == plan.schema()
            && decoded.output_partitioning().partition_count()
                == plan.output_partitioning().partition_count())
        .then_some(bytes)
    };
    let mut map_stages = Vec::new();
    for stage in stages {
        let inputs = stage.children()[0].output_partitioning().partition_count();
        let Some(bytes) = round_trip(stage) else {
            return Ok(None);
        };
        map_stages.push((bytes, u32::try_from(inputs).unwrap_or(u32::MAX)));
    }
    let partitions = cut.output_partitioning().partition_count();
    let Some(final_bytes) = round_trip(cut) else {
        return Ok(None);
    };
    Ok(Some(StagedPlan {
        map_stages,
        final_stage: (final_bytes, u32::try_from(partitions).unwrap_or(u32::MAX)),
    }))
}

fn strip_final_merge(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if let Some(merge) = plan.downcast_ref::<SortPreservingMergeExec>()
        && merge.fetch().is_none()
    {
        return strip_final_merge(merge.input().clone());
    }
    if let Some(coalesce) = plan.downcast_ref::<CoalescePartitionsExec>()
        && coalesce.fetch().is_none()
    {
        return strip_final_merge(coalesce.input().clone());
    }
    plan
}

fn encode(plan: Arc<dyn ExecutionPlan>, codec: &ShuffleCodec) -> Result<Vec<u8>> {
    Ok(datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(plan, codec)?.to_vec())
}

/// Decodes a stage plan for `run`, with the map outputs its readers fetch and the trace
/// context their Flight requests carry.
///
/// # Errors
/// Returns an error for bytes that are not a plan.
pub fn decode(
    bytes: &[u8],
    ctx: &TaskContext,
    run: &str,
    locations: &[ShuffleLocation],
    traceparent: &str,
    fetch_timeout: std::time::Duration,
) -> Result<Arc<dyn ExecutionPlan>> {
    let codec = ShuffleCodec {
        run: run.to_string(),
        locations: locations.to_vec(),
        traceparent: traceparent.to_string(),
        fetch_timeout,
    };
    datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(bytes, ctx, &codec)
}

// ---------------------------------------------------------------------------------------------
// Map side.

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

// ---------------------------------------------------------------------------------------------
// Reduce side: the reader node and its codec.

/// Reads one stage's map outputs over Flight: partition *r* of this node is partition *r* of
/// every map output of the stage.
#[derive(Debug)]
pub struct ShuffleReaderExec {
    stage: u32,
    /// Map tasks of the stage: the reader checks it has the output of each, exactly once.
    maps: u32,
    schema: SchemaRef,
    run: String,
    locations: Vec<ShuffleLocation>,
    traceparent: String,
    fetch_timeout: std::time::Duration,
    properties: Arc<PlanProperties>,
}

impl ShuffleReaderExec {
    fn new(
        stage: u32,
        maps: u32,
        schema: SchemaRef,
        partitions: usize,
        locations: Vec<ShuffleLocation>,
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
            run: String::new(),
            locations,
            traceparent: String::new(),
            fetch_timeout: std::time::Duration::from_secs(30),
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
                    self.traceparent.clone(),
                    self.fetch_timeout,
                    ShuffleTicket {
                        run: self.run.clone(),
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
fn fetch(
    address: String,
    traceparent: String,
    timeout: std::time::Duration,
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
    let stream = async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|err| lost(err.to_string()))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(timeout)
            .connect()
            .await
            .map_err(|err| lost(err.to_string()))?;
        let mut client = FlightClient::new(channel);
        if !traceparent.is_empty() {
            client
                .add_header("traceparent", &traceparent)
                .map_err(|err| lost(err.to_string()))?;
        }
        let batches = client
            .do_get(Ticket::new(ticket.to_string()))
            .await
            .map_err(|err| lost(err.to_string()))?;
        Ok::<_, DataFusionError>(batches.map_err(move |err| lost_again(err.to_string())))
    }
    .try_flatten_stream();
    Box::pin(stream)
}

/// Tags the extension nodes [`ShuffleCodec`] encodes.
const SHUFFLE_READER_TAG: u8 = 1;
const FIRST_ROW_PER_KEY_TAG: u8 = 2;

/// A [`FirstRowPerKeyExec`] on the wire: its keys and order (its child travels separately).
#[derive(Clone, PartialEq, prost::Message)]
struct FirstRowPerKeyNode {
    #[prost(message, repeated, tag = "1")]
    keys: Vec<datafusion_proto::protobuf::PhysicalExprNode>,
    #[prost(message, repeated, tag = "2")]
    order: Vec<datafusion_proto::protobuf::PhysicalSortExprNode>,
    /// The output schema (the input's columns and the rank column).
    #[prost(message, optional, tag = "3")]
    schema: Option<datafusion_proto::protobuf::Schema>,
}

fn encode_first_row_per_key(
    node: &FirstRowPerKeyExec,
    buf: &mut Vec<u8>,
    codec: &ShuffleCodec,
) -> Result<()> {
    let keys = node
        .keys()
        .iter()
        .map(|key| serialize_physical_expr(key, codec))
        .collect::<Result<Vec<_>>>()?;
    let order = node
        .order()
        .iter()
        .map(|sort| {
            Ok(datafusion_proto::protobuf::PhysicalSortExprNode {
                expr: Some(Box::new(serialize_physical_expr(&sort.expr, codec)?)),
                asc: !sort.options.descending,
                nulls_first: sort.options.nulls_first,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let schema = node
        .schema()
        .as_ref()
        .try_into()
        .map_err(|err| DataFusionError::Internal(format!("FirstRowPerKey schema: {err}")))?;
    let message = FirstRowPerKeyNode {
        keys,
        order,
        schema: Some(schema),
    };
    buf.extend_from_slice(&message.encode_to_vec());
    Ok(())
}

fn decode_first_row_per_key(
    buf: &[u8],
    inputs: &[Arc<dyn ExecutionPlan>],
    ctx: &TaskContext,
    codec: &ShuffleCodec,
) -> Result<Arc<dyn ExecutionPlan>> {
    let malformed = |what: String| DataFusionError::Internal(format!("FirstRowPerKey: {what}"));
    let message = FirstRowPerKeyNode::decode(buf).map_err(|err| malformed(err.to_string()))?;
    let [input] = inputs else {
        return Err(malformed(format!("{} inputs", inputs.len())));
    };
    let input_schema = input.schema();
    let keys = message
        .keys
        .iter()
        .map(|key| parse_physical_expr(key, ctx, &input_schema, codec))
        .collect::<Result<Vec<_>>>()?;
    let order = message
        .order
        .iter()
        .map(|sort| {
            let expr = sort
                .expr
                .as_deref()
                .ok_or_else(|| malformed("an order without an expression".into()))?;
            Ok(PhysicalSortExpr::new(
                parse_physical_expr(expr, ctx, &input_schema, codec)?,
                datafusion::arrow::compute::SortOptions::new(!sort.asc, sort.nulls_first),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let schema: Schema = message
        .schema
        .as_ref()
        .ok_or_else(|| malformed("no schema".into()))?
        .try_into()
        .map_err(|err| malformed(format!("schema: {err}")))?;
    Ok(Arc::new(FirstRowPerKeyExec::try_new(
        Arc::clone(input),
        keys,
        order,
        Arc::new(schema),
    )?))
}

/// Encodes [`ShuffleReaderExec`]s (stage, partitions, schema) — decoded with the map output
/// locations of the task at hand — and [`FirstRowPerKeyExec`]s; every other node goes through
/// DataFusion's own codec.
#[derive(Debug, Default)]
pub struct ShuffleCodec {
    run: String,
    locations: Vec<ShuffleLocation>,
    traceparent: String,
    fetch_timeout: std::time::Duration,
}

impl PhysicalExtensionCodec for ShuffleCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (tag, buf) = buf.split_first().unwrap_or((&0, buf));
        match *tag {
            SHUFFLE_READER_TAG => {}
            FIRST_ROW_PER_KEY_TAG => return decode_first_row_per_key(buf, inputs, ctx, self),
            _ => return DefaultPhysicalExtensionCodec {}.try_decode(buf, inputs, ctx, converter),
        }
        let Some(header) = buf.get(..12) else {
            return Err(DataFusionError::Internal(
                "shuffle reader: truncated header".into(),
            ));
        };
        let word = |index: usize| {
            u32::from_le_bytes([
                header[index * 4],
                header[index * 4 + 1],
                header[index * 4 + 2],
                header[index * 4 + 3],
            ])
        };
        let (stage, maps, partitions) = (word(0), word(1), word(2));
        let schema = datafusion_proto::protobuf::Schema::decode(&buf[12..])
            .map_err(|err| DataFusionError::Internal(format!("shuffle reader schema: {err}")))?;
        let schema: Schema = (&schema)
            .try_into()
            .map_err(|err| DataFusionError::Internal(format!("shuffle reader schema: {err}")))?;
        let mut reader = ShuffleReaderExec::new(
            stage,
            maps,
            Arc::new(schema),
            partitions as usize,
            self.locations.clone(),
        );
        reader.run = self.run.clone();
        reader.traceparent = self.traceparent.clone();
        reader.fetch_timeout = self.fetch_timeout;
        Ok(Arc::new(reader))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(first_rows) = node.downcast_ref::<FirstRowPerKeyExec>() {
            buf.push(FIRST_ROW_PER_KEY_TAG);
            return encode_first_row_per_key(first_rows, buf, self);
        }
        let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() else {
            return DefaultPhysicalExtensionCodec {}.try_encode(node, buf, converter);
        };
        buf.push(SHUFFLE_READER_TAG);
        let partitions = reader.properties.output_partitioning().partition_count();
        buf.extend_from_slice(&reader.stage.to_le_bytes());
        buf.extend_from_slice(&reader.maps.to_le_bytes());
        buf.extend_from_slice(&u32::try_from(partitions).unwrap_or(u32::MAX).to_le_bytes());
        let schema: datafusion_proto::protobuf::Schema =
            reader.schema.as_ref().try_into().map_err(|err| {
                DataFusionError::Internal(format!("shuffle reader schema: {err}"))
            })?;
        buf.extend_from_slice(&schema.encode_to_vec());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The worker's Flight server.

/// Serves a [`ShuffleStore`] over Arrow Flight: `DoGet` with a [`ShuffleTicket`] streams one
/// partition file; the action `remove_run` (body: the run id) deletes a run's outputs.
#[derive(Debug, Clone)]
pub struct ShuffleFlightService {
    store: Arc<ShuffleStore>,
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
    /// A service over `store`.
    pub fn new(store: Arc<ShuffleStore>) -> ShuffleFlightService {
        ShuffleFlightService {
            store,
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
        let text = String::from_utf8_lossy(&request.get_ref().ticket).into_owned();
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        tracing::debug!(ticket = %text, traceparent = ?traceparent, "shuffle DoGet");
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
            .map_err(|err| tonic::Status::internal(err.to_string()));
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
        _request: tonic::Request<Empty>,
    ) -> std::result::Result<tonic::Response<Self::ListActionsStream>, tonic::Status> {
        let action = ActionType {
            r#type: REMOVE_RUN.to_string(),
            description: String::from("delete the shuffle outputs of the run named in the body"),
        };
        Ok(tonic::Response::new(Box::pin(futures::stream::iter([Ok(
            action,
        )]))))
    }
}

/// The Flight action deleting a run's shuffle outputs.
pub const REMOVE_RUN: &str = "remove_run";

/// Asks the worker at `address` to delete the shuffle outputs of `run`.
///
/// # Errors
/// Returns an error when the worker cannot be reached or refuses.
pub async fn remove_run(address: &str, run: &str) -> std::result::Result<(), FlightError> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|err| FlightError::ExternalError(Box::new(err)))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .map_err(|err| FlightError::ExternalError(Box::new(err)))?;
    let mut client = FlightClient::new(channel);
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

    use crate::execution::{ExecutionConfig, plan_shuffle};

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
            &ExecutionConfig::default(),
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
        let decoded = super::decode(
            plan,
            &ctx.task_ctx(),
            "run/node",
            &[],
            "",
            std::time::Duration::from_secs(5),
        )
        .unwrap();
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

    use super::{ServedRequest, ShuffleFlightService, ShuffleStore, ShuffleTicket, fetch};

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
        let service = ShuffleFlightService::new(store);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(service.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let batches: Vec<RecordBatch> = fetch(
            address.clone(),
            traceparent.to_string(),
            std::time::Duration::from_secs(5),
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
            ..ticket
        };
        let err = fetch(
            address,
            String::new(),
            std::time::Duration::from_secs(5),
            missing,
        )
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
        let lost = super::find_fetch_error(&err).expect("a ShuffleFetchError");
        assert_eq!((lost.stage, lost.map), (0, 1));
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
