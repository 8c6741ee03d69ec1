//! Deduplication without a sort: `row_number() over (partition by k order by o) = 1`.
//!
//! The medallion pattern "keep the latest delivery of each event" is written as a window:
//!
//! ```sql
//! select * from (
//!     select *, row_number() over (partition by event_id order by _ingested_at desc) as rn
//!     from events
//! ) where rn = 1
//! ```
//!
//! DataFusion 55 plans it as a full sort of the input by `(k, o)`, a window over the sorted
//! rows, and a filter — on 10 million events that sort was two thirds of the medallion build.
//! DataFusion's own `WindowTopN` rewrite (off by default) keeps one heap per key, which its
//! documentation warns regresses for high-cardinality keys; a deduplication key is nearly
//! unique by definition.
//!
//! [`FirstRowPerKeyRule`] rewrites `Filter(rn = 1)` (also `rn <= 1`, `rn < 2`) over a window
//! whose only expression is `row_number()` into a [`FirstRowPerKey`] node. Its operator,
//! [`FirstRowPerKeyExec`], keeps one winning row per key in a hash table while it reads its
//! input (a row replaces the winner when it sorts strictly before it by the window's order,
//! compared on Arrow's row format, so `desc`/`nulls first` behave as in the sort), and emits
//! the winners with the rank column set to 1. Exactly one row per key comes out, every column
//! from the same input row — unlike a rewrite to `first_value` per column, which may mix rows
//! when the order has ties. Which of several tied rows wins is unspecified, as it is for
//! `row_number()` itself.
//!
//! The operator needs its input hash-partitioned on the key (DataFusion inserts the repartition,
//! which a distributed run turns into a shuffle), holds the winners under the task's memory
//! pool, compacts them when most buffered rows have lost, and fails with a clear error when
//! even the winners do not fit.

use std::cmp::Ordering;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::{cast, interleave_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, Result, ScalarValue, plan_err};
use datafusion::error::DataFusionError;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Extension, Filter, LogicalPlan, Operator, Projection, SortExpr,
    UserDefinedLogicalNode, UserDefinedLogicalNodeCore, Window, WindowFunctionDefinition,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::{StreamExt, TryStreamExt};

// ---------------------------------------------------------------------------------------------
// Logical side: the rule and its node.

/// Rewrites `Filter(row_number() … = 1)` over a `row_number()` window into [`FirstRowPerKey`].
#[derive(Debug, Default)]
pub struct FirstRowPerKeyRule;

impl OptimizerRule for FirstRowPerKeyRule {
    fn name(&self) -> &str {
        "strata_first_row_per_key"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Filter(filter) = plan else {
            return Ok(Transformed::no(plan));
        };
        match rewrite_filter(&filter)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(LogicalPlan::Filter(filter))),
        }
    }
}

/// The window below a filter, and the projection between them when there is one.
struct WindowBelow<'a> {
    projection: Option<&'a Projection>,
    window: &'a Window,
    /// The rank column as the filter sees it.
    rank: Column,
}

fn window_below(filter: &Filter) -> Option<WindowBelow<'_>> {
    match filter.input.as_ref() {
        LogicalPlan::Window(window) => {
            let rank = Column::from(
                window
                    .schema
                    .qualified_field(window.input.schema().fields().len()),
            );
            Some(WindowBelow {
                projection: None,
                window,
                rank,
            })
        }
        LogicalPlan::Projection(projection) => {
            let LogicalPlan::Window(window) = projection.input.as_ref() else {
                return None;
            };
            let window_rank = Column::from(
                window
                    .schema
                    .qualified_field(window.input.schema().fields().len()),
            );
            // The projection passes the rank column through, perhaps renamed.
            let index = projection.expr.iter().position(|expr| {
                matches!(expr.clone().unalias(), Expr::Column(column) if column == window_rank)
            })?;
            let rank = Column::from(projection.schema.qualified_field(index));
            Some(WindowBelow {
                projection: Some(projection),
                window,
                rank,
            })
        }
        _ => None,
    }
}

