//! Deduplication that spills: a hybrid hash partitioning of the key space.
//!
//! Each output partition of [`super::FirstRowPerKeyExec`] keeps its winners in memory while the
//! pool lets it. When the pool refuses, the key space is cut into [`FAN_OUT`] partitions by
//! hash, and a quarter of them go to disk: their winners so far and every later input row of
//! theirs are written to one spill file per partition, while the others stay in memory and go
//! on competing there. Each later refusal sends a quarter of the partitions still in memory to
//! disk. So a pool just short of what the winners need writes about a quarter of the rows, not
//! all of them — the late, whole spill was the costliest case. After the input, the winners
//! held in memory are emitted, then each spill file is deduplicated on its own, the same way,
//! one level deeper (the next bits of the hash). One key's rows never need more than one winner's memory, so
//! only a pool too small for the winners of one `FAN_OUT^MAX_LEVEL`-th of the keys fails,
//! with an error that names the setting to raise.

use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::Result;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::DiskManager;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::execution::spill_file::{SpillFile, SpillWriter};
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder};
use futures::{Stream, StreamExt};

use super::winners::{Contest, Winners};

/// Spill files per partitioning.
const FAN_OUT: usize = 16;

/// Partitionings of partitionings before giving up: 16^6 (16.7 million) key partitions.
const MAX_LEVEL: u32 = 6;

/// The spill partition of a key hash at `level`: four bits per level, from bit 28 up, clear
/// of the bits the hash table uses (the lowest for buckets, the top seven for tags).
fn partition_of(hash: u64, level: u32) -> usize {
    ((hash >> (28 + 4 * level)) & (FAN_OUT as u64 - 1)) as usize
}

/// What every step of one output partition's deduplication shares.
#[derive(Clone)]
pub(super) struct Deduplication {
    pub(super) contest: Contest,
    pub(super) pool: Arc<dyn MemoryPool>,
    pub(super) disk: Arc<DiskManager>,
    pub(super) input_schema: SchemaRef,
    pub(super) output_schema: SchemaRef,
    pub(super) batch_size: usize,
    /// The memory consumer's name, e.g. `FirstRowPerKeyExec[0]`.
    pub(super) name: String,
    pub(super) spills: SpillMetrics,
}

/// What one output partition wrote to disk, shown by `explain analyze` and read by tests.
#[derive(Clone)]
pub(super) struct SpillMetrics {
    files: Count,
    rows: Count,
    bytes: Count,
}

impl SpillMetrics {
    pub(super) fn new(metrics: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        Self {
            files: MetricBuilder::new(metrics).spill_count(partition),
            rows: MetricBuilder::new(metrics).spilled_rows(partition),
            bytes: MetricBuilder::new(metrics).spilled_bytes(partition),
        }
    }
}

/// One output partition's contest: the key partitions still in memory, and once the pool has
/// refused, the files of those on disk.
struct Level {
    winners: Winners,
    spilled: Option<SpillPartitions>,
    level: u32,
}

/// The outcome of a contest over all its input: the winners of the key partitions that stayed
/// in memory (all of them when nothing spilled), and the spill files of the others, each to be
/// deduplicated on its own.
struct Outcome {
    held: Box<Winners>,
    spilled: Vec<Spilled>,
}

impl Deduplication {
    /// Deduplicates `input`; the winners come out as a stream, spilled partitions after the
    /// in-memory ones.
    pub(super) async fn run(
        self,
        mut input: SendableRecordBatchStream,
    ) -> Result<impl Stream<Item = Result<RecordBatch>> + Send> {
        let mut level = self.level(0)?;
        while let Some(batch) = input.next().await {
            self.absorb(&mut level, &batch?)?;
        }
        let outcome = self.outcome(level)?;
        Ok(self.output(outcome))
    }

    fn level(&self, level: u32) -> Result<Level> {
        let reservation = MemoryConsumer::new(&self.name)
            .with_can_spill(true)
            .register(&self.pool);
        Ok(Level {
            winners: Winners::try_new(self.contest.clone(), reservation)?,
            spilled: None,
            level,
        })
    }

    /// Takes `batch` into the contest; when the pool refuses, key partitions go to disk until
    /// what stays in memory fits.
    fn absorb(&self, level: &mut Level, batch: &RecordBatch) -> Result<()> {
        if level.spilled.is_none() {
            if level.winners.push(batch)? {
                return Ok(());
            }
            level.spilled = Some(SpillPartitions::new(self, level.level));
            self.spill_more(level, batch)?;
        }
        self.route(level, batch)
    }

