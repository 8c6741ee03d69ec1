//! The plan codec: Strata's own plan nodes ([`ShuffleReaderExec`], [`FirstRowPerKeyExec`]) on
//! the wire, next to DataFusion's codec for everything else.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalSortExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;
use datafusion_proto::physical_plan::{
    DefaultPhysicalExtensionCodec, PhysicalExtensionCodec, PhysicalProtoConverterExtension,
};
use prost::Message as _;

use crate::exchange::{ReaderContext, ShuffleReaderExec};
use crate::first_row::FirstRowPerKeyExec;

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
    /// What decoded readers fetch with.
    readers: ReaderContext,
}

impl ShuffleCodec {
    /// A codec whose decoded readers fetch as `readers` says.
    pub fn for_readers(readers: ReaderContext) -> ShuffleCodec {
        ShuffleCodec { readers }
    }
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
        Ok(Arc::new(ShuffleReaderExec::new(
            stage,
            maps,
            Arc::new(schema),
            partitions as usize,
            self.readers.clone(),
        )))
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
