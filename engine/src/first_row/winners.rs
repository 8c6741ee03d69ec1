//! The winning row of each key, held in memory under a reservation of the task's pool.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{
    cast, concat_batches, interleave_record_batch, take_record_batch,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::utils::memory::get_record_batch_memory_size;
use datafusion::common::{Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

use super::keys::KeyValues;

/// What picks a key's winner, shared by every [`Winners`] of one operator partition (the
/// in-memory one and those that re-read spilled partitions): the same key and order formats
/// and the same hash function, so that a key always lands in the same spill partition.
#[derive(Clone)]
pub(super) struct Contest {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<PhysicalSortExpr>,
    order_fields: Vec<SortField>,
    /// Converts keys that have no column form to row format (built once, not per batch).
    key_format: Arc<RowConverter>,
    /// Whether the key is computed rather than a column of the input: its values then cost
    /// memory of their own.
    computed_key: bool,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Contest {
    pub(super) fn try_new(
        input_schema: &SchemaRef,
        keys: &[Arc<dyn PhysicalExpr>],
        order: &[PhysicalSortExpr],
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
            key_format: Arc::new(RowConverter::new(key_fields)?),
            computed_key: !(keys.len() == 1 && keys[0].is::<Column>()),
            order_fields,
            hasher: hashbrown::DefaultHashBuilder::default(),
        })
    }

    /// The keys of `batch`'s rows.
    pub(super) fn keys(&self, batch: &RecordBatch) -> Result<KeyValues> {
        let columns = evaluate(self.keys.iter().cloned(), batch)?;
        if let [column] = columns.as_slice()
            && let Some(keys) = KeyValues::of_column(column)
        {
            return Ok(keys);
        }
        Ok(KeyValues::Rows(self.key_format.convert_columns(&columns)?))
    }

    /// The hash of each of `batch`'s keys.
    pub(super) fn hashes(&self, keys: &KeyValues, rows: usize) -> Vec<u64> {
        keys.hashes(rows, &self.hasher)
    }
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

/// A buffered input batch with its keys and its rows in order format.
struct Buffered {
    batch: RecordBatch,
    keys: KeyValues,
    order: Rows,
}

/// The winning row of one key: where it is buffered, and its key's hash.
#[derive(Clone, Copy)]
struct Winner {
    batch: u32,
    row: u32,
    hash: u64,
}

/// The winners so far of one output partition (or of one spilled partition of it).
pub(super) struct Winners {
    contest: Contest,
    order_format: RowConverter,
    buffered: Vec<Buffered>,
    buffered_rows: usize,
    winners: Vec<Winner>,
    /// Indices into `winners`, found by key.
    table: hashbrown::HashTable<u32>,
    reservation: MemoryReservation,
}

/// Rows buffered before compaction is considered; below it compaction costs more than it saves.
const COMPACTION_MIN_ROWS: usize = 1 << 20;

impl Winners {
    pub(super) fn try_new(contest: Contest, reservation: MemoryReservation) -> Result<Self> {
        Ok(Self {
            order_format: RowConverter::new(contest.order_fields.clone())?,
            contest,
            buffered: Vec::new(),
            buffered_rows: 0,
            winners: Vec::new(),
            table: hashbrown::HashTable::new(),
            reservation,
        })
    }

    /// How many keys have a winner.
    pub(super) fn keys(&self) -> usize {
        self.winners.len()
    }

    /// Memory the table and the winner list hold, besides the buffered batches.
    fn index_size(&self) -> usize {
        self.winners.capacity() * size_of::<Winner>()
            + self.table.capacity() * (size_of::<u32>() + 1)
    }

    /// Takes `batch` into the contest; `false`, with the batch not taken, when the pool cannot
    /// hold it even after compaction (the caller spills).
    pub(super) fn push(&mut self, batch: &RecordBatch) -> Result<bool> {
        if batch.num_rows() == 0 {
            return Ok(true);
        }
        let keys = self.contest.keys(batch)?;
        let order = self.order_rows(batch)?;
        let rows = batch.num_rows();
        // The worst case of the index's growth is reserved with the batch, before anything is
        // taken, so that a refusal leaves the contest as it was.
        let index_before = self.index_size();
        self.winners.reserve(rows);
        let Self { table, winners, .. } = self;
        table.reserve(rows, |&index| winners[index as usize].hash);
        // Each buffer once: batches read back from a spill file share one buffer among
        // their columns, which Arrow's own measure counts once per column.
        let incoming = get_record_batch_memory_size(batch)
            + keys.own_size(self.contest.computed_key)
            + order.size()
            + self.index_size().saturating_sub(index_before);
        if !self.try_reserve(incoming)? {
            return Ok(false);
        }
        let batch_index = u32::try_from(self.buffered.len())
            .map_err(|_| DataFusionError::Internal("too many buffered batches".into()))?;
        self.buffered.push(Buffered {
            batch: batch.clone(),
            keys,
            order,
        });
        self.buffered_rows += rows;
        self.contest_batch(batch_index, rows)?;
        if self.buffered_rows >= COMPACTION_MIN_ROWS && self.buffered_rows > 2 * self.winners.len()
        {
            self.compact()?;
        }
        Ok(true)
    }

    /// Lets every row of buffered batch `batch_index` compete with its key's winner.
    fn contest_batch(&mut self, batch_index: u32, rows: usize) -> Result<()> {
        let Self {
            buffered,
            winners,
            table,
            contest,
            ..
        } = self;
        let current = &buffered[batch_index as usize];
        let hashes = contest.hashes(&current.keys, rows);
        for (row, hash) in hashes.into_iter().enumerate() {
            let entry = table.entry(
                hash,
                |&index| {
                    let winner = winners[index as usize];
                    winner.hash == hash
                        && current.keys.same(
                            row,
                            &buffered[winner.batch as usize].keys,
                            winner.row as usize,
                        )
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
        Ok(())
    }

    /// Grows the reservation, compacting once when the pool says no; `false` when even then
    /// it does not fit.
    fn try_reserve(&mut self, bytes: usize) -> Result<bool> {
        if self.reservation.try_grow(bytes).is_ok() {
            return Ok(true);
        }
        self.compact()?;
        Ok(self.reservation.try_grow(bytes).is_ok())
    }

    /// Replaces the buffered batches by the winners alone.
    fn compact(&mut self) -> Result<()> {
        if self.winners.len() == self.buffered_rows || self.buffered.is_empty() {
            return Ok(());
        }
        let batch = self.winning_rows()?;
        let keys = self.contest.keys(&batch)?;
        let order = self.order_rows(&batch)?;
        for (row, winner) in self.winners.iter_mut().enumerate() {
            winner.batch = 0;
            winner.row = row as u32;
        }
        let size = get_record_batch_memory_size(&batch)
            + keys.own_size(self.contest.computed_key)
            + order.size()
            + self.index_size();
        self.buffered_rows = batch.num_rows();
        self.buffered = vec![Buffered { batch, keys, order }];
        self.reservation.resize(size);
        Ok(())
    }

    /// The rows of `batch` in order format.
    fn order_rows(&self, batch: &RecordBatch) -> Result<Rows> {
        Ok(self.order_format.convert_columns(&evaluate(
            self.contest.order.iter().map(|sort| Arc::clone(&sort.expr)),
            batch,
        )?)?)
    }

    /// Every winner, as one batch of input rows.
    fn winning_rows(&self) -> Result<RecordBatch> {
        let batches: Vec<&RecordBatch> = self.buffered.iter().map(|b| &b.batch).collect();
        let indices: Vec<(usize, usize)> = self
            .winners
            .iter()
            .map(|winner| (winner.batch as usize, winner.row as usize))
            .collect();
        Ok(interleave_record_batch(&batches, &indices)?)
    }

    /// Empties the contest, handing its winners to `sink` partitioned by key hash through
    /// `partition_of`, in batches of about `batch_size` rows; the reservation is freed.
    ///
    /// Buffered batch by buffered batch, each released once its winners are handed on, so
    /// that spilling never holds a second copy of the winners: the peak is the buffered input
    /// plus one batch per partition.
    pub(super) fn drain_partitioned(
        &mut self,
        partitions: usize,
        batch_size: usize,
        partition_of: impl Fn(u64) -> usize,
        mut sink: impl FnMut(usize, RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let mut winners = std::mem::take(&mut self.winners);
        self.table = hashbrown::HashTable::new();
        winners.sort_unstable_by_key(|winner| (winner.batch, winner.row));
        let mut pending = PendingPartitions::new(partitions, batch_size);
        let mut start = 0;
        for (index, held) in std::mem::take(&mut self.buffered).into_iter().enumerate() {
            let count = winners[start..].partition_point(|winner| winner.batch as usize <= index);
            let mut indices: Vec<Vec<u32>> = vec![Vec::new(); partitions];
            for winner in &winners[start..start + count] {
                indices[partition_of(winner.hash)].push(winner.row);
            }
            start += count;
            for (partition, rows) in indices.into_iter().enumerate() {
                if !rows.is_empty() {
                    let taken = take_record_batch(&held.batch, &UInt32Array::from(rows))?;
                    pending.push(partition, taken, &mut sink)?;
                }
            }
        }
        pending.flush(&mut sink)?;
        self.buffered_rows = 0;
        self.reservation.free();
        Ok(())
    }

    /// The winners in batches of `batch_size`, each with the rank column appended.
    pub(super) fn into_batches(
        self,
        schema: SchemaRef,
        batch_size: usize,
    ) -> impl Iterator<Item = Result<RecordBatch>> + Send {
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
        chunks.into_iter().map(move |chunk| {
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

/// Rows on their way to each spill partition, handed on once a partition has a batch's worth.
struct PendingPartitions {
    batches: Vec<Vec<RecordBatch>>,
    rows: Vec<usize>,
    batch_size: usize,
}

impl PendingPartitions {
    fn new(partitions: usize, batch_size: usize) -> Self {
        Self {
            batches: vec![Vec::new(); partitions],
            rows: vec![0; partitions],
            batch_size: batch_size.max(1),
        }
    }

    fn push(
        &mut self,
        partition: usize,
        batch: RecordBatch,
        sink: &mut impl FnMut(usize, RecordBatch) -> Result<()>,
    ) -> Result<()> {
        self.rows[partition] += batch.num_rows();
        self.batches[partition].push(batch);
        if self.rows[partition] >= self.batch_size {
            self.hand_on(partition, sink)?;
        }
        Ok(())
    }

    fn hand_on(
        &mut self,
        partition: usize,
        sink: &mut impl FnMut(usize, RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let batches = std::mem::take(&mut self.batches[partition]);
        self.rows[partition] = 0;
        if let Some(first) = batches.first() {
            let joined = concat_batches(&first.schema(), &batches)?;
            sink(partition, joined)?;
        }
        Ok(())
    }

    fn flush(&mut self, sink: &mut impl FnMut(usize, RecordBatch) -> Result<()>) -> Result<()> {
        (0..self.batches.len()).try_for_each(|partition| self.hand_on(partition, sink))
    }
}