    /// Writes the rows of `batch` whose key partition is on disk to its file, and takes the
    /// others into the contest in memory, spilling more partitions while the pool refuses.
    fn route(&self, level: &mut Level, batch: &RecordBatch) -> Result<()> {
        let mut batch = batch.clone();
        loop {
            let Some(partitions) = &mut level.spilled else {
                return Err(DataFusionError::Internal(
                    "deduplication routes rows before it has spilled".into(),
                ));
            };
            let Some(held) = partitions.write_input(&self.contest, &batch)? else {
                return Ok(());
            };
            if level.winners.push(&held)? {
                return Ok(());
            }
            self.spill_more(level, &held)?;
            batch = held;
        }
    }

    /// Sends a quarter of the key partitions still in memory (at least one) to disk: their
    /// winners so far are written to their files, the others' winners are taken into the
    /// contest again.
    fn spill_more(&self, level: &mut Level, refused: &RecordBatch) -> Result<()> {
        if level.level >= MAX_LEVEL {
            return Err(self.exhausted(level, refused));
        }
        let Some(partitions) = &mut level.spilled else {
            return Err(DataFusionError::Internal(
                "deduplication spills without spill files".into(),
            ));
        };
        partitions.spill_a_quarter_of_held();
        let at = level.level;
        let mut held = Vec::new();
        level.winners.drain_partitioned(
            FAN_OUT,
            self.batch_size,
            |hash| partition_of(hash, at),
            |partition, rows| {
                if partitions.on_disk(partition) {
                    partitions.write(partition, &rows)
                } else {
                    held.push(rows);
                    Ok(())
                }
            },
        )?;
        // Each batch holds the winners of one partition that stays in memory; they are unique
        // keys, so taking them back compares nothing, and they fit where more did before. They
        // are taken back without hashing them for routing until the pool refuses again; from
        // then on more partitions are on disk, and the rest are routed.
        let mut spilled_again = false;
        for rows in &held {
            if spilled_again {
                self.route(level, rows)?;
            } else if !level.winners.push(rows)? {
                spilled_again = true;
                self.spill_more(level, rows)?;
                self.route(level, rows)?;
            }
        }
        Ok(())
    }

    /// The error when even the deepest partitioning does not fit in the pool.
    fn exhausted(&self, level: &Level, refused: &RecordBatch) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "deduplicating by row_number() = 1: the winning rows of one of {} key partitions \
             ({} keys so far, a batch of {} bytes to add) do not fit in the task's memory pool \
             ({} bytes reserved by all its operators); raise engine.memory_limit_mib \
             (--memory-limit-mib)",
            FAN_OUT.pow(MAX_LEVEL),
            level.winners.keys(),
            datafusion::common::utils::memory::get_record_batch_memory_size(refused),
            self.pool.reserved(),
        ))
    }

    fn outcome(&self, level: Level) -> Result<Outcome> {
        Ok(Outcome {
            held: Box::new(level.winners),
            spilled: match level.spilled {
                None => Vec::new(),
                Some(partitions) => partitions.finish()?,
            },
        })
    }

    /// Deduplicates one spill file (blocking: it reads the file).
    fn contest_file(&self, spilled: &Spilled) -> Result<Outcome> {
        let mut level = self.level(spilled.level)?;
        for batch in spilled.read()? {
            self.absorb(&mut level, &batch?)?;
        }
        self.outcome(level)
    }

    /// The winners of `outcome`, then of each spill file in turn.
    fn output(self, outcome: Outcome) -> impl Stream<Item = Result<RecordBatch>> + Send {
        type Batches = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;
        let current: Option<Batches> = Some(Box::new(
            outcome
                .held
                .into_batches(Arc::clone(&self.output_schema), self.batch_size),
        ));
        let pending = outcome.spilled;
        futures::stream::try_unfold(
            (self, current, pending),
            |(dedup, mut current, mut pending)| async move {
                loop {
                    if let Some(batch) = current.as_mut().and_then(Iterator::next) {
                        return Ok(Some((batch?, (dedup, current, pending))));
                    }
                    // The finished part's winners (and their reservation) go before the next
                    // part is read: each part may use the whole of the operator's share.
                    drop(current.take());
                    let Some(file) = pending.pop() else {
                        return Ok(None);
                    };
                    let worker = dedup.clone();
                    let outcome = tokio::task::spawn_blocking(move || worker.contest_file(&file))
                        .await
                        .map_err(|err| DataFusionError::External(Box::new(err)))??;
                    pending.extend(outcome.spilled);
                    current = Some(Box::new(
                        outcome
                            .held
                            .into_batches(Arc::clone(&dedup.output_schema), dedup.batch_size),
                    ));
                }
            },
        )
    }
}

