//! What the database connectors share: a table or query read in chunks past a cursor value,
//! each chunk split into key ranges read at the same time over a pool of connections. The
//! databases differ only in how they quote, print values as text and stream rows
//! ([`SqlSource`]).

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::IngestError;
use crate::connector::{Chunk, Connector};
use crate::landing::ChunkWriter;
use crate::spec::DatabaseSpec;
use crate::state::SourceState;

/// A database, as the shared chunking sees it.
#[async_trait::async_trait]
pub trait SqlSource: Send + Sync + 'static {
    /// How the columns of one chunk are read (planned once per chunk, shared by its parts).
    type Columns: Send + Sync + 'static;

    /// Quotes an identifier.
    fn quote_ident(&self, name: &str) -> String;

    /// Quotes a string literal.
    fn quote_literal(&self, value: &str) -> String;

    /// The SQL expression `expr` printed as text.
    fn as_text(&self, expr: &str) -> String;

    /// Makes sure `count` connections are open (they are kept for the next chunks).
    async fn open(&mut self, count: usize) -> Result<(), IngestError>;

    /// The first row of `sql` (every column printed as text by the query itself).
    async fn first_row(&self, sql: &str) -> Result<Vec<Option<String>>, IngestError>;

    /// The columns of `relation` and how each is read.
    async fn columns(&self, relation: &str) -> Result<Arc<Self::Columns>, IngestError>;

    /// Reads the rows of `relation` that match `filter` into `part`, over connection `index`.
    fn read_part(
        &self,
        index: usize,
        columns: Arc<Self::Columns>,
        relation: String,
        filter: String,
        part: ChunkWriter,
    ) -> BoxFuture<'static, Result<ChunkWriter, IngestError>>;
}

/// The last landed cursor value, as the database prints it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DatabasePosition {
    watermark: Option<String>,
}

/// A table or query of a database.
pub struct DatabaseConnector<S> {
    spec: DatabaseSpec,
    database: S,
    source_name: String,
}

impl<S: SqlSource> DatabaseConnector<S> {
    /// Reads `spec` from `database`.
    pub fn new(spec: DatabaseSpec, database: S, source_name: &str) -> Self {
        DatabaseConnector {
            spec,
            database,
            source_name: source_name.to_string(),
        }
    }

    /// What is read: the table, or the query as a derived table.
    fn relation(&self) -> String {
        match (&self.spec.table, &self.spec.query) {
            (Some(table), _) => table.clone(),
            (_, Some(query)) => {
                format!("({}) AS strata_source", query.trim().trim_end_matches(';'))
            }
            (None, None) => unreachable!("checked when the spec was parsed"),
        }
    }

    /// The rows past `watermark` up to `upper` on the cursor column.
    fn cursor_filter(&self, watermark: Option<&str>, upper: Option<&str>) -> String {
        let Some(cursor) = &self.spec.cursor else {
            return "1 = 1".into();
        };
        let cursor = self.database.quote_ident(cursor);
        let mut parts = vec![format!("{cursor} IS NOT NULL")];
        if let Some(watermark) = watermark {
            let watermark = self.database.quote_literal(watermark);
            parts.push(format!("{cursor} > {watermark}"));
        }
        if let Some(upper) = upper {
            let upper = self.database.quote_literal(upper);
            parts.push(format!("{cursor} <= {upper}"));
        }
        parts.join(" AND ")
    }

    /// The cursor value closing the next chunk: the `chunk_rows`-th value past the watermark
    /// (a chunk holds every row of its last value), or `None` when nothing is new.
    async fn chunk_upper(&self, watermark: Option<&str>) -> Result<Option<String>, IngestError> {
        let Some(cursor) = &self.spec.cursor else {
            return Ok(None);
        };
        let cursor = self.database.quote_ident(cursor);
        let sql = format!(
            "SELECT {} FROM (SELECT {cursor} AS c FROM {} WHERE {} ORDER BY {cursor} LIMIT {}) AS chunk",
            self.database.as_text("max(c)"),
            self.relation(),
            self.cursor_filter(watermark, None),
            self.spec.chunk_rows
        );
        Ok(self
            .database
            .first_row(&sql)
            .await?
            .into_iter()
            .next()
            .flatten())
    }

