//! Cutting a model's physical plan into stages for a shuffle between workers.
//!
//! A model whose plan needs rows from every input partition together (a GROUP BY, a
//! partitioned join, a window) is cut by [`plan_stages`] at each hash repartition into stages:
//! - a **map stage** is a serialized `RepartitionExec` (datafusion-proto): map task *p* runs
//!   the repartition's input for partition *p* and writes one Arrow IPC file per output
//!   partition on its worker;
//! - the **final stage** is the rest of the plan, where each repartition became a
//!   [`ShuffleReaderExec`]: reduce task *r* fetches partition *r* of every map output over Arrow
//!   Flight from whichever worker holds it, finishes the plan and writes the model's files.
//!
//! A failed fetch is reported as a [`crate::exchange::ShuffleFetchError`] naming the map
//! output, so the coordinator can run the lost map task again (the error type survives to the
//! task result: Ballista once lost it and never resubmitted, datafusion-ballista #2027).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

use crate::codec::ShuffleCodec;
use crate::exchange::{ReaderContext, ShuffleReaderExec};

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
            let reader = ShuffleReaderExec::new(
                stage,
                maps,
                node.schema(),
                *partitions,
                ReaderContext::default(),
            );
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

/// Decodes a stage plan whose readers fetch as `context` says (the run's shuffle, the map
/// outputs, the trace context and the cluster secret).
///
/// # Errors
/// Returns an error for bytes that are not a plan.
pub fn decode(
    bytes: &[u8],
    ctx: &TaskContext,
    context: ReaderContext,
) -> Result<Arc<dyn ExecutionPlan>> {
    let codec = ShuffleCodec::for_readers(context);
    datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(bytes, ctx, &codec)
}
