//! The PostgreSQL connector: a table or query streamed with `COPY … TO STDOUT` (the path
//! `psql \copy` takes) and decoded into Arrow batches, split by key ranges read in parallel
//! over a pool of connections, full or incremental by a cursor column.
//!
//! Every column is selected in a form whose text Arrow reads exactly: timestamps as epoch
//! microseconds, dates as days since 1970, numerics of a declared precision as decimals,
//! and the rest (unconstrained numeric, json, arrays, intervals, uuid, bytea as hex) as
//! text. docs/ingest.md has the whole mapping.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::Type;

use crate::IngestError;
use crate::connector::{Chunk, Connector};
use crate::landing::ChunkWriter;
use crate::spec::DatabaseSpec;
use crate::state::SourceState;

/// Rows per Arrow batch decoded from the COPY stream.
const BATCH_ROWS: usize = 8192;

/// The last landed cursor value, as PostgreSQL prints it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PgPosition {
    watermark: Option<String>,
}

/// One column: how it is selected, how its text is parsed, how it lands.
#[derive(Debug, Clone)]
struct ColumnPlan {
    select: String,
    parsed: DataType,
    landed: DataType,
    field: String,
}

/// Reads one table or query.
pub struct PostgresConnector {
    spec: DatabaseSpec,
    retries: u32,
    source_name: String,
    pool: Vec<Arc<tokio_postgres::Client>>,
}

impl PostgresConnector {
    /// A connector for `spec` (no connection is made before the first chunk).
    pub fn new(spec: DatabaseSpec, retries: u32, source_name: &str) -> Self {
        PostgresConnector {
            spec,
            retries,
            source_name: source_name.to_string(),
            pool: Vec::new(),
        }
    }

    fn connect_error(&self, reason: impl std::fmt::Display) -> IngestError {
        IngestError::Connect {
            source_name: self.source_name.clone(),
            reason: reason.to_string(),
        }
    }

    fn read_error(&self, position: &str, error: &tokio_postgres::Error) -> IngestError {
        IngestError::Read {
            source_name: self.source_name.clone(),
            position: position.to_string(),
            reason: database_message(error),
        }
    }

