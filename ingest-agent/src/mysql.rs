//! The MySQL / MariaDB connector: the rows of a table or query streamed over the text
//! protocol (one unbuffered result per key range, each on its own pooled connection), built
//! into Arrow text columns and cast to each column's type. The session time zone is UTC, so
//! `TIMESTAMP` values land as UTC instants. docs/ingest.md has the type mapping.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::FutureExt;
use futures::future::BoxFuture;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;

use crate::IngestError;
use crate::database::SqlSource;
use crate::landing::ChunkWriter;
use crate::mysql_tls::{SslMode, TlsOptions};
use crate::secrets::SecretRef;

/// Rows per Arrow batch.
const BATCH_ROWS: usize = 8192;

/// The character set number MySQL gives binary strings.
const BINARY_CHARSET: u16 = 63;

/// How the connection pool is opened: TLS as asked, and the fallback in clear.
struct PoolOptions {
    first: mysql_async::OptsBuilder,
    clear: mysql_async::OptsBuilder,
    /// ssl-mode=PREFERRED (the default): a server without TLS is read in clear.
    may_fall_back: bool,
}

/// One column: how it is selected and how it lands.
#[derive(Debug, Clone)]
pub struct MysqlColumn {
    select: String,
    landed: DataType,
    field: String,
}

/// A MySQL or MariaDB server and its connection pool.
pub struct Mysql {
    connection: SecretRef,
    retries: u32,
    source_name: String,
    pool: Option<mysql_async::Pool>,
}

impl Mysql {
    /// The server at `connection` (nothing is opened before the first chunk).
    pub fn new(connection: SecretRef, retries: u32, source_name: &str) -> Self {
        Mysql {
            connection,
            retries,
            source_name: source_name.to_string(),
            pool: None,
        }
    }

    fn connect_error(&self, reason: impl std::fmt::Display) -> IngestError {
        IngestError::Connect {
            source_name: self.source_name.clone(),
            reason: reason.to_string(),
        }
    }

    /// The pool's options from the connection URL: with the TLS its `ssl-mode` asks for
    /// (mysql_async's own TLS parameters keep their meaning when no `ssl-mode` is set), and
    /// in clear for PREFERRED's fallback.
    fn pool_options(&self, count: usize) -> Result<PoolOptions, IngestError> {
        let url = self.connection.resolve()?;
        let (url, tls) =
            TlsOptions::from_url(url.expose()).map_err(|reason| self.connect_error(reason))?;
        let opts = mysql_async::Opts::from_url(&url).map_err(|_| {
            self.connect_error(
                "the connection URL is not valid (its text is not shown: it may hold a secret)",
            )
        })?;
        let constraints = mysql_async::PoolConstraints::new(0, count.max(1))
            .ok_or_else(|| IngestError::Internal("pool constraints".into()))?;
        let url_has_tls = opts.ssl_opts().is_some();
        let as_given = mysql_async::OptsBuilder::from_opts(opts)
            .setup(vec!["SET time_zone = '+00:00'"])
            .pool_opts(mysql_async::PoolOpts::default().with_constraints(constraints));
        let first = if url_has_tls && tls.mode.is_none() {
            as_given.clone()
        } else {
            as_given.clone().ssl_opts(tls.ssl_opts())
        };
        Ok(PoolOptions {
            first,
            clear: as_given.ssl_opts(None),
            may_fall_back: tls.effective_mode() == SslMode::Preferred && !url_has_tls,
        })
    }

    fn pool(&self) -> &mysql_async::Pool {
        self.pool.as_ref().expect("opened before use")
    }

    async fn conn(&self) -> Result<mysql_async::Conn, IngestError> {
        let backoff = strata_core::retry::Backoff::new(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(10),
        );
        let mut attempt = 0;
        loop {
            match self.pool().get_conn().await {
                Ok(conn) => return Ok(conn),
                Err(err) if attempt < self.retries => {
                    attempt += 1;
                    tracing::info!(
                        source = %self.source_name, error = %err, attempt, "retrying connection"
                    );
                    tokio::time::sleep(backoff.delay(attempt)).await;
                }
                Err(err) => {
                    return Err(
                        self.connect_error(format!("{err} (after {} retries)", self.retries))
                    );
                }
            }
        }
    }
}

/// The server answered a request for TLS without offering it.
fn offers_no_tls(err: &mysql_async::Error) -> bool {
    matches!(
        err,
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)
    )
}

fn read_error(source_name: &str, position: &str, reason: impl std::fmt::Display) -> IngestError {
    IngestError::Read {
        source_name: source_name.to_string(),
        position: position.to_string(),
        reason: reason.to_string(),
    }
}

