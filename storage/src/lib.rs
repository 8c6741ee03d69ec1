//! Object storage for Strata: where warehouses and sources live.
//!
//! Three kinds of location are supported, by URL scheme:
//! - `file://` URLs and absolute paths: the local file system;
//! - `s3://bucket/prefix` (and `s3a://`): an S3 or S3-compatible server, configured by the
//!   standard AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//!   `AWS_ENDPOINT_URL` for S3-compatible servers; plain `http://` endpoints are allowed);
//! - `memory://`: one in-memory store per process, shared by every table and session, so an
//!   embedded run can keep its whole warehouse in memory.
//!
//! [`install`] registers these stores with delta-rs (whose own S3 support is not compiled in:
//! it would bring a second AWS stack), and [`register`] with a DataFusion session. One client
//! is kept per bucket so connections are reused across tables and tasks.

pub mod delta_files;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once, OnceLock};

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::SessionContext;
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use deltalake::{DeltaResult, DeltaTableError};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

/// Why a location could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The location is not a supported URL or absolute path.
    #[error("invalid location '{location}': {reason}")]
    InvalidLocation {
        /// The location as given.
        location: String,
        /// Why it is invalid and what to use instead.
        reason: String,
    },
    /// The store refused or failed an operation.
    #[error("{operation} {location} failed: {source}")]
    Store {
        /// What was attempted (list, write, …).
        operation: &'static str,
        /// The location.
        location: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// delta-rs could not read the table's log.
    #[error("reading the Delta table {location} failed: {source}")]
    Delta {
        /// The table.
        location: String,
        /// delta-rs' error (boxed: it is large).
        source: Box<DeltaTableError>,
    },
    /// Reading or writing a file on the local disk failed.
    #[error("{operation} {location} failed: {source}")]
    Local {
        /// What was attempted.
        operation: &'static str,
        /// The file or the object being copied.
        location: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl StorageError {
    fn invalid(location: &str, reason: impl Into<String>) -> StorageError {
        StorageError::InvalidLocation {
            location: location.to_string(),
            reason: reason.into(),
        }
    }
}

/// Makes S3 and the shared in-memory store available to delta-rs and installs the process's
/// TLS crypto provider. Idempotent; call it before opening tables.
pub fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // Two rustls back-ends are linked in (see Cargo.toml); without a process default,
        // building an HTTPS client would panic.
        let _ = rustls::crypto::ring::default_provider().install_default();
        for scheme in ["s3://", "s3a://", "memory://"] {
            let Ok(url) = Url::parse(scheme) else {
                continue;
            };
            object_store_factories().insert(url.clone(), Arc::new(StrataStores));
            logstore_factories().insert(url, Arc::new(StrataStores));
        }
    });
}

/// The URL of a location: a URL as is, an absolute path as a `file://` URL.
///
/// # Errors
/// Returns an error for a relative path or an unparsable URL.
pub fn location_url(location: &str) -> Result<Url, StorageError> {
    if location.contains("://") {
        Url::parse(location).map_err(|err| StorageError::invalid(location, err.to_string()))
    } else {
        Url::from_file_path(location).map_err(|()| {
            StorageError::invalid(location, "a local location must be an absolute path")
        })
    }
}

/// The store holding `url`, rooted at the URL's scheme and authority (the bucket for S3).
///
/// # Errors
/// Returns an error for an unsupported scheme or an S3 configuration that does not build.
pub fn store_for(url: &Url) -> Result<ObjectStoreRef, StorageError> {
    match url.scheme() {
        "file" => {
            static LOCAL: OnceLock<ObjectStoreRef> = OnceLock::new();
            Ok(LOCAL
                .get_or_init(|| Arc::new(LocalFileSystem::new()))
                .clone())
        }
        "memory" => {
            static MEMORY: OnceLock<ObjectStoreRef> = OnceLock::new();
            Ok(MEMORY.get_or_init(|| Arc::new(InMemory::new())).clone())
        }
        "s3" | "s3a" => {
            static BUCKETS: OnceLock<Mutex<HashMap<String, ObjectStoreRef>>> = OnceLock::new();
            let bucket = url.host_str().unwrap_or_default();
            if bucket.is_empty() {
                return Err(StorageError::invalid(
                    url.as_str(),
                    "an S3 location names a bucket: s3://bucket/prefix",
                ));
            }
            let mut buckets = BUCKETS
                .get_or_init(Mutex::default)
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(store) = buckets.get(bucket) {
                return Ok(store.clone());
            }
            let store: ObjectStoreRef =
                Arc::new(
                    s3_builder(url)
                        .build()
                        .map_err(|source| StorageError::Store {
                            operation: "configuring S3 for",
                            location: url.to_string(),
                            source,
                        })?,
                );
            buckets.insert(bucket.to_string(), store.clone());
            Ok(store)
        }
        other => Err(StorageError::invalid(
            url.as_str(),
            format!(
                "the scheme '{other}' is not supported; use a local path, file://, s3:// or memory://"
            ),
        )),
    }
}

