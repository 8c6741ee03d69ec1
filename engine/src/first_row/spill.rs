//! Deduplication that spills: a grace hash partitioning of the key space.
//!
//! Each output partition of [`super::FirstRowPerKeyExec`] keeps its winners in memory while the
//! pool lets it. When the pool refuses, the winners so far and every later input row go to
//! [`FAN_OUT`] spill files by their key's hash — all rows of a key land in the same file — and
//! each file is then deduplicated on its own, in memory, or spilled again by the next bits of
//! the hash when it still does not fit. One key's rows never need more than one winner's
//! memory, so only a pool too small for the winners of one `FAN_OUT^MAX_LEVEL`-th of the keys
//! fails, with an error that names the setting to raise.

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
}

/// One output partition's contest: in memory, or spilled to partitions on disk.
struct Level {
    winners: Winners,
    spilled: Option<SpillPartitions>,
    level: u32,
}

/// The outcome of a contest over all its input.
enum Outcome {
    /// Every winner fit in memory.
    Held(Box<Winners>),
    /// The input went to spill files, each to be deduplicated on its own.
    Spilled(Vec<Spilled>),
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

    /// Takes `batch` into the contest, spilling the contest when it does not fit.
    fn absorb(&self, level: &mut Level, batch: &RecordBatch) -> Result<()> {
        if level.spilled.is_none() && level.winners.push(batch)? {
            return Ok(());
        }
        if level.spilled.is_none() {
            if level.level >= MAX_LEVEL {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "deduplicating by row_number() = 1: the winning rows of one of {} key \
                     partitions ({} keys so far, a batch of {} bytes to add) do not fit in the \
                     task's memory pool ({} bytes reserved by all its operators); raise \
                     engine.memory_limit_mib (--memory-limit-mib)",
                    FAN_OUT.pow(MAX_LEVEL),
                    level.winners.keys(),
                    datafusion::common::utils::memory::get_record_batch_memory_size(batch),
                    self.pool.reserved(),
                )));
            }
            let mut partitions = SpillPartitions::new(&self.disk, &self.input_schema, level.level);
            let at = level.level;
            level.winners.drain_partitioned(
                FAN_OUT,
                self.batch_size,
                |hash| partition_of(hash, at),
                |partition, rows| partitions.write(partition, &rows),
            )?;
            level.spilled = Some(partitions);
        }
        if let Some(partitions) = &mut level.spilled {
            partitions.write_input(&self.contest, batch)?;
        }
        Ok(())
    }

    fn outcome(&self, level: Level) -> Result<Outcome> {
        Ok(match level.spilled {
            None => Outcome::Held(Box::new(level.winners)),
            Some(partitions) => Outcome::Spilled(partitions.finish()?),
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
        let (current, pending): (Option<Batches>, Vec<Spilled>) = match outcome {
            Outcome::Held(winners) => (
                Some(Box::new(winners.into_batches(
                    Arc::clone(&self.output_schema),
                    self.batch_size,
                ))),
                Vec::new(),
            ),
            Outcome::Spilled(files) => (None, files),
        };
        futures::stream::try_unfold(
            (self, current, pending),
            |(dedup, mut current, mut pending)| async move {
                loop {
                    if let Some(batch) = current.as_mut().and_then(Iterator::next) {
                        return Ok(Some((batch?, (dedup, current, pending))));
                    }
                    // The finished part's winners (and their reservation) go before the next
                    // part is read: each part may use the whole of the operator's share.
                    current = None;
                    let Some(file) = pending.pop() else {
                        return Ok(None);
                    };
                    let worker = dedup.clone();
                    let outcome = tokio::task::spawn_blocking(move || worker.contest_file(&file))
                        .await
                        .map_err(|err| DataFusionError::External(Box::new(err)))??;
                    match outcome {
                        Outcome::Held(winners) => {
                            current =
                                Some(Box::new(winners.into_batches(
                                    Arc::clone(&dedup.output_schema),
                                    dedup.batch_size,
                                )));
                        }
                        Outcome::Spilled(files) => pending.extend(files),
                    }
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

/// The spill files of one partitioning, created when first written.
struct SpillPartitions {
    disk: Arc<DiskManager>,
    schema: SchemaRef,
    level: u32,
    files: Vec<Option<PartitionFile>>,
}

impl SpillPartitions {
    fn new(disk: &Arc<DiskManager>, schema: &SchemaRef, level: u32) -> Self {
        Self {
            disk: Arc::clone(disk),
            schema: Arc::clone(schema),
            level,
            files: (0..FAN_OUT).map(|_| None).collect(),
        }
    }

    fn write(&mut self, partition: usize, rows: &RecordBatch) -> Result<()> {
        if self.files[partition].is_none() {
            let file = self
                .disk
                .create_tmp_file("deduplicating by row_number() = 1")?;
            let writer = StreamWriter::try_new(file.open_writer()?, &self.schema)?;
            self.files[partition] = Some((file, writer));
        }
        if let Some((_, writer)) = &mut self.files[partition] {
            writer.write(rows)?;
        }
        Ok(())
    }

    /// Writes each row of `batch` to its key's partition.
    fn write_input(&mut self, contest: &Contest, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let hashes = contest.hashes(&contest.keys(batch)?, batch.num_rows());
        let mut indices: Vec<Vec<u32>> = vec![Vec::new(); FAN_OUT];
        for (row, hash) in hashes.into_iter().enumerate() {
            indices[partition_of(hash, self.level)].push(row as u32);
        }
        for (partition, rows) in indices.into_iter().enumerate() {
            if !rows.is_empty() {
                self.write(
                    partition,
                    &take_record_batch(batch, &UInt32Array::from(rows))?,
                )?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<Spilled>> {
        let level = self.level + 1;
        self.files
            .into_iter()
            .flatten()
            .map(|(file, mut writer)| {
                writer.finish()?;
                writer.into_inner()?.finish()?;
                Ok(Spilled { file, level })
            })
            .collect()
    }
}
