//! What a source table's `ingest:` block says, typed: the connector and what it reads, and
//! the policies every connector shares (schema drift, bad records, metadata columns).

use serde::Deserialize;
use strata_core::manifest::IngestDeclaration;

use crate::IngestError;
use crate::secrets::SecretRef;

/// A table's ingest block, typed.
#[derive(Debug, Clone)]
pub struct IngestSpec {
    /// The connector and its options.
    pub connector: ConnectorSpec,
    /// The policies every connector shares.
    pub policies: Policies,
}

/// The keys of an ingest block that every connector shares.
const POLICY_KEYS: [&str; 5] = [
    "schema_drift",
    "on_bad_record",
    "metadata_columns",
    "source_system",
    "retries",
];

/// The policies every connector shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// What happens when the source's columns change.
    #[serde(default)]
    pub schema_drift: DriftPolicy,
    /// What happens to a record or file that cannot be read.
    #[serde(default)]
    pub on_bad_record: BadRecordPolicy,
    /// The names of the metadata columns added to every landed row.
    #[serde(default)]
    pub metadata_columns: MetadataColumns,
    /// The value of the source-system column (default: `<connector>:<source>`).
    #[serde(default)]
    pub source_system: Option<String>,
    /// Connection attempts and transient read failures retried before the source fails.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_retries() -> u32 {
    3
}

/// The connector, by its `connector:` key.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "connector", rename_all = "lowercase")]
pub enum ConnectorSpec {
    /// A PostgreSQL table or query.
    Postgres(DatabaseSpec),
    /// A MySQL or MariaDB table or query (`connector: mariadb` is the same).
    #[serde(alias = "mariadb")]
    Mysql(DatabaseSpec),
    /// An HTTP JSON API.
    Http(HttpSpec),
    /// Files on the local disk or in object storage.
    Files(FilesSpec),
}

impl ConnectorSpec {
    /// The connector's name, as written.
    pub fn name(&self) -> &'static str {
        match self {
            ConnectorSpec::Postgres(_) => "postgres",
            ConnectorSpec::Mysql(_) => "mysql",
            ConnectorSpec::Http(_) => "http",
            ConnectorSpec::Files(_) => "files",
        }
    }
}

/// A table or query of a database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSpec {
    /// The connection URL (`postgres://user@host:5432/db`, `mysql://user@host:3306/db`): a
    /// reference to a secret, or a literal without a password.
    pub connection: SecretRef,
    /// The table to read (`schema.table`); or `query`.
    #[serde(default)]
    pub table: Option<String>,
    /// A query to read instead of a table.
    #[serde(default)]
    pub query: Option<String>,
    /// The column whose growing values mark new or changed rows (`updated_at`, an id):
    /// each run lands only rows past the last landed value. Without one, every run lands
    /// the whole table as one batch.
    #[serde(default)]
    pub cursor: Option<String>,
    /// An integer column splitting each chunk into key ranges read in parallel.
    #[serde(default)]
    pub split_by: Option<String>,
    /// Key ranges read at the same time (connections to the database).
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// Rows per commit of an incremental load (each chunk is one Delta commit with its
    /// cursor; a killed agent redoes at most one chunk).
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: u64,
}

fn default_parallelism() -> usize {
    4
}

fn default_chunk_rows() -> u64 {
    1_000_000
}

/// An HTTP JSON API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// The first page's URL.
    pub url: String,
    /// Where the records are in each response: a dotted path (`data.items`); empty when
    /// the response is the list itself.
    #[serde(default)]
    pub records: String,
    /// How the next page is found.
    #[serde(default)]
    pub pagination: Pagination,
    /// A bearer token sent as `Authorization: Bearer …`.
    #[serde(default)]
    pub bearer_token: Option<SecretRef>,
    /// Headers sent with every request; values may be secret references.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, SecretRef>,
    /// Requests per second at most (0: no limit).
    #[serde(default)]
    pub requests_per_second: f64,
    /// Seconds a request may take.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Nested objects and lists: kept as `struct`s and lists, or as `json` text.
    #[serde(default)]
    pub nested: NestedPolicy,
    /// Pages per commit (each is one Delta commit with the position of the next page).
    #[serde(default = "default_pages_per_commit")]
    pub pages_per_commit: usize,
}