/// An S3 client for the bucket of `url`, from the standard AWS environment variables.
fn s3_builder(url: &Url) -> AmazonS3Builder {
    let builder = AmazonS3Builder::from_env().with_url(url.as_str());
    let plain_http = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .is_some_and(|endpoint| endpoint.starts_with("http://"));
    let region_set = builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .is_some();
    let builder = if plain_http {
        builder.with_allow_http(true)
    } else {
        builder
    };
    match std::env::var("AWS_DEFAULT_REGION") {
        Ok(region) if !region_set => builder.with_region(region),
        _ => builder,
    }
}

/// The path of `url` inside its store.
///
/// # Errors
/// Returns an error when the URL's path is not a valid object path.
pub fn object_path(url: &Url) -> Result<Path, StorageError> {
    Path::from_url_path(url.path())
        .map_err(|err| StorageError::invalid(url.as_str(), err.to_string()))
}

/// Makes the store of `location` readable by the session (local files always are).
///
/// # Errors
/// Returns an error for an unsupported location.
pub fn register(ctx: &SessionContext, location: &str) -> Result<(), StorageError> {
    let url = location_url(location)?;
    if url.scheme() == "file" {
        return Ok(());
    }
    let store = store_for(&url)?;
    let root = Url::parse(&format!("{}://{}", url.scheme(), url.authority()))
        .map_err(|err| StorageError::invalid(location, err.to_string()))?;
    ctx.runtime_env().register_object_store(&root, store);
    Ok(())
}

/// A DataFusion listing URL for a location, with a glob (`*`, `?`, `[…]`) in its last
/// components for remote URLs as well as local paths.
///
/// # Errors
/// Returns an error for an invalid URL or glob.
pub fn listing_url(location: &str) -> Result<ListingTableUrl, StorageError> {
    let invalid = |err: &dyn std::fmt::Display| StorageError::invalid(location, err.to_string());
    if !location.contains("://") {
        return ListingTableUrl::parse(location).map_err(|err| invalid(&err));
    }
    let Some(glob_start) = location.find(['*', '?', '[']) else {
        return ListingTableUrl::parse(location).map_err(|err| invalid(&err));
    };
    let split = location[..glob_start].rfind('/').unwrap_or(0);
    let (base, pattern) = location.split_at(split + 1);
    let url = Url::parse(base).map_err(|err| invalid(&err))?;
    let pattern = glob::Pattern::new(pattern).map_err(|err| invalid(&err))?;
    ListingTableUrl::try_new(url, Some(pattern)).map_err(|err| invalid(&err))
}

/// The data files of a source location — a file, a folder, or a glob — in name order, as
/// locations of the same kind (absolute paths for local ones). Hidden names (`.`, `_`) are
/// skipped, as Spark and DuckDB do.
///
/// # Errors
/// Returns an error when the location is invalid or cannot be listed.
pub async fn list_files(location: &str) -> Result<Vec<String>, StorageError> {
    Ok(list_objects(location)
        .await?
        .into_iter()
        .map(|file| file.location)
        .collect())
}

/// A file found by [`list_objects`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    /// Its location, of the same kind as the listed one.
    pub location: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its last modification, in milliseconds since 1970.
    pub modified_ms: i64,
    /// The store's entity tag, when it has one.
    pub e_tag: Option<String>,
}