/// `Some(partition_by, order_by)` when the window computes exactly one plain `row_number()`.
fn row_number_window(window: &Window) -> Option<(Vec<Expr>, Vec<SortExpr>)> {
    let [expr] = window.window_expr.as_slice() else {
        return None;
    };
    let Expr::WindowFunction(function) = expr.clone().unalias() else {
        return None;
    };
    let WindowFunction { fun, params } = *function;
    let WindowFunctionDefinition::WindowUDF(udf) = fun else {
        return None;
    };
    (udf.name() == "row_number"
        && params.args.is_empty()
        && params.filter.is_none()
        && !params.distinct)
        .then_some((params.partition_by, params.order_by))
}

/// Whether `predicate` keeps exactly the rows where `rank` is 1.
fn keeps_first_rank(predicate: &Expr, rank: &Column) -> bool {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = predicate else {
        return false;
    };
    let integer = |expr: &Expr| match expr {
        Expr::Literal(value, _) => integer_value(value),
        _ => None,
    };
    let is_rank = |expr: &Expr| matches!(expr, Expr::Column(column) if column == rank);
    let (op, bound) = if is_rank(left) {
        (*op, integer(right))
    } else if is_rank(right) {
        match op.swap() {
            Some(swapped) => (swapped, integer(left)),
            None => return false,
        }
    } else {
        return false;
    };
    matches!(
        (op, bound),
        (Operator::Eq | Operator::LtEq, Some(1)) | (Operator::Lt, Some(2))
    )
}

fn integer_value(value: &ScalarValue) -> Option<i128> {
    match value {
        ScalarValue::Int8(Some(v)) => Some(i128::from(*v)),
        ScalarValue::Int16(Some(v)) => Some(i128::from(*v)),
        ScalarValue::Int32(Some(v)) => Some(i128::from(*v)),
        ScalarValue::Int64(Some(v)) => Some(i128::from(*v)),
        ScalarValue::UInt8(Some(v)) => Some(i128::from(*v)),
        ScalarValue::UInt16(Some(v)) => Some(i128::from(*v)),
        ScalarValue::UInt32(Some(v)) => Some(i128::from(*v)),
        ScalarValue::UInt64(Some(v)) => Some(i128::from(*v)),
        _ => None,
    }
}

fn rewrite_filter(filter: &Filter) -> Result<Option<LogicalPlan>> {
    let Some(below) = window_below(filter) else {
        return Ok(None);
    };
    let Some((partition_by, order_by)) = row_number_window(below.window) else {
        return Ok(None);
    };
    let conjuncts = split_conjunction(&filter.predicate);
    let Some(position) = conjuncts
        .iter()
        .position(|conjunct| keeps_first_rank(conjunct, &below.rank))
    else {
        return Ok(None);
    };
    let first_rows = LogicalPlan::Extension(Extension {
        node: Arc::new(FirstRowPerKey {
            input: below.window.input.as_ref().clone(),
            partition_by,
            order_by,
            schema: below.window.schema.clone(),
        }),
    });
    let mut plan = match below.projection {
        Some(projection) => LogicalPlan::Projection(Projection::try_new_with_schema(
            projection.expr.clone(),
            Arc::new(first_rows),
            projection.schema.clone(),
        )?),
        None => first_rows,
    };
    let rest = conjuncts
        .into_iter()
        .enumerate()
        .filter(|(index, _)| *index != position)
        .map(|(_, conjunct)| conjunct.clone());
    if let Some(predicate) = conjunction(rest) {
        plan = LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(plan))?);
    }
    Ok(Some(plan))
}

/// One row per distinct `partition_by` value: the first by `order_by`, with the window's rank
/// column (always 1) appended. Its schema is the replaced window's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FirstRowPerKey {
    input: LogicalPlan,
    partition_by: Vec<Expr>,
    order_by: Vec<SortExpr>,
    schema: DFSchemaRef,
}

impl PartialOrd for FirstRowPerKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.partition_by.partial_cmp(&other.partition_by) {
            Some(Ordering::Equal) => {}
            unequal => return unequal,
        }
        match self.order_by.partial_cmp(&other.order_by) {
            Some(Ordering::Equal) => {}
            unequal => return unequal,
        }
        self.input.partial_cmp(&other.input)
    }
}