fn default_timeout_secs() -> u64 {
    30
}

fn default_pages_per_commit() -> usize {
    10
}

/// How an API pages.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One request.
    #[default]
    None,
    /// The response names the next page's cursor at `cursor_path`; it goes in `param`.
    Cursor {
        /// Dotted path of the next cursor in the response (absent or null: last page).
        cursor_path: String,
        /// The query parameter carrying it.
        param: String,
    },
    /// `param` counts records (`offset=0,100,…`), `limit_param` asks for `limit` of them.
    Offset {
        /// The offset parameter.
        #[serde(default = "default_offset_param")]
        param: String,
        /// The page size parameter.
        #[serde(default = "default_limit_param")]
        limit_param: String,
        /// Records per page.
        #[serde(default = "default_page_size")]
        limit: u64,
    },
    /// `param` counts pages from `start`.
    Page {
        /// The page parameter.
        #[serde(default = "default_page_param")]
        param: String,
        /// The first page's number.
        #[serde(default = "default_first_page")]
        start: u64,
    },
    /// The `Link: <…>; rel="next"` response header (RFC 8288).
    Link,
}

fn default_offset_param() -> String {
    "offset".into()
}

fn default_limit_param() -> String {
    "limit".into()
}

fn default_page_size() -> u64 {
    100
}

fn default_page_param() -> String {
    "page".into()
}

fn default_first_page() -> u64 {
    1
}

/// How nested JSON values land.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NestedPolicy {
    /// Objects become structs, arrays lists (inferred from the first page).
    #[default]
    Struct,
    /// Objects and arrays become JSON text columns.
    Json,
}

/// Files on the local disk or in object storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSpec {
    /// A glob: a path relative to the project, an absolute path, or `s3://bucket/prefix/*.csv`.
    pub path: String,
    /// `csv`, `json` (newline-delimited) or `parquet`; by default from the file names.
    #[serde(default)]
    pub format: Option<FileFormat>,
    /// Files per commit.
    #[serde(default = "default_files_per_commit")]
    pub files_per_commit: usize,
    /// The CSV delimiter.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
}

fn default_files_per_commit() -> usize {
    50
}

fn default_delimiter() -> char {
    ','
}

/// A file format the files connector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Comma-separated values with a header; every column lands as text.
    Csv,
    /// Newline-delimited JSON (`ndjson` is the same).
    #[serde(alias = "ndjson", alias = "jsonl")]
    Json,
    /// Apache Parquet.
    Parquet,
}

/// What happens when the source's columns change between loads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftPolicy {
    /// New columns are added to the bronze table; older rows read them as NULL.
    #[default]
    AppendNewColumns,
    /// Any new or missing column fails the load, naming the columns.
    Fail,
    /// New columns are dropped; the bronze table keeps its columns.
    Ignore,
}

/// What happens to a record or file that cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRecordPolicy {
    /// It goes to the quarantine table `<table>__quarantine` with the reason and where it
    /// was; the rest lands.
    #[default]
    Quarantine,
    /// The load fails, naming the record.
    Fail,
}

/// The names of the metadata columns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataColumns {
    /// The batch: the number of the commit that landed the row (1, 2, …).
    pub batch_id: String,
    /// When the row was landed (UTC).
    pub ingested_at: String,
    /// Where the row came from.
    pub source_system: String,
}

impl Default for MetadataColumns {
    fn default() -> Self {
        MetadataColumns {
            batch_id: "_batch_id".into(),
            ingested_at: "_ingested_at".into(),
            source_system: "_source_system".into(),
        }
    }
}