/// The data files of a source location with their size, modification time and entity tag,
/// in name order (see [`list_files`]).
///
/// # Errors
/// Returns an error when the location is invalid or cannot be listed.
pub async fn list_objects(location: &str) -> Result<Vec<ListedFile>, StorageError> {
    let listing = listing_url(location)?;
    let url = location_url(location)?;
    let store = store_for(&url)?;
    let listing_error = |source| StorageError::Store {
        operation: "listing",
        location: location.to_string(),
        source,
    };
    let listed: Vec<object_store::ObjectMeta> = store
        .list(Some(listing.prefix()))
        .try_collect()
        .await
        .map_err(listing_error)?;
    let root = format!("{}://{}", url.scheme(), url.authority());
    let listed_file = |meta: object_store::ObjectMeta, location: String| ListedFile {
        location,
        size: meta.size,
        modified_ms: meta.last_modified.timestamp_millis(),
        e_tag: meta.e_tag,
    };
    let mut files: Vec<ListedFile> = listed
        .into_iter()
        .filter(|meta| listing.contains(&meta.location, true))
        .filter(|meta| {
            meta.location
                .filename()
                .is_some_and(|name| !name.starts_with('.') && !name.starts_with('_'))
        })
        .map(|meta| {
            let location = match url.scheme() {
                "file" => format!("/{}", meta.location),
                _ => format!("{root}/{}", meta.location),
            };
            listed_file(meta, location)
        })
        .collect();
    files.sort_by(|a, b| a.location.cmp(&b.location));
    // A location naming one object lists nothing under it as a prefix.
    if files.is_empty()
        && !location.contains(['*', '?', '['])
        && let Ok(meta) = store.head(listing.prefix()).await
    {
        files.push(listed_file(meta, location.to_string()));
    }
    Ok(files)
}

/// True when a Delta table exists at `table_uri` (its `_delta_log/` holds an entry).
///
/// # Errors
/// Returns an error when the location is invalid or cannot be listed.
pub async fn delta_table_exists(table_uri: &str) -> Result<bool, StorageError> {
    let url = location_url(table_uri)?;
    let log = object_path(&url)?.join("_delta_log");
    let store = store_for(&url)?;
    let first = store
        .list(Some(&log))
        .try_next()
        .await
        .map_err(|source| StorageError::Store {
            operation: "listing",
            location: format!("{table_uri}/_delta_log"),
            source,
        })?;
    Ok(first.is_some())
}

/// Opens the Delta table at `table_uri` at its latest version, or `None` when there is none
/// yet.
///
/// # Errors
/// Returns an error for an invalid location, a storage failure or an unreadable log.
pub async fn open_delta_table(
    table_uri: &str,
) -> Result<Option<deltalake::DeltaTable>, StorageError> {
    install();
    let url = location_url(table_uri)?;
    if !delta_table_exists(table_uri).await? {
        return Ok(None);
    }
    let delta_error = |source| StorageError::Delta {
        location: table_uri.to_string(),
        source: Box::new(source),
    };
    match deltalake::DeltaTableBuilder::from_url(url)
        .map_err(delta_error)?
        .load()
        .await
    {
        Ok(table) => Ok(Some(table)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(source) => Err(delta_error(source)),
    }
}

/// Writes `bytes` to `location`, replacing what is there.
///
/// # Errors
/// Returns an error when the location is invalid or the write fails.
pub async fn write(location: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
    let url = location_url(location)?;
    let store = store_for(&url)?;
    store
        .put(&object_path(&url)?, PutPayload::from(bytes))
        .await
        .map(|_| ())
        .map_err(|source| StorageError::Store {
            operation: "writing",
            location: location.to_string(),
            source,
        })
}

/// Reads the object at `location`.
///
/// # Errors
/// Returns an error when the location is invalid or the read fails.
pub async fn read(location: &str) -> Result<Vec<u8>, StorageError> {
    let url = location_url(location)?;
    let store = store_for(&url)?;
    let fail = |source| StorageError::Store {
        operation: "reading",
        location: location.to_string(),
        source,
    };
    let bytes = store
        .get(&object_path(&url)?)
        .await
        .map_err(fail)?
        .bytes()
        .await
        .map_err(fail)?;
    Ok(bytes.to_vec())
}

/// The object at `location` as a local file open for reading from its start: the file itself
/// when the location is on the local disk, otherwise a temporary copy streamed from the store
/// (removed when the file is closed). Reading it never holds the whole object in memory.
///
/// # Errors
/// Returns an error when the location is invalid, the object cannot be read, or the copy
/// cannot be written.
pub async fn open_local(location: &str) -> Result<std::fs::File, StorageError> {
    use std::io::{Seek, Write};
    let url = location_url(location)?;
    let local = |operation, source| StorageError::Local {
        operation,
        location: location.to_string(),
        source,
    };
    if url.scheme() == "file" {
        let path = url
            .to_file_path()
            .map_err(|()| StorageError::invalid(location, "not a local file path"))?;
        return std::fs::File::open(path).map_err(|err| local("opening", err));
    }
    let store = store_for(&url)?;
    let fail = |source| StorageError::Store {
        operation: "reading",
        location: location.to_string(),
        source,
    };
    let mut stream = store
        .get(&object_path(&url)?)
        .await
        .map_err(fail)?
        .into_stream();
    let mut file = tempfile::tempfile().map_err(|err| local("creating a local copy of", err))?;
    while let Some(bytes) = stream.next().await {
        file.write_all(&bytes.map_err(fail)?)
            .map_err(|err| local("copying", err))?;
    }
    file.rewind().map_err(|err| local("copying", err))?;
    Ok(file)
}

/// Deletes the object at `location`; a missing object is not an error.
///
/// # Errors
/// Returns an error when the location is invalid or the delete fails.
pub async fn delete(location: &str) -> Result<(), StorageError> {
    let url = location_url(location)?;
    let store = store_for(&url)?;
    match store.delete(&object_path(&url)?).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(StorageError::Store {
            operation: "deleting",
            location: location.to_string(),
            source,
        }),
    }
}