/// A finished spill file and the level its rows were partitioned at.
struct Spilled {
    file: Arc<dyn SpillFile>,
    /// The level its contest runs at: one more than the partitioning that wrote it.
    level: u32,
}

impl Spilled {
    fn read(&self) -> Result<StreamReader<BufReader<File>>> {
        let path = self.file.path().ok_or_else(|| {
            DataFusionError::Internal("deduplication spills to local files only".into())
        })?;
        Ok(StreamReader::try_new(
            BufReader::new(File::open(path)?),
            None,
        )?)
    }
}

/// One partition's spill file and its Arrow IPC stream writer.
type PartitionFile = (Arc<dyn SpillFile>, StreamWriter<Box<dyn SpillWriter>>);

/// The key partitions of one partitioning: which are on disk, and their files, created when
/// first written.
struct SpillPartitions {
    disk: Arc<DiskManager>,
    schema: SchemaRef,
    metrics: SpillMetrics,
    level: u32,
    on_disk: [bool; FAN_OUT],
    files: Vec<Option<PartitionFile>>,
}

impl SpillPartitions {
    /// A partitioning at `level` with every partition still in memory.
    fn new(dedup: &Deduplication, level: u32) -> Self {
        Self {
            disk: Arc::clone(&dedup.disk),
            schema: Arc::clone(&dedup.input_schema),
            metrics: dedup.spills.clone(),
            level,
            on_disk: [false; FAN_OUT],
            files: (0..FAN_OUT).map(|_| None).collect(),
        }
    }

    fn on_disk(&self, partition: usize) -> bool {
        self.on_disk[partition]
    }

    /// Marks a quarter of the partitions still in memory, rounded up, as on disk: the highest
    /// numbered first (the hash spreads keys evenly, so any quarter holds about a quarter of
    /// the rows). A quarter, not half: a pool just short of the winners then writes about a
    /// quarter of them, at the price of taking the rest into the contest again more often.
    fn spill_a_quarter_of_held(&mut self) {
        let held = self.on_disk.iter().filter(|&&on_disk| !on_disk).count();
        let mut to_spill = held.div_ceil(4);
        for on_disk in self.on_disk.iter_mut().rev() {
            if to_spill == 0 {
                break;
            }
            if !*on_disk {
                *on_disk = true;
                to_spill -= 1;
            }
        }
    }

    fn write(&mut self, partition: usize, rows: &RecordBatch) -> Result<()> {
        if self.files[partition].is_none() {
            let file = self
                .disk
                .create_tmp_file("deduplicating by row_number() = 1")?;
            let writer = StreamWriter::try_new(file.open_writer()?, &self.schema)?;
            self.files[partition] = Some((file, writer));
            self.metrics.files.add(1);
        }
        if let Some((_, writer)) = &mut self.files[partition] {
            writer.write(rows)?;
            self.metrics.rows.add(rows.num_rows());
        }
        Ok(())
    }

    /// Writes each row of `batch` whose key partition is on disk to its file; the other rows,
    /// which stay in memory, are returned as one batch (`None` when there are none).
    fn write_input(
        &mut self,
        contest: &Contest,
        batch: &RecordBatch,
    ) -> Result<Option<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let hashes = contest.hashes(&contest.keys(batch)?, batch.num_rows());
        let mut indices: Vec<Vec<u32>> = vec![Vec::new(); FAN_OUT];
        let mut held = Vec::new();
        for (row, hash) in hashes.into_iter().enumerate() {
            let partition = partition_of(hash, self.level);
            if self.on_disk[partition] {
                indices[partition].push(row as u32);
            } else {
                held.push(row as u32);
            }
        }
        for (partition, rows) in indices.into_iter().enumerate() {
            if !rows.is_empty() {
                self.write(
                    partition,
                    &take_record_batch(batch, &UInt32Array::from(rows))?,
                )?;
            }
        }
        Ok(match held.len() {
            0 => None,
            rows if rows == batch.num_rows() => Some(batch.clone()),
            _ => Some(take_record_batch(batch, &UInt32Array::from(held))?),
        })
    }

    fn finish(self) -> Result<Vec<Spilled>> {
        let level = self.level + 1;
        self.files
            .into_iter()
            .flatten()
            .map(|(file, mut writer)| {
                writer.finish()?;
                writer.into_inner()?.finish()?;
                if let Some(path) = file.path() {
                    self.metrics
                        .bytes
                        .add(std::fs::metadata(path)?.len() as usize);
                }
                Ok(Spilled { file, level })
            })
            .collect()
    }
}
