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
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio_postgres::types::Type;

use crate::IngestError;
use crate::database::SqlSource;
use crate::landing::ChunkWriter;
use crate::postgres_tls::{RustlsConnect, TlsOptions};
use crate::secrets::SecretRef;

/// Rows per Arrow batch decoded from the COPY stream.
const BATCH_ROWS: usize = 8192;

/// One column: how it is selected, how its text is parsed, how it lands.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    select: String,
    parsed: DataType,
    landed: DataType,
    field: String,
}

/// A connection to `config`, over TLS when `tls` is given (the server may still refuse it
/// under `sslmode=prefer`); its I/O runs on a task of its own.
async fn open(
    config: &tokio_postgres::Config,
    tls: Option<RustlsConnect>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    fn drive<F>(connection: F)
    where
        F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
    {
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(error = %err, "postgres connection closed");
            }
        });
    }
    match tls {
        Some(tls) => {
            let (client, connection) = config.connect(tls).await?;
            drive(connection);
            Ok(client)
        }
        None => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            drive(connection);
            Ok(client)
        }
    }
}

/// A PostgreSQL database and the connections open to it.
pub struct Postgres {
    connection: SecretRef,
    retries: u32,
    source_name: String,
    pool: Vec<Arc<tokio_postgres::Client>>,
}

impl Postgres {
    /// The database at `connection` (no connection is made before the first chunk).
    pub fn new(connection: SecretRef, retries: u32, source_name: &str) -> Self {
        Postgres {
            connection,
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

    async fn connect(&self) -> Result<tokio_postgres::Client, IngestError> {
        let url = self.connection.resolve()?;
        let (url, tls) = TlsOptions::from_url(url.expose());
        let config: tokio_postgres::Config = url.parse().map_err(|_| {
            self.connect_error(
                "the connection URL is not valid (its text is not shown: it may hold a secret)",
            )
        })?;
        let tls = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => None,
            _ => Some(tls.connector().map_err(|err| self.connect_error(err))?),
        };
        let backoff = strata_core::retry::Backoff::new(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(10),
        );
        let mut attempt = 0;
        loop {
            match open(&config, tls.clone()).await {
                Ok(client) => {
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

    /// The columns and how each is read.
    async fn plan_columns(
        &self,
        client: &tokio_postgres::Client,
        relation: &str,
    ) -> Result<Vec<ColumnPlan>, IngestError> {
        let statement = client
            .prepare(&format!("SELECT * FROM {relation} LIMIT 0"))
            .await
            .map_err(|err| self.read_error(relation, &err))?;
        // A table's numeric columns have their declared precision in pg_attribute.
        let table = (!relation.starts_with('(')).then_some(relation);
        let typmods = match table {
            Some(table) => client
                .query(
                    "SELECT attname::text, atttypmod FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped",
                    &[&table],
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

/// The server's message (never the connection string).
/// What the server said, or the error with its causes (a TLS handshake names why the
/// certificate was refused).
fn database_message(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut message = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        message = format!("{message}: {inner}");
        cause = inner.source();
    }
    message
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
impl SqlSource for Postgres {
    type Columns = Vec<ColumnPlan>;

    fn quote_ident(&self, name: &str) -> String {
        quote_ident(name)
    }

    fn quote_literal(&self, value: &str) -> String {
        format!("'{}'", value.replace('\'', "''"))
    }

    fn as_text(&self, expr: &str) -> String {
        format!("({expr})::text")
    }

    async fn open(&mut self, count: usize) -> Result<(), IngestError> {
        self.pool.retain(|client| !client.is_closed());
        while self.pool.len() < count {
            let client = self.connect().await?;
            self.pool.push(Arc::new(client));
        }
        Ok(())
    }

    async fn first_row(&self, sql: &str) -> Result<Vec<Option<String>>, IngestError> {
        let row = self.pool[0]
            .query_one(sql, &[])
            .await
            .map_err(|err| self.read_error(sql, &err))?;
        Ok((0..row.len()).map(|index| row.get(index)).collect())
    }

    async fn columns(&self, relation: &str) -> Result<Arc<Vec<ColumnPlan>>, IngestError> {
        Ok(Arc::new(self.plan_columns(&self.pool[0], relation).await?))
    }

    fn read_part(
        &self,
        index: usize,
        columns: Arc<Vec<ColumnPlan>>,
        relation: String,
        filter: String,
        part: ChunkWriter,
    ) -> BoxFuture<'static, Result<ChunkWriter, IngestError>> {
        copy_part(
            Arc::clone(&self.pool[index % self.pool.len()]),
            columns,
            relation,
            filter,
            part,
            self.source_name.clone(),
        )
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_keep_their_declared_precision() {
        // numeric(12, 2): ((12 << 16) | 2) + 4.
        assert_eq!(numeric_precision((12 << 16 | 2) + 4), Some((12, 2)));
        assert_eq!(numeric_precision(-1), None);
        assert_eq!(numeric_precision((60 << 16) + 4), None);
    }
}
