//! Where tables live: `<warehouse>/<schema>/<table>/` for Delta tables and
//! `<warehouse>/_strata/` for Strata's own records.

use std::path::Path;

use strata_core::jinja::Relation;

/// A warehouse root: `file:///abs/path`, `s3://bucket/prefix` or `memory://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warehouse {
    root: String,
}

/// Why a warehouse location was rejected.
#[derive(Debug, thiserror::Error)]
#[error("invalid warehouse '{location}': {reason}")]
pub struct WarehouseError {
    /// The location as given.
    pub location: String,
    /// Why it is invalid.
    pub reason: String,
}

impl Warehouse {
    /// Parses a warehouse location: a URL, or a local path (relative to `base`).
    ///
    /// # Errors
    /// Returns an error for an unsupported scheme or an unusable path.
    pub fn parse(location: &str, base: &Path) -> Result<Warehouse, WarehouseError> {
        let invalid = |reason: &str| WarehouseError {
            location: location.to_string(),
            reason: reason.to_string(),
        };
        if let Some((scheme, _)) = location.split_once("://") {
            return match scheme {
                "file" | "s3" | "memory" => Ok(Warehouse {
                    root: location.trim_end_matches('/').to_string(),
                }),
                _ => Err(invalid("use a local path, file://, s3:// or memory://")),
            };
        }
        let path = if Path::new(location).is_absolute() {
            Path::new(location).to_path_buf()
        } else {
            base.join(location)
        };
        std::fs::create_dir_all(&path)
            .map_err(|err| invalid(&format!("cannot create it: {err}")))?;
        let path = path
            .canonicalize()
            .map_err(|err| invalid(&err.to_string()))?;
        let url =
            url::Url::from_directory_path(&path).map_err(|()| invalid("not an absolute path"))?;
        Ok(Warehouse {
            root: url.as_str().trim_end_matches('/').to_string(),
        })
    }

    /// The warehouse root URL, without a trailing slash.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The location of a relation's Delta table.
    pub fn table_uri(&self, relation: &Relation) -> String {
        format!("{}/{}/{}", self.root, relation.schema, relation.identifier)
    }

    /// The location of Strata's records of a run.
    pub fn run_uri(&self, run_id: &str) -> String {
        format!("{}/_strata/runs/{run_id}", self.root)
    }

    /// The local folder of the warehouse, when it is on the local file system.
    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        url::Url::parse(&self.root)
            .ok()
            .filter(|url| url.scheme() == "file")
            .and_then(|url| url.to_file_path().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_file_urls() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::parse("warehouse", dir.path()).unwrap();
        assert!(
            warehouse.root().starts_with("file:///"),
            "{}",
            warehouse.root()
        );
        assert!(
            warehouse
                .table_uri(&Relation::new("gold", "daily"))
                .ends_with("/warehouse/gold/daily")
        );
        assert!(Warehouse::parse("ftp://x", dir.path()).is_err());
        assert_eq!(
            Warehouse::parse("s3://bucket/prefix/", dir.path())
                .unwrap()
                .root(),
            "s3://bucket/prefix"
        );
    }
}