/// How a column is selected and landed.
fn plan_column(column: &mysql_async::Column) -> MysqlColumn {
    let name = column.name_str().into_owned();
    let quoted = quote_ident(&name);
    let unsigned = column.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    let binary = column.character_set() == BINARY_CHARSET;
    let plan = |select: String, landed: DataType| MysqlColumn {
        select,
        landed,
        field: name.clone(),
    };
    match column.column_type() {
        ColumnType::MYSQL_TYPE_LONGLONG if unsigned => {
            plan(quoted.clone(), DataType::Decimal128(20, 0))
        }
        ColumnType::MYSQL_TYPE_TINY
        | ColumnType::MYSQL_TYPE_SHORT
        | ColumnType::MYSQL_TYPE_INT24
        | ColumnType::MYSQL_TYPE_LONG
        | ColumnType::MYSQL_TYPE_LONGLONG
        | ColumnType::MYSQL_TYPE_YEAR => plan(quoted.clone(), DataType::Int64),
        ColumnType::MYSQL_TYPE_FLOAT => plan(quoted.clone(), DataType::Float32),
        ColumnType::MYSQL_TYPE_DOUBLE => plan(quoted.clone(), DataType::Float64),
        ColumnType::MYSQL_TYPE_NEWDECIMAL | ColumnType::MYSQL_TYPE_DECIMAL => {
            let scale = column.decimals();
            // The display length counts the point and, when signed, the sign.
            let precision = column.column_length() - u32::from(scale > 0) - u32::from(!unsigned);
            match (u8::try_from(precision), i8::try_from(scale)) {
                (Ok(precision @ 1..=38), Ok(scale)) => {
                    plan(quoted.clone(), DataType::Decimal128(precision, scale))
                }
                _ => plan(quoted.clone(), DataType::Utf8),
            }
        }
        ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE => {
            plan(quoted.clone(), DataType::Date32)
        }
        ColumnType::MYSQL_TYPE_DATETIME | ColumnType::MYSQL_TYPE_DATETIME2 => plan(
            quoted.clone(),
            DataType::Timestamp(TimeUnit::Microsecond, None),
        ),
        ColumnType::MYSQL_TYPE_TIMESTAMP | ColumnType::MYSQL_TYPE_TIMESTAMP2 => plan(
            quoted.clone(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ),
        ColumnType::MYSQL_TYPE_BIT => plan(
            format!("CAST({quoted} AS UNSIGNED)"),
            DataType::Decimal128(20, 0),
        ),
        ColumnType::MYSQL_TYPE_GEOMETRY => plan(format!("ST_AsText({quoted})"), DataType::Utf8),
        ColumnType::MYSQL_TYPE_TINY_BLOB
        | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
        | ColumnType::MYSQL_TYPE_LONG_BLOB
        | ColumnType::MYSQL_TYPE_BLOB
        | ColumnType::MYSQL_TYPE_VAR_STRING
        | ColumnType::MYSQL_TYPE_STRING
        | ColumnType::MYSQL_TYPE_VARCHAR
            if binary =>
        {
            plan(format!("HEX({quoted})"), DataType::Utf8)
        }
        _ => plan(quoted.clone(), DataType::Utf8),
    }
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Streams the rows of `filter` into `part`.
async fn read_rows(
    mut conn: mysql_async::Conn,
    columns: Arc<Vec<MysqlColumn>>,
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
        "SELECT {} FROM {relation} WHERE {filter}",
        select.join(", ")
    );
    let position = format!("rows where {filter}");
    let landed: SchemaRef = Arc::new(Schema::new(
        columns
            .iter()
            .map(|column| Field::new(&column.field, column.landed.clone(), true))
            .collect::<Vec<_>>(),
    ));
    let mut result = conn
        .query_iter(sql)
        .await
        .map_err(|err| read_error(&source_name, &position, err))?;
    let mut builders: Vec<StringBuilder> = columns.iter().map(|_| StringBuilder::new()).collect();
    let mut rows = 0;
    loop {
        let row = result
            .next()
            .await
            .map_err(|err| read_error(&source_name, &position, err))?;
        let done = row.is_none();
        if let Some(row) = row {
            for (builder, value) in builders.iter_mut().zip(row.unwrap()) {
                builder.append_option(text_of(value));
            }
            rows += 1;
        }
        if rows == BATCH_ROWS || (done && rows > 0) {
            let batch = typed_batch(&mut builders, &landed, &source_name, &position)?;
            part.write(batch).await?;
            rows = 0;
        }
        if done {
            break;
        }
    }
    Ok(part)
}

/// A value of the text protocol as text (`None` for NULL).
fn text_of(value: mysql_async::Value) -> Option<String> {
    match value {
        mysql_async::Value::NULL => None,
        mysql_async::Value::Bytes(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

/// The text columns cast to the landed types; MySQL's zero dates (`0000-00-00`) are NULL.
fn typed_batch(
    builders: &mut [StringBuilder],
    landed: &SchemaRef,
    source_name: &str,
    position: &str,
) -> Result<RecordBatch, IngestError> {
    let columns = builders
        .iter_mut()
        .zip(landed.fields())
        .map(|(builder, field)| {
            let text = builder.finish();
            let text = if matches!(
                field.data_type(),
                DataType::Date32 | DataType::Timestamp(_, _)
            ) {
                without_zero_dates(&text)
            } else {
                text
            };
            cast(&text, field.data_type()).map_err(|err| {
                read_error(
                    source_name,
                    position,
                    format!("column {}: {err}", field.name()),
                )
            })
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    RecordBatch::try_new(Arc::clone(landed), columns)
        .map_err(|err| read_error(source_name, position, err))
}

fn without_zero_dates(text: &StringArray) -> StringArray {
    text.iter()
        .map(|value| value.filter(|value| !value.starts_with("0000-00-00")))
        .collect()
}

#[async_trait::async_trait]
impl SqlSource for Mysql {
    type Columns = Vec<MysqlColumn>;

    fn quote_ident(&self, name: &str) -> String {
        quote_ident(name)
    }

    fn quote_literal(&self, value: &str) -> String {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    }

    fn as_text(&self, expr: &str) -> String {
        format!("CAST({expr} AS CHAR)")
    }

    async fn open(&mut self, count: usize) -> Result<(), IngestError> {
        if self.pool.is_some() {
            return Ok(());
        }
        let options = self.pool_options(count)?;
        self.pool = Some(mysql_async::Pool::new(options.first.clone()));
        // Fail here, clearly, when the server cannot be reached; PREFERRED falls back to a
        // connection in clear when the server offers no TLS.
        match self.pool().get_conn().await {
            Ok(conn) => drop(conn),
            Err(err) if offers_no_tls(&err) => {
                if !options.may_fall_back {
                    return Err(self.connect_error(
                        "the server offers no TLS, which the URL requires (ssl-mode); enable \
                         TLS on the server or set ssl-mode=PREFERRED",
                    ));
                }
                tracing::info!(
                    source = %self.source_name,
                    "the server offers no TLS: connecting in clear (ssl-mode=PREFERRED)"
                );
                self.pool = Some(mysql_async::Pool::new(options.clear));
                drop(self.conn().await?);
            }
            Err(_) => drop(self.conn().await?),
        }
        Ok(())
    }

    async fn first_row(&self, sql: &str) -> Result<Vec<Option<String>>, IngestError> {
        let mut conn = self.conn().await?;
        let row: Option<mysql_async::Row> = conn
            .query_first(sql)
            .await
            .map_err(|err| read_error(&self.source_name, sql, err))?;
        Ok(row.map_or_else(Vec::new, |row| {
            row.unwrap().into_iter().map(text_of).collect()
        }))
    }

    async fn columns(&self, relation: &str) -> Result<Arc<Vec<MysqlColumn>>, IngestError> {
        let mut conn = self.conn().await?;
        let sql = format!("SELECT * FROM {relation} LIMIT 0");
        let result = conn
            .query_iter(sql.as_str())
            .await
            .map_err(|err| read_error(&self.source_name, relation, err))?;
        let columns = result
            .columns()
            .map(|columns| columns.iter().map(plan_column).collect())
            .unwrap_or_default();
        result
            .drop_result()
            .await
            .map_err(|err| read_error(&self.source_name, relation, err))?;
        Ok(Arc::new(columns))
    }

    fn read_part(
        &self,
        _index: usize,
        columns: Arc<Vec<MysqlColumn>>,
        relation: String,
        filter: String,
        part: ChunkWriter,
    ) -> BoxFuture<'static, Result<ChunkWriter, IngestError>> {
        let pool = self.pool().clone();
        let source_name = self.source_name.clone();
        async move {
            let conn = pool
                .get_conn()
                .await
                .map_err(|err| read_error(&source_name, &filter, err))?;
            read_rows(conn, columns, relation, filter, part, source_name).await
        }
        .boxed()
    }
}