    /// Opens connections up to `count` (kept for the next chunks: a small pool).
    async fn connections(
        &mut self,
        count: usize,
    ) -> Result<Vec<Arc<tokio_postgres::Client>>, IngestError> {
        self.pool.retain(|client| !client.is_closed());
        while self.pool.len() < count {
            let client = self.connect().await?;
            self.pool.push(Arc::new(client));
        }
        Ok(self.pool[..count].to_vec())
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, IngestError> {
        let url = self.spec.connection.resolve()?;
        let config: tokio_postgres::Config = url.expose().parse().map_err(|_| {
            self.connect_error(
                "the connection URL is not valid (its text is not shown: it may hold a secret)",
            )
        })?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(self.connect_error(
                "sslmode=require: TLS connections are not supported yet; connect through a TLS proxy or a trusted network",
            ));
        }
        let backoff = strata_core::retry::Backoff::new(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(10),
        );
        let mut attempt = 0;
        loop {
            match config.connect(tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(async move {
                        if let Err(err) = connection.await {
                            tracing::warn!(error = %err, "postgres connection closed");
                        }
                    });
                    client
                        .batch_execute("SET TIME ZONE 'UTC'; SET extra_float_digits = 3")
                        .await
                        .map_err(|err| self.connect_error(database_message(&err)))?;
                    return Ok(client);
                }
                Err(err) if attempt < self.retries => {
                    attempt += 1;
                    tracing::info!(source = %self.source_name, error = %database_message(&err), attempt, "retrying connection");
                    tokio::time::sleep(backoff.delay(attempt)).await;
                }
                Err(err) => {
                    return Err(self.connect_error(format!(
                        "{} (after {} retries)",
                        database_message(&err),
                        self.retries
                    )));
                }
            }
        }
    }

    /// What is read: the table, or the query as a subquery.
    fn relation(&self) -> String {
        match (&self.spec.table, &self.spec.query) {
            (Some(table), _) => table.clone(),
            (None, Some(query)) => {
                format!("({}) AS strata_source", query.trim().trim_end_matches(';'))
            }
            (None, None) => unreachable!("checked when the spec was parsed"),
        }
    }

    /// The columns and how each is read.
    async fn plan_columns(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<Vec<ColumnPlan>, IngestError> {
        let relation = self.relation();
        let statement = client
            .prepare(&format!("SELECT * FROM {relation} LIMIT 0"))
            .await
            .map_err(|err| self.read_error(&relation, &err))?;
        let typmods = match &self.spec.table {
            Some(table) => client
                .query(
                    "SELECT attname::text, atttypmod FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped",
                    &[table],
                )
                .await
                .map_err(|err| self.read_error(table, &err))?
                .into_iter()
                .map(|row| (row.get::<_, String>(0), row.get::<_, i32>(1)))
                .collect(),
            None => std::collections::HashMap::new(),
        };
        Ok(statement
            .columns()
            .iter()
            .map(|column| {
                let typmod = typmods.get(column.name()).copied().unwrap_or(-1);
                plan_column(column.name(), column.type_(), typmod)
            })
            .collect())
    }

    /// The filter of the rows after `watermark` up to `upper` on the cursor column.
    fn cursor_filter(&self, watermark: Option<&str>, upper: Option<&str>) -> String {
        let Some(cursor) = &self.spec.cursor else {
            return "TRUE".into();
        };
        let cursor = quote_ident(cursor);
        let mut parts = vec![format!("{cursor} IS NOT NULL")];
        if let Some(watermark) = watermark {
            parts.push(format!("{cursor} > {}", quote_literal(watermark)));
        }
        if let Some(upper) = upper {
            parts.push(format!("{cursor} <= {}", quote_literal(upper)));
        }
        parts.join(" AND ")
    }

    /// The cursor value closing the next chunk: the `chunk_rows`-th value past the watermark
    /// (a chunk holds every row of its last value), or `None` when nothing is new.
    async fn chunk_upper(
        &self,
        client: &tokio_postgres::Client,
        watermark: Option<&str>,
    ) -> Result<Option<String>, IngestError> {
        let Some(cursor) = &self.spec.cursor else {
            return Ok(None);
        };
        let cursor = quote_ident(cursor);
        let sql = format!(
            "SELECT max(c)::text FROM (SELECT {cursor} AS c FROM {} WHERE {} ORDER BY {cursor} LIMIT {}) AS chunk",
            self.relation(),
            self.cursor_filter(watermark, None),
            self.spec.chunk_rows
        );
        let row = client
            .query_one(&sql, &[])
            .await
            .map_err(|err| self.read_error(&format!("the chunk after {watermark:?}"), &err))?;
        Ok(row.get(0))
    }

    /// Splits `filter`'s rows into key ranges of `split_by`, at most `parallelism`.
    async fn key_ranges(
        &self,
        client: &tokio_postgres::Client,
        filter: &str,
    ) -> Result<Vec<String>, IngestError> {
        let (Some(key), true) = (&self.spec.split_by, self.spec.parallelism > 1) else {
            return Ok(vec![filter.to_string()]);
        };
        let key = quote_ident(key);
        let sql = format!(
            "SELECT min({key})::bigint, max({key})::bigint FROM {} WHERE {filter}",
            self.relation()
        );
        let row = client
            .query_one(&sql, &[])
            .await
            .map_err(|err| self.read_error(&format!("the key range of {key}"), &err))?;
        let (Some(low), Some(high)): (Option<i64>, Option<i64>) = (row.get(0), row.get(1)) else {
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
fn split_range(low: i64, high: i64, parts: usize) -> Vec<(i64, i64)> {
    let span = i128::from(high) - i128::from(low) + 1;
    let parts = i128::try_from(parts).unwrap_or(1).clamp(1, span.max(1));
    let step = (span + parts - 1) / parts;
    let mut ranges = Vec::new();
    let mut from = i128::from(low);
    while from <= i128::from(high) {
        let to = (from + step - 1).min(i128::from(high));
        ranges.push((from as i64, to as i64));
        from = to + 1;
    }
    ranges
}

/// How a column of type `data_type` (with type modifier `typmod`) is selected and landed.
fn plan_column(name: &str, data_type: &Type, typmod: i32) -> ColumnPlan {
    let column = quote_ident(name);
    let plan = |select: String, parsed: DataType, landed: DataType| ColumnPlan {
        select,
        parsed,
        landed,
        field: name.to_string(),
    };
    // COPY prints a value with its type's output function: PostgreSQL's text (char(n) with
    // its padding, which a cast to text would strip).
    let text = || plan(column.clone(), DataType::Utf8, DataType::Utf8);
    match *data_type {
        Type::BOOL => plan(
            format!("{column}::text"),
            DataType::Boolean,
            DataType::Boolean,
        ),
        Type::INT2 => plan(column, DataType::Int16, DataType::Int16),
        Type::INT4 => plan(column, DataType::Int32, DataType::Int32),
        Type::INT8 | Type::OID => plan(column, DataType::Int64, DataType::Int64),
        Type::FLOAT4 => plan(column, DataType::Float32, DataType::Float32),
        Type::FLOAT8 => plan(column, DataType::Float64, DataType::Float64),
        Type::NUMERIC => match numeric_precision(typmod) {
            Some((precision, scale)) => plan(
                format!("CASE WHEN {column} = 'NaN' THEN NULL ELSE {column} END"),
                DataType::Decimal128(precision, scale),
                DataType::Decimal128(precision, scale),
            ),
            None => text(),
        },
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let zone = (*data_type == Type::TIMESTAMPTZ).then(|| "UTC".into());
            plan(
                format!(
                    "CASE WHEN isfinite({column}) THEN (extract(epoch FROM {column}) * 1000000)::bigint END"
                ),
                DataType::Int64,
                DataType::Timestamp(TimeUnit::Microsecond, zone),
            )
        }
        Type::DATE => plan(
            format!("CASE WHEN isfinite({column}) THEN {column} - DATE '1970-01-01' END"),
            DataType::Int32,
            DataType::Date32,
        ),
        Type::BYTEA => plan(
            format!("encode({column}, 'hex')"),
            DataType::Utf8,
            DataType::Utf8,
        ),
        _ if matches!(data_type.kind(), tokio_postgres::types::Kind::Array(_)) => plan(
            format!("array_to_json({column})::text"),
            DataType::Utf8,
            DataType::Utf8,
        ),
        _ => text(),
    }
}

/// The declared precision and scale of a `numeric(p, s)` that fits a 128-bit decimal.
fn numeric_precision(typmod: i32) -> Option<(u8, i8)> {
    if typmod < 4 {
        return None;
    }
    let precision = ((typmod - 4) >> 16) & 0xffff;
    let scale = (typmod - 4) & 0xffff;
    (1..=38)
        .contains(&precision)
        .then(|| (u8::try_from(precision).ok(), i8::try_from(scale).ok()))
        .and_then(|(precision, scale)| Some((precision?, scale?)))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The server's message (never the connection string).
fn database_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// Streams the rows of `filter` into `part` with one COPY.
async fn copy_part(
    client: Arc<tokio_postgres::Client>,
    columns: Arc<Vec<ColumnPlan>>,
    relation: String,
    filter: String,
    mut part: ChunkWriter,
    source_name: String,
) -> Result<ChunkWriter, IngestError> {
    let select: Vec<&str> = columns
        .iter()
        .map(|column| column.select.as_str())
        .collect();
    let sql = format!(
        "COPY (SELECT {} FROM {relation} WHERE {filter}) TO STDOUT WITH (FORMAT csv, NULL '\\N')",
        select.join(", ")
    );
    let read_error = |reason: String| IngestError::Read {
        source_name: source_name.clone(),
        position: format!("rows where {filter}"),
        reason,
    };
    let parsed = Arc::new(Schema::new(
        columns
            .iter()
            .map(|column| Field::new(&column.field, column.parsed.clone(), true))
            .collect::<Vec<_>>(),
    ));
    let landed: SchemaRef = Arc::new(Schema::new(
        columns
            .iter()
            .map(|column| Field::new(&column.field, column.landed.clone(), true))
            .collect::<Vec<_>>(),
    ));
    let null = regex::Regex::new(r"^\\N$").map_err(|err| IngestError::Internal(err.to_string()))?;
    let mut decoder = arrow::csv::ReaderBuilder::new(Arc::clone(&parsed))
        .with_header(false)
        .with_null_regex(null)
        .with_batch_size(BATCH_ROWS)
        .build_decoder();
    let stream = client
        .copy_out(&sql)
        .await
        .map_err(|err| read_error(database_message(&err)))?;
    let mut stream = std::pin::pin!(stream.map_err(|err| read_error(database_message(&err))));
    while let Some(bytes) = stream.next().await {
        let bytes = bytes?;
        let mut offset = 0;
        while offset < bytes.len() {
            let consumed = decoder
                .decode(&bytes[offset..])
                .map_err(|err| read_error(err.to_string()))?;
            offset += consumed;
            if decoder.capacity() == 0 {
                write_decoded(&mut decoder, &landed, &mut part, &read_error).await?;
            }
        }
    }
    write_decoded(&mut decoder, &landed, &mut part, &read_error).await?;
    Ok(part)
}

async fn write_decoded(
    decoder: &mut arrow::csv::reader::Decoder,
    landed: &SchemaRef,
    part: &mut ChunkWriter,
    read_error: &impl Fn(String) -> IngestError,
) -> Result<(), IngestError> {
    let Some(batch) = decoder.flush().map_err(|err| read_error(err.to_string()))? else {
        return Ok(());
    };
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(landed.fields())
        .map(|(column, field)| cast(column, field.data_type()))
        .collect::<Result<_, _>>()
        .map_err(|err| read_error(err.to_string()))?;
    let batch = RecordBatch::try_new(Arc::clone(landed), columns)
        .map_err(|err| read_error(err.to_string()))?;
    part.write(batch).await
}

#[async_trait::async_trait]
impl Connector for PostgresConnector {
    async fn read_chunk(
        &mut self,
        state: &SourceState,
        chunk: ChunkWriter,
    ) -> Result<Option<Chunk>, IngestError> {
        let position: PgPosition = state
            .position_as()
            .map_err(|reason| IngestError::State {
                table: self.source_name.clone(),
                reason,
            })?
            .unwrap_or_default();
        let clients = self.connections(self.spec.parallelism).await?;
        let first = Arc::clone(&clients[0]);
        let watermark = position.watermark.as_deref();
        let upper = match self.chunk_upper(&first, watermark).await? {
            Some(upper) => Some(upper),
            None if self.spec.cursor.is_some() => return Ok(None),
            None => None,
        };
        let filter = self.cursor_filter(watermark, upper.as_deref());
        let ranges = self.key_ranges(&first, &filter).await?;
        let columns = Arc::new(self.plan_columns(&first).await?);
        let relation = self.relation();
        let mut tasks = Vec::with_capacity(ranges.len());
        for (index, range) in ranges.into_iter().enumerate() {
            let part = chunk.part();
            tasks.push(tokio::spawn(copy_part(
                Arc::clone(&clients[index % clients.len()]),
                Arc::clone(&columns),
                relation.clone(),
                range,
                part,
                self.source_name.clone(),
            )));
        }
        let mut parts = Vec::with_capacity(tasks.len());
        for task in futures::future::join_all(tasks).await {
            parts.push(task.map_err(|err| IngestError::Internal(err.to_string()))??);
        }
        // Without a cursor, every run lands the whole table as one batch.
        let last = self.spec.cursor.is_none();
        let position = PgPosition {
            watermark: upper.or(position.watermark),
        };
        Ok(Some(Chunk {
            parts,
            position: serde_json::to_value(&position)
                .map_err(|err| IngestError::Internal(err.to_string()))?,
            last,
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

    #[test]
    fn numerics_keep_their_declared_precision() {
        // numeric(12, 2): ((12 << 16) | 2) + 4.
        assert_eq!(numeric_precision((12 << 16 | 2) + 4), Some((12, 2)));
        assert_eq!(numeric_precision(-1), None);
        assert_eq!(numeric_precision((60 << 16) + 4), None);
    }
}
