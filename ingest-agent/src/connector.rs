//! The seam every connector implements: read the next chunk past a position.

use crate::IngestError;
use crate::landing::ChunkWriter;
use crate::state::SourceState;

/// A chunk a connector read: the writers holding its rows (one per parallel reader) and the
/// source's position after it, which is committed with them.
pub struct Chunk {
    /// The writers of the chunk (at least one).
    pub parts: Vec<ChunkWriter>,
    /// The position after the chunk.
    pub position: serde_json::Value,
    /// True when the source has nothing more now (no further chunk is asked for).
    pub last: bool,
}

/// A connector: reads a source in chunks, each past the position the previous one left.
/// Reading must be deterministic from the position, so that a chunk redone after a crash
/// reads what the lost attempt read (or more, never less).
#[async_trait::async_trait]
pub trait Connector: Send {
    /// Reads the chunk after `state` into `chunk` (and parts of it); `None` when there is
    /// nothing new.
    async fn read_chunk(
        &mut self,
        state: &SourceState,
        chunk: ChunkWriter,
    ) -> Result<Option<Chunk>, IngestError>;
}