/// delta-rs factories handing out Strata's stores, so that every table API (builders,
/// writers, commits) finds the same client for a location.
struct StrataStores;

impl ObjectStoreFactory for StrataStores {
    fn parse_url_opts(
        &self,
        url: &Url,
        _config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let to_delta = |err: StorageError| DeltaTableError::Generic(err.to_string());
        Ok((
            store_for(url).map_err(to_delta)?,
            object_path(url).map_err(to_delta)?,
        ))
    }
}

impl LogStoreFactory for StrataStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lists_local_files_by_glob_and_folder() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.parquet",
            "a.parquet",
            "_SUCCESS",
            ".hidden.parquet",
            "c.csv",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let root = dir.path().canonicalize().unwrap();
        let glob = format!("{}/*.parquet", root.display());
        let files = list_files(&glob).await.unwrap();
        let names: Vec<&str> = files
            .iter()
            .map(|file| file.rsplit('/').next().unwrap())
            .collect();
        assert_eq!(names, ["a.parquet", "b.parquet"]);
        assert!(files[0].starts_with('/'), "{files:?}");
        let all = list_files(&root.display().to_string()).await.unwrap();
        assert_eq!(all.len(), 3, "{all:?}");
        let one = format!("{}/c.csv", root.display());
        assert_eq!(list_files(&one).await.unwrap(), vec![one]);
        let missing = format!("{}/none.csv", root.display());
        assert!(list_files(&missing).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn memory_store_is_shared_and_lists_by_glob() {
        write("memory:///lake/events/part-1.parquet", b"1".to_vec())
            .await
            .unwrap();
        write("memory:///lake/events/part-2.parquet", b"2".to_vec())
            .await
            .unwrap();
        write("memory:///lake/events/notes.txt", b"3".to_vec())
            .await
            .unwrap();
        let files = list_files("memory:///lake/events/*.parquet").await.unwrap();
        assert_eq!(
            files,
            [
                "memory:///lake/events/part-1.parquet",
                "memory:///lake/events/part-2.parquet"
            ]
        );
        assert_eq!(
            read("memory:///lake/events/part-2.parquet").await.unwrap(),
            b"2"
        );
        delete("memory:///lake/events/part-2.parquet")
            .await
            .unwrap();
        delete("memory:///lake/events/part-2.parquet")
            .await
            .unwrap();
        assert!(!delta_table_exists("memory:///lake/events").await.unwrap());
        write(
            "memory:///lake/t/_delta_log/00000000000000000000.json",
            b"{}".to_vec(),
        )
        .await
        .unwrap();
        assert!(delta_table_exists("memory:///lake/t").await.unwrap());
    }

    #[test]
    fn rejects_unknown_schemes_and_relative_paths() {
        let err = store_for(&Url::parse("ftp://host/x").unwrap()).unwrap_err();
        assert!(err.to_string().contains("s3://"), "{err}");
        assert!(location_url("relative/path").is_err());
        assert!(store_for(&Url::parse("s3:///no-bucket").unwrap()).is_err());
    }

    #[test]
    fn remote_globs_split_at_the_last_plain_folder() {
        let url = listing_url("s3://bucket/raw/events/*.parquet").unwrap();
        assert_eq!(url.prefix().as_ref(), "raw/events");
        assert!(url.contains(&Path::from("raw/events/a.parquet"), true));
        assert!(!url.contains(&Path::from("raw/events/a.csv"), true));
    }
}