impl IngestSpec {
    /// Types a table's block, with an error naming where it is written.
    ///
    /// # Errors
    /// [`IngestError::Spec`] for an unknown connector or key, a missing or mistyped value,
    /// or a literal password.
    pub fn parse(declaration: &IngestDeclaration) -> Result<IngestSpec, IngestError> {
        let invalid = |reason: String| IngestError::Spec {
            origin: declaration.origin.clone(),
            reason,
        };
        let (policies, connector): (serde_json::Map<_, _>, serde_json::Map<_, _>) = declaration
            .spec
            .clone()
            .into_iter()
            .partition(|(key, _)| POLICY_KEYS.contains(&key.as_str()));
        let policies: Policies = serde_json::from_value(serde_json::Value::Object(policies))
            .map_err(|err| invalid(err.to_string()))?;
        let connector: ConnectorSpec = serde_json::from_value(serde_json::Value::Object(connector))
            .map_err(|err| invalid(err.to_string()))?;
        let spec = IngestSpec {
            connector,
            policies,
        };
        spec.check().map_err(invalid)?;
        Ok(spec)
    }

    fn check(&self) -> Result<(), String> {
        match &self.connector {
            ConnectorSpec::Postgres(database) | ConnectorSpec::Mysql(database) => {
                database
                    .connection
                    .check_no_literal_password("connection")?;
                if database.table.is_some() == database.query.is_some() {
                    return Err("give exactly one of `table` and `query`".into());
                }
                if database.parallelism == 0 || database.chunk_rows == 0 {
                    return Err("`parallelism` and `chunk_rows` must be at least 1".into());
                }
            }
            ConnectorSpec::Http(http) => {
                if let Some(token) = &http.bearer_token {
                    token.check_not_literal("bearer_token")?;
                }
                if matches!(http.pagination, Pagination::Offset { limit: 0, .. }) {
                    return Err("offset pagination needs `limit` of at least 1".into());
                }
                if http.pages_per_commit == 0 {
                    return Err("`pages_per_commit` must be at least 1".into());
                }
            }
            ConnectorSpec::Files(files) => {
                if files.files_per_commit == 0 {
                    return Err("`files_per_commit` must be at least 1".into());
                }
                if !files.delimiter.is_ascii() {
                    return Err("`delimiter` must be one ASCII character".into());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: serde_json::Value) -> Result<IngestSpec, IngestError> {
        IngestSpec::parse(&IngestDeclaration {
            spec: yaml.as_object().unwrap().clone(),
            origin: "models/sources.yml:7".into(),
        })
    }

    #[test]
    fn a_postgres_block_with_defaults() {
        let spec = parse(serde_json::json!({
            "connector": "postgres",
            "connection": {"env": "CRM_URL"},
            "table": "public.customers",
            "cursor": "updated_at",
        }))
        .unwrap();
        let ConnectorSpec::Postgres(database) = &spec.connector else {
            panic!("{spec:?}")
        };
        assert_eq!(database.parallelism, 4);
        assert_eq!(spec.policies.schema_drift, DriftPolicy::AppendNewColumns);
        assert_eq!(spec.policies.metadata_columns.batch_id, "_batch_id");
    }

    #[test]
    fn mistakes_name_the_file_and_line() {
        let err = parse(serde_json::json!({"connector": "oracle"})).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("models/sources.yml:7"), "{text}");
        assert!(text.contains("oracle"), "{text}");
        let err = parse(serde_json::json!({
            "connector": "postgres",
            "connection": "postgres://app:hunter2@db/crm",
            "table": "t",
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("password"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse(serde_json::json!({
            "connector": "http", "url": "http://x", "bearer_token": "abc",
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("bearer_token"), "{err}");
        let err = parse(serde_json::json!({
            "connector": "files", "path": "x/*.csv", "typo": 1,
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("typo"), "{err}");
    }
}