impl UserDefinedLogicalNodeCore for FirstRowPerKey {
    fn name(&self) -> &str {
        "FirstRowPerKey"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        self.partition_by
            .iter()
            .cloned()
            .chain(self.order_by.iter().map(|sort| sort.expr.clone()))
            .collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.partition_by.iter().map(ToString::to_string).collect();
        let order: Vec<String> = self.order_by.iter().map(ToString::to_string).collect();
        write!(
            f,
            "FirstRowPerKey: partition_by=[{}], order_by=[{}]",
            keys.join(", "),
            order.join(", ")
        )
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        let [input] = <[LogicalPlan; 1]>::try_from(inputs).map_err(|inputs| {
            DataFusionError::Internal(format!(
                "FirstRowPerKey takes one input, not {}",
                inputs.len()
            ))
        })?;
        let keys = self.partition_by.len();
        if exprs.len() != keys + self.order_by.len() {
            return plan_err!("FirstRowPerKey got {} expressions", exprs.len());
        }
        let mut exprs = exprs.into_iter();
        let partition_by = exprs.by_ref().take(keys).collect();
        let order_by = self
            .order_by
            .iter()
            .zip(exprs)
            .map(|(sort, expr)| SortExpr::new(expr, sort.asc, sort.nulls_first))
            .collect();
        Ok(Self {
            input,
            partition_by,
            order_by,
            schema: self.schema.clone(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Physical planning.

/// DataFusion's planner with an [`ExtensionPlanner`] for [`FirstRowPerKey`].
#[derive(Debug, Default)]
pub struct StrataQueryPlanner;

#[async_trait]
impl QueryPlanner for StrataQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(FirstRowPerKeyPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

struct FirstRowPerKeyPlanner;

#[async_trait]
impl ExtensionPlanner for FirstRowPerKeyPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<FirstRowPerKey>() else {
            return Ok(None);
        };
        let (Some(logical_input), Some(input)) = (logical_inputs.first(), physical_inputs.first())
        else {
            return plan_err!("FirstRowPerKey without an input");
        };
        let input_schema = logical_input.schema();
        let keys = node
            .partition_by
            .iter()
            .map(|expr| planner.create_physical_expr(expr, input_schema, session, planning_ctx))
            .collect::<Result<Vec<_>>>()?;
        let order = node
            .order_by
            .iter()
            .map(|sort| {
                let expr = planner.create_physical_expr(
                    &sort.expr,
                    input_schema,
                    session,
                    planning_ctx,
                )?;
                Ok(PhysicalSortExpr::new(
                    expr,
                    datafusion::arrow::compute::SortOptions::new(!sort.asc, sort.nulls_first),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let schema = Arc::clone(node.schema.inner());
        Ok(Some(Arc::new(FirstRowPerKeyExec::try_new(
            Arc::clone(input),
            keys,
            order,
            schema,
        )?)))
    }
}

// ---------------------------------------------------------------------------------------------
// The operator.

/// Emits one row per distinct key (the first by the order), plus a rank column of 1.
#[derive(Debug)]
pub struct FirstRowPerKeyExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<PhysicalSortExpr>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl FirstRowPerKeyExec {
    /// The operator over `input`; `schema` is the input's columns plus the rank column.
    ///
    /// # Errors
    /// When `schema` is not the input's schema with one more column.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        order: Vec<PhysicalSortExpr>,
        schema: SchemaRef,
    ) -> Result<Self> {
        let input_fields = input.schema().fields().len();
        if schema.fields().len() != input_fields + 1 {
            return plan_err!(
                "FirstRowPerKey: output has {} columns, expected the input's {} and a rank",
                schema.fields().len(),
                input_fields
            );
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            input.output_partitioning().clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Self {
            input,
            keys,
            order,
            schema,
            properties: Arc::new(properties),
        })
    }

    /// The key expressions.
    pub fn keys(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.keys
    }

    /// The order that picks each key's row.
    pub fn order(&self) -> &[PhysicalSortExpr] {
        &self.order
    }
}

impl DisplayAs for FirstRowPerKeyExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(ToString::to_string).collect();
        let order: Vec<String> = self.order.iter().map(ToString::to_string).collect();
        write!(
            f,
            "FirstRowPerKeyExec: keys=[{}], order=[{}]",
            keys.join(", "),
            order.join(", ")
        )
    }
}

impl ExecutionPlan for FirstRowPerKeyExec {
    fn name(&self) -> &str {
        "FirstRowPerKeyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        if self.keys.is_empty() {
            vec![Distribution::SinglePartition]
        } else {
            vec![Distribution::KeyPartitioned(self.keys.clone())]
        }
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for expr in self
            .keys
            .iter()
            .chain(self.order.iter().map(|sort| &sort.expr))
        {
            if f(expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[Arc<dyn ExecutionPlan>; 1]>::try_from(children).map_err(|children| {
            DataFusionError::Internal(format!(
                "FirstRowPerKeyExec takes one child, not {}",
                children.len()
            ))
        })?;
        Ok(Arc::new(Self::try_new(
            input,
            self.keys.clone(),
            self.order.clone(),
            Arc::clone(&self.schema),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let reservation = MemoryConsumer::new(format!("FirstRowPerKeyExec[{partition}]"))
            .register(context.memory_pool());
        let mut winners =
            Winners::try_new(&self.input.schema(), &self.keys, &self.order, reservation)?;
        let schema = Arc::clone(&self.schema);
        let batch_size = context.session_config().batch_size().max(1);
        let output = futures::stream::once(async move {
            let mut input = input;
            while let Some(batch) = input.next().await {
                winners.push(batch?)?;
            }
            Ok::<_, DataFusionError>(winners.into_batches(schema, batch_size))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            output,
        )))
    }
}

/// A buffered input batch with its rows in key and order format.
struct Buffered {
    batch: RecordBatch,
    keys: Rows,
    order: Rows,
}

/// The winning row of one key: where it is buffered, and its key's hash.
#[derive(Clone, Copy)]
struct Winner {
    batch: u32,
    row: u32,
    hash: u64,
}

/// The winners so far of one output partition.
struct Winners {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<PhysicalSortExpr>,
    key_format: RowConverter,
    order_format: RowConverter,
    buffered: Vec<Buffered>,
    buffered_rows: usize,
    winners: Vec<Winner>,
    /// Indices into `winners`, found by key.
    table: hashbrown::HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    reservation: MemoryReservation,
}

/// Rows buffered before compaction is considered; below it compaction costs more than it saves.
const COMPACTION_MIN_ROWS: usize = 1 << 20;

impl Winners {
    fn try_new(
        input_schema: &SchemaRef,
        keys: &[Arc<dyn PhysicalExpr>],
        order: &[PhysicalSortExpr],
        reservation: MemoryReservation,
    ) -> Result<Self> {
        let mut key_fields = keys
            .iter()
            .map(|key| Ok(SortField::new(key.data_type(input_schema)?)))
            .collect::<Result<Vec<_>>>()?;
        if key_fields.is_empty() {
            key_fields.push(SortField::new(DataType::Boolean));
        }
        let mut order_fields = order
            .iter()
            .map(|sort| {
                Ok(SortField::new_with_options(
                    sort.expr.data_type(input_schema)?,
                    sort.options,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        if order_fields.is_empty() {
            order_fields.push(SortField::new(DataType::Boolean));
        }
        Ok(Self {
            keys: keys.to_vec(),
            order: order.to_vec(),
            key_format: RowConverter::new(key_fields)?,
            order_format: RowConverter::new(order_fields)?,
            buffered: Vec::new(),
            buffered_rows: 0,
            winners: Vec::new(),
            table: hashbrown::HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            reservation,
        })
    }

    /// The values of `exprs` on `batch`; one constant column when there are none (no keys: one
    /// key for every row; no order: every row ties).
    fn evaluate(
        exprs: impl Iterator<Item = Arc<dyn PhysicalExpr>>,
        batch: &RecordBatch,
    ) -> Result<Vec<ArrayRef>> {
        let mut columns = exprs
            .map(|expr| expr.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<_>>>()?;
        if columns.is_empty() {
            columns.push(ScalarValue::Boolean(Some(true)).to_array_of_size(batch.num_rows())?);
        }
        Ok(columns)
    }

    /// Memory the table and the winner list hold, besides the buffered batches.
    fn index_size(&self) -> usize {
        self.winners.capacity() * size_of::<Winner>()
            + self.table.capacity() * (size_of::<u32>() + 1)
    }

    fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let key_columns = Self::evaluate(self.keys.iter().cloned(), &batch)?;
        let order_columns =
            Self::evaluate(self.order.iter().map(|sort| Arc::clone(&sort.expr)), &batch)?;
        let keys = self.key_format.convert_columns(&key_columns)?;
        let order = self.order_format.convert_columns(&order_columns)?;
        let incoming = batch.get_array_memory_size() + keys.size() + order.size();
        self.reserve(incoming)?;

        let batch_index = u32::try_from(self.buffered.len())
            .map_err(|_| DataFusionError::Internal("too many buffered batches".into()))?;
        let rows = batch.num_rows();
        self.buffered.push(Buffered { batch, keys, order });
        self.buffered_rows += rows;
        let before = self.index_size();
        {
            let Self {
                buffered,
                winners,
                table,
                hasher,
                ..
            } = self;
            let current = &buffered[batch_index as usize];
            for row in 0..rows {
                let key = current.keys.row(row);
                let hash = hasher.hash_one(key.as_ref());
                let entry = table.entry(
                    hash,
                    |&index| {
                        let winner = winners[index as usize];
                        winner.hash == hash
                            && buffered[winner.batch as usize]
                                .keys
                                .row(winner.row as usize)
                                == key
                    },
                    |&index| winners[index as usize].hash,
                );
                let row_index = row as u32;
                match entry {
                    hashbrown::hash_table::Entry::Occupied(found) => {
                        let winner = &mut winners[*found.get() as usize];
                        let best = buffered[winner.batch as usize]
                            .order
                            .row(winner.row as usize);
                        if current.order.row(row) < best {
                            winner.batch = batch_index;
                            winner.row = row_index;
                        }
                    }
                    hashbrown::hash_table::Entry::Vacant(vacant) => {
                        let index = u32::try_from(winners.len()).map_err(|_| {
                            DataFusionError::Internal(
                                "more than 4 billion keys in one partition".into(),
                            )
                        })?;
                        vacant.insert(index);
                        winners.push(Winner {
                            batch: batch_index,
                            row: row_index,
                            hash,
                        });
                    }
                }
            }
        }
        let after = self.index_size();
        self.reserve(after.saturating_sub(before))?;
        if self.buffered_rows >= COMPACTION_MIN_ROWS && self.buffered_rows > 2 * self.winners.len()
        {
            self.compact()?;
        }
        Ok(())
    }

    /// Grows the reservation, compacting once when the pool says no.
    fn reserve(&mut self, bytes: usize) -> Result<()> {
        if self.reservation.try_grow(bytes).is_ok() {
            return Ok(());
        }
        self.compact()?;
        self.reservation.try_grow(bytes).map_err(|err| {
            DataFusionError::ResourcesExhausted(format!(
                "deduplicating by row_number() = 1 needs to hold one row per key ({} keys so far) \
                 and they do not fit in the task's memory limit; raise the worker's memory limit \
                 (--memory-limit-mib) or split the model: {err}",
                self.winners.len()
            ))
        })
    }

    /// Replaces the buffered batches by the winners alone.
    fn compact(&mut self) -> Result<()> {
        if self.winners.len() == self.buffered_rows {
            return Ok(());
        }
        let batches: Vec<&RecordBatch> = self.buffered.iter().map(|b| &b.batch).collect();
        let indices: Vec<(usize, usize)> = self
            .winners
            .iter()
            .map(|winner| (winner.batch as usize, winner.row as usize))
            .collect();
        let batch = if batches.is_empty() {
            return Ok(());
        } else {
            interleave_record_batch(&batches, &indices)?
        };
        let mut keys = self.key_format.empty_rows(indices.len(), 0);
        let mut order = self.order_format.empty_rows(indices.len(), 0);
        for &(b, r) in &indices {
            keys.push(self.buffered[b].keys.row(r));
            order.push(self.buffered[b].order.row(r));
        }
        for (row, winner) in self.winners.iter_mut().enumerate() {
            winner.batch = 0;
            winner.row = row as u32;
        }
        let size = batch.get_array_memory_size() + keys.size() + order.size() + self.index_size();
        self.buffered = vec![Buffered { batch, keys, order }];
        self.buffered_rows = indices.len();
        self.reservation.resize(size);
        Ok(())
    }

    /// The winners in batches of `batch_size`, each with the rank column appended.
    fn into_batches(
        self,
        schema: SchemaRef,
        batch_size: usize,
    ) -> impl futures::Stream<Item = Result<RecordBatch>> + Send {
        let indices: Vec<(usize, usize)> = self
            .winners
            .iter()
            .map(|winner| (winner.batch as usize, winner.row as usize))
            .collect();
        let chunks: Vec<Vec<(usize, usize)>> =
            indices.chunks(batch_size).map(<[_]>::to_vec).collect();
        let rank_type = schema.field(schema.fields().len() - 1).data_type().clone();
        let buffered = self.buffered;
        let reservation = self.reservation;
        futures::stream::iter(chunks).map(move |chunk| {
            let _held = &reservation;
            let batches: Vec<&RecordBatch> = buffered.iter().map(|b| &b.batch).collect();
            let rows = interleave_record_batch(&batches, &chunk)?;
            let rank = cast(
                &ScalarValue::UInt64(Some(1)).to_array_of_size(chunk.len())?,
                &rank_type,
            )?;
            let mut columns = rows.columns().to_vec();
            columns.push(rank);
            Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use crate::session::{EngineConfig, session};

    /// Events with redeliveries: duplicate ids, NULL ids, NULL and tied-free orders.
    fn events(batches: usize) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("part", DataType::Int64, true),
            Field::new("ingested", DataType::Int64, true),
            Field::new("amount", DataType::Float64, true),
        ]));
        (0..batches)
            .map(|batch| {
                let rows = 500;
                let ids: Vec<Option<String>> = (0..rows)
                    .map(|row| (row % 37 != 0).then(|| format!("e{}", (row * 7 + batch) % 97)))
                    .collect();
                let parts: Vec<Option<i64>> = (0..rows)
                    .map(|row| (row % 11 != 0).then_some((row % 3) as i64))
                    .collect();
                // Unique per row so the winner is determined, and NULL for at most one row of a
                // key (the first 97 rows of batch 0 have distinct ids): NULLs sort first when
                // descending, so those rows win there.
                let ingested: Vec<Option<i64>> = (0..rows)
                    .map(|row| {
                        let null = batch == 0 && row < 97 && row % 13 == 5;
                        (!null).then_some((batch * rows + row) as i64)
                    })
                    .collect();
                let amounts: Vec<Option<f64>> =
                    (0..rows).map(|row| Some(row as f64 / 4.0)).collect();
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(StringArray::from(ids)),
                        Arc::new(Int64Array::from(parts)),
                        Arc::new(Int64Array::from(ingested)),
                        Arc::new(Float64Array::from(amounts)),
                    ],
                )
                .unwrap()
            })
            .collect()
    }

    fn register(ctx: &SessionContext, batches: Vec<RecordBatch>) {
        let schema = batches[0].schema();
        // Two input partitions, so the operator's input is repartitioned by key.
        let half = batches.len() / 2;
        let (left, right) = batches.split_at(half);
        let table = MemTable::try_new(schema, vec![left.to_vec(), right.to_vec()]).unwrap();
        ctx.register_table("events", Arc::new(table)).unwrap();
    }

    fn strata_session(memory_limit_bytes: usize) -> SessionContext {
        let config = EngineConfig {
            memory_limit_bytes,
            target_partitions: 3,
            ..EngineConfig::default()
        };
        session(&config).unwrap().0
    }

    async fn sorted_rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|line| line.starts_with('|'))
            .skip(1)
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    async fn explain(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx
            .sql(&format!("explain {sql}"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    /// Runs `sql` with Strata's session and with plain DataFusion, and checks the results are
    /// equal and whether the rewrite fired.
    async fn check(sql: &str, rewritten: bool) {
        let strata = strata_session(1 << 30);
        register(&strata, events(6));
        let plain = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
        register(&plain, events(6));
        let plan = explain(&strata, sql).await;
        assert_eq!(
            plan.contains("FirstRowPerKeyExec"),
            rewritten,
            "{sql}\n{plan}"
        );
        let expected = sorted_rows(&plain, sql).await;
        assert!(!expected.is_empty(), "{sql} returns nothing");
        assert_eq!(sorted_rows(&strata, sql).await, expected, "{sql}");
    }

    #[tokio::test]
    async fn latest_delivery_per_key_equals_the_window() {
        check(
            "select id, ingested, amount from (
                 select *, row_number() over (partition by id order by ingested desc) as rn
                 from events) where rn = 1",
            true,
        )
        .await;
    }

    #[tokio::test]
    async fn composite_keys_nulls_last_and_the_rank_column_kept() {
        check(
            "select * from (
                 select id, part, ingested,
                        row_number() over (partition by part, id order by ingested asc nulls last, amount desc) as rank
                 from events) ranked where rank <= 1",
            true,
        )
        .await;
    }

    #[tokio::test]
    async fn flipped_and_strict_bounds_and_other_conjuncts() {
        for predicate in ["1 = rn and amount > 10", "rn < 2", "amount > 3 and rn <= 1"] {
            check(
                &format!(
                    "select id, amount from (
                         select *, row_number() over (partition by id order by ingested) as rn
                         from events) where {predicate}"
                ),
                true,
            )
            .await;
        }
    }

    #[tokio::test]
    async fn other_ranks_and_functions_keep_the_window() {
        for (window, predicate) in [
            (
                "row_number() over (partition by id order by ingested)",
                "rn = 2",
            ),
            (
                "row_number() over (partition by id order by ingested)",
                "rn <= 3",
            ),
            ("rank() over (partition by id order by ingested)", "rn = 1"),
        ] {
            check(
                &format!(
                    "select id, ingested from (select *, {window} as rn from events) where {predicate}"
                ),
                false,
            )
            .await;
        }
    }

    #[tokio::test]
    async fn no_partition_keys_keeps_one_row() {
        check(
            "select id, ingested from (
                 select *, row_number() over (order by ingested desc nulls last) as rn
                 from events) where rn = 1",
            true,
        )
        .await;
    }

    #[tokio::test]
    async fn ties_keep_exactly_one_whole_input_row_per_key() {
        let ctx = strata_session(1 << 30);
        register(&ctx, events(4));
        // `part` has three values, so most rows tie; each key must still give one row, and
        // that row must exist in the input as a whole.
        let sql = "select id, part, ingested, amount from (
                       select *, row_number() over (partition by id order by part) as rn
                       from events) where rn = 1";
        assert!(explain(&ctx, sql).await.contains("FirstRowPerKeyExec"));
        let rows = sorted_rows(&ctx, sql).await;
        let keys = sorted_rows(&ctx, "select distinct id from events").await;
        assert_eq!(rows.len(), keys.len());
        let input = sorted_rows(&ctx, "select id, part, ingested, amount from events").await;
        for row in rows {
            assert!(
                input.binary_search(&row).is_ok(),
                "{row} is not an input row"
            );
        }
    }

    #[tokio::test]
    async fn winners_beyond_the_memory_limit_fail_clearly() {
        let ctx = strata_session(64 << 10);
        register(&ctx, events(40));
        let error = ctx
            .sql(
                "select * from (
                     select *, row_number() over (partition by id, ingested order by amount) as rn
                     from events) where rn = 1",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("one row per key"), "{error}");
    }
}