    /// `filter` split into key ranges of `split_by`, at most `parallelism` of them.
    async fn key_ranges(&self, filter: &str) -> Result<Vec<String>, IngestError> {
        let (Some(key), true) = (&self.spec.split_by, self.spec.parallelism > 1) else {
            return Ok(vec![filter.to_string()]);
        };
        let key = self.database.quote_ident(key);
        let sql = format!(
            "SELECT {}, {} FROM {} WHERE {filter}",
            self.database.as_text(&format!("min({key})")),
            self.database.as_text(&format!("max({key})")),
            self.relation()
        );
        let row = self.database.first_row(&sql).await?;
        let bound = |index: usize| -> Result<Option<i64>, IngestError> {
            row.get(index)
                .cloned()
                .flatten()
                .map(|text| {
                    text.parse::<i64>().map_err(|_| IngestError::Read {
                        source_name: self.source_name.clone(),
                        position: format!("split_by {key}"),
                        reason: format!(
                            "'{text}' is not an integer: split_by must name an integer column"
                        ),
                    })
                })
                .transpose()
        };
        let (Some(low), Some(high)) = (bound(0)?, bound(1)?) else {
            return Ok(vec![filter.to_string()]);
        };
        Ok(split_range(low, high, self.spec.parallelism)
            .into_iter()
            .enumerate()
            .map(|(index, (from, to))| {
                let nulls = if index == 0 {
                    format!(" OR {key} IS NULL")
                } else {
                    String::new()
                };
                format!("{filter} AND ({key} BETWEEN {from} AND {to}{nulls})")
            })
            .collect())
    }
}

/// `[low, high]` cut into at most `parts` contiguous inclusive ranges.
pub(crate) fn split_range(low: i64, high: i64, parts: usize) -> Vec<(i64, i64)> {
    let span = i128::from(high) - i128::from(low) + 1;
    let parts = i128::try_from(parts).unwrap_or(1).clamp(1, span.max(1));
    let step = (span + parts - 1) / parts;
    let mut ranges = Vec::new();
    let mut from = i128::from(low);
    while from <= i128::from(high) {
        let to = (from + step - 1).min(i128::from(high));
        // Both ends lie in [low, high]: they fit an i64.
        ranges.push((from as i64, to as i64));
        from = to + 1;
    }
    ranges
}

#[async_trait::async_trait]
impl<S: SqlSource> Connector for DatabaseConnector<S> {
    async fn read_chunk(
        &mut self,
        state: &SourceState,
        chunk: ChunkWriter,
    ) -> Result<Option<Chunk>, IngestError> {
        let position: DatabasePosition = state
            .position_as()
            .map_err(|reason| IngestError::State {
                table: self.source_name.clone(),
                reason,
            })?
            .unwrap_or_default();
        self.database.open(self.spec.parallelism).await?;
        let watermark = position.watermark.as_deref();
        let upper = match self.chunk_upper(watermark).await? {
            Some(upper) => Some(upper),
            None if self.spec.cursor.is_some() => return Ok(None),
            None => None,
        };
        let filter = self.cursor_filter(watermark, upper.as_deref());
        let ranges = self.key_ranges(&filter).await?;
        let relation = self.relation();
        let columns = self.database.columns(&relation).await?;
        let reads: Vec<_> = ranges
            .into_iter()
            .enumerate()
            .map(|(index, range)| {
                tokio::spawn(self.database.read_part(
                    index,
                    Arc::clone(&columns),
                    relation.clone(),
                    range,
                    chunk.part(),
                ))
            })
            .collect();
        let mut parts = Vec::with_capacity(reads.len());
        for read in futures::future::join_all(reads).await {
            parts.push(read.map_err(|err| IngestError::Internal(err.to_string()))??);
        }
        let position = DatabasePosition {
            watermark: upper.or(position.watermark),
        };
        Ok(Some(Chunk {
            parts,
            position: serde_json::to_value(&position)
                .map_err(|err| IngestError::Internal(err.to_string()))?,
            // Without a cursor, every run lands the whole table as one batch.
            last: self.spec.cursor.is_none(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ranges_cover_the_keys_once() {
        assert_eq!(split_range(1, 10, 3), [(1, 4), (5, 8), (9, 10)]);
        assert_eq!(split_range(5, 5, 4), [(5, 5)]);
        assert_eq!(split_range(i64::MIN, i64::MAX, 2).len(), 2);
    }
}
